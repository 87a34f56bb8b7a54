"""The config convention every stage follows (TRL's): a typed dataclass per stage whose fields
carry their help text, validated in ``__post_init__``.

    @dataclass
    class SimulateConfig:
        max_turns: int = setting(9, "Questions per dialogue at most.")

        def __post_init__(self) -> None:
            require(self.max_turns >= 1, "--max-turns must be at least 1")

The CLI reads defaults and help from the dataclass (``irtk.cli.options.option``), so each default
is written once. Config modules stay light (no torch at import), so ``--help`` stays fast. The
trainers' configs subclass TRL's ``GRPOConfig`` and add fields the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from irtk.errors import UsageError


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
            **metadata: Any) -> Any:
    """A dataclass field with its help text (TRL's ``metadata={"help": ...}``)."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def config_field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def help_of(cls: type, name: str) -> str:
    """The help text of a config field."""
    return config_field(cls, name).metadata.get("help", "")


def default_of(cls: type, name: str) -> Any:
    """The default of a config field (its factory called, when it has one)."""
    f = config_field(cls, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def require(condition: bool, message: str) -> None:
    """Validation in ``__post_init__``: a usage error (exit 2) with ``message`` when false."""
    if not condition:
        raise UsageError(message)
