"""Output that survives a killed run: ``-o PATH`` plus a checkpoint of finished records.

While a run writes ``PATH`` (atomically, through a temp file), every finished batch is also
appended to a hidden sidecar, ``.PATH.partial.jsonl``, and flushed. A run that completes
replaces ``PATH`` and deletes the sidecar. A run that is killed leaves the sidecar; ``--resume``
then carries forward every record of the existing ``PATH`` and of the sidecar (a line cut off by
the kill is dropped), skips their ids in the input and rewrites ``PATH`` atomically with old and
new records — so each record ends up in the output exactly once, for JSONL and Parquet alike.
A run that fails on bad input leaves neither a new ``PATH`` nor new sidecar lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from irtk.errors import InputError, UsageError
from irtk.io import RecordReader, RecordWriter, dumps


def sidecar_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial.jsonl")


def _read_sidecar(path: Path) -> list[dict]:
    rows = []
    lines = path.read_bytes().split(b"\n")
    for line_no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:
            if line_no == len(lines):  # the line a kill cut short: that record is redone
                break
            raise InputError("corrupt checkpoint line (delete the file to start over)",
                             source=str(path), row=line_no, unit="line") from None
        rows.append(row)
    return rows


def _remove_stale_temps(output: Path) -> None:
    """Temp files of killed writers (``.NAME.PID.tmp`` whose PID is gone)."""
    for tmp in output.parent.glob(f".{output.name}.*.tmp"):
        pid = tmp.name[len(output.name) + 2:-len(".tmp")]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # someone else's live process


class ResumableOutput:
    """A ``RecordWriter`` with a checkpoint sidecar; use as a context manager.

    ``prior_rows`` and ``done_ids`` (filled on enter when resuming) are what an earlier run
    already finished.
    """

    def __init__(self, output: Path | str | None, *, fmt: str | None = None, resume: bool = False,
                 key: str = "id", **writer_options: Any) -> None:
        self.output = None if output in (None, "-") else Path(output)
        if resume and self.output is None:
            raise UsageError("--resume needs -o PATH (there is no earlier output on stdout to resume)")
        self.fmt = fmt
        self.resume = resume
        self.key = key
        self.writer_options = writer_options
        self.prior_rows: list[dict] = []
        self.done_ids: set[str] = set()
        self.sidecar = sidecar_path(self.output) if self.output is not None else None
        self.writer: RecordWriter | None = None
        self._side: Any = None
        self._side_start = 0

    def __enter__(self) -> ResumableOutput:
        if self.resume:
            self._load_prior()
        self.writer = RecordWriter(self.output, fmt=self.fmt, **self.writer_options)
        if self.sidecar is not None:
            carried = [r for r in self.prior_rows if r.get("_from_sidecar")]
            for r in self.prior_rows:
                r.pop("_from_sidecar", None)
            with open(self.sidecar, "wb") as fh:  # rewritten whole: drops a line cut by a kill
                fh.write("".join(dumps(r) + "\n" for r in carried).encode("utf-8"))
            self._side = open(self.sidecar, "ab")  # noqa: SIM115 - closed in __exit__
            self._side_start = self._side.tell()
        if self.prior_rows:
            self.writer.write_rows(self.prior_rows)
        return self

    def _load_prior(self) -> None:
        assert self.output is not None and self.sidecar is not None
        _remove_stale_temps(self.output)
        rows: list[dict] = []
        if self.output.exists() and self.output.stat().st_size > 0:
            rows.extend(RecordReader(self.output, allow_empty=True).rows())
        if self.sidecar.exists():
            rows.extend({**r, "_from_sidecar": True} for r in _read_sidecar(self.sidecar))
        for r in rows:
            key = str(r.get(self.key))
            if key not in self.done_ids:
                self.done_ids.add(key)
                self.prior_rows.append(r)

    def write_rows(self, rows: list[dict]) -> None:
        assert self.writer is not None
        self.writer.write_rows(rows)
        if self._side is not None:
            self._side.write("".join(dumps(r) + "\n" for r in rows).encode("utf-8"))
            self._side.flush()  # in the OS now: survives the process being killed

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        assert self.writer is not None
        if exc_type is None:
            self.writer.close()
            if self._side is not None:
                self._side.close()
                self.sidecar.unlink(missing_ok=True)
            return
        self.writer.abort()
        if self._side is None:
            return
        if issubclass(exc_type, KeyboardInterrupt):
            self._side.close()  # an interrupted run keeps its checkpoint for --resume
            return
        # A failure (bad input, a backend error): this run's records leave no trace.
        self._side.truncate(self._side_start)
        self._side.close()
        if self._side_start == 0:
            self.sidecar.unlink(missing_ok=True)
