"""Error classes with exit codes.

Every failure a user can cause or meet is one of these; the CLI prints ``str(err)`` as one line on
stderr and exits with ``err.exit_code``. Library callers catch them like any exception.
"""

from __future__ import annotations


class IrtkError(Exception):
    """Base class: a failure that is reported as one line and exits non-zero."""

    exit_code = 1


class InputError(IrtkError):
    """Bad input data: names the source, the row/line and the field where known."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        row: int | None = None,
        field: str | None = None,
        unit: str = "row",
    ) -> None:
        self.message = message
        self.source = source
        self.row = row
        self.field = field
        self.unit = unit
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.source is not None:
            where.append(self.source)
        if self.row is not None:
            where.append(f"{self.unit} {self.row}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (": ".join(where) + ": " if where else "") + self.message

    def located(self, *, source: str | None = None, row: int | None = None,
                field: str | None = None, unit: str | None = None) -> InputError:
        """A copy with source, row and field filled in where they were unknown: a low-level
        check (a row's schema, an image decoder) raises without knowing where it is, and the
        reader that does know re-raises ``e.located(...)``."""
        return InputError(
            self.message,
            source=self.source if self.source is not None else source,
            row=self.row if self.row is not None else row,
            field=self.field if self.field is not None else field,
            unit=unit or self.unit,
        )


class UsageError(IrtkError):
    """Wrong options or option values (exit 2, like click's own usage errors)."""

    exit_code = 2


class ConfigError(UsageError):
    """A --config file that cannot be read or names unknown options."""


class BackendError(IrtkError):
    """A generation/embedding backend failed: unreachable server, missing library, bad model."""


class ModelError(IrtkError):
    """A model name that does not resolve, or a model folder that cannot be loaded."""
