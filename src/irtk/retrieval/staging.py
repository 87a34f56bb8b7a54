"""Folders written whole or not at all (index folders, checkpoints)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from irtk.errors import UsageError


class StagedFolder:
    """A temporary folder next to ``target``, renamed onto it on success and removed on failure.

    The target is checked when the object is made (before any work): it must be a folder or
    absent, empty unless ``force``, and its parent must exist. ``with StagedFolder(...) as tmp:``
    yields the temporary folder to fill."""

    def __init__(self, target: Path, force: bool) -> None:
        self.target = Path(target)
        if self.target.exists() and not self.target.is_dir():
            raise UsageError(f"{self.target}: exists and is not a folder")
        if self.target.exists() and any(self.target.iterdir()) and not force:
            raise UsageError(f"{self.target}: folder exists and is not empty (use --force to replace it)")
        if not self.target.parent.exists():
            raise UsageError(f"{self.target}: folder {self.target.parent} does not exist")
        self.path = self.target.parent / f".{self.target.name}.tmp-{os.getpid()}"

    def __enter__(self) -> Path:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()
        return self.path

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
            os.replace(self.target, old)
        os.replace(self.path, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
