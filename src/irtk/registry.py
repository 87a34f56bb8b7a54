"""One registry for everything chosen by name: backends, encoders, policies, simulated users,
summary agents, reward functions, entropy-control methods.

A registry maps short names to ``"module:attr"`` strings, so nothing heavy is imported until a
name is used (``irtk --help`` must not import torch). Any option that takes a registered name also
takes ``module:attr`` itself: the escape hatch for a user's own class or function, which must
accept the same keyword arguments as the built-ins of that registry. ``attr`` may be dotted
(``pkg.mod:Class.create``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from irtk.errors import UsageError


def load_attr(spec: str, what: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted); a clear usage error when it cannot."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"{what} {spec!r}: expected a registered name or module:attr")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"{what} {spec!r}: cannot import {module_name}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{what} {spec!r}: {module_name} has no attribute {attr!r}") from None
    return obj


class Registry(Mapping[str, str]):
    """Names → ``module:attr`` for one kind of component, with the ``module:attr`` escape hatch.

    ``option`` is the command-line option that picks from it, so errors name what the user typed.
    """

    def __init__(self, kind: str, option: str, entries: Mapping[str, str]) -> None:
        self.kind = kind
        self.option = option
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, name: str, spec: str) -> None:
        """Add (or replace) a name; ``spec`` is ``module:attr``."""
        if ":" not in spec:
            raise UsageError(f"{self.kind} {name!r}: spec must be module:attr, got {spec!r}")
        self._entries[name] = spec

    def spec(self, name: str) -> str:
        """The ``module:attr`` a name stands for; a usage error listing the names when unknown."""
        spec = self._entries.get(name, name)
        if ":" not in spec:
            raise UsageError(f"{self.option} must be one of {', '.join(self._entries)} or "
                             f"module:attr, got {name!r}")
        return spec

    def load(self, name: str) -> Any:
        """The registered object (a class or function), imported on first use."""
        return load_attr(self.spec(name), self.option)

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Call the registered factory with ``kwargs``."""
        return self.load(name)(**kwargs)
