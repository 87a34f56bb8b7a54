"""CLI runtime: the stderr console, verbosity, progress bars and reader/writer set-up.

stdout carries data only. Everything a person reads goes to one stderr console; progress bars
appear only when stderr is a terminal (``--progress/--no-progress`` overrides).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console


@dataclass
class State:
    verbose: int = 0
    quiet: bool = False
    progress: bool | None = None  # None: only when stderr is a terminal


state = State()


def reset() -> None:
    """Back to the defaults: each CLI call starts from them (the options set them again)."""
    state.verbose, state.quiet, state.progress = 0, False, None
console = Console(stderr=True, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    """A status line for people (suppressed by -q)."""
    if not state.quiet:
        console.print(message)


def debug(message: str) -> None:
    if state.verbose:
        console.print(f"[dim]{message}[/dim]")


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def show_progress() -> bool:
    if state.quiet:
        return False
    if state.progress is not None:
        return state.progress
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator:
    """Yield ``advance(n)``; draws a rich bar on stderr when progress is on."""
    if not show_progress():
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
