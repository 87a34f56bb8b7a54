"""Reading and writing records: JSONL on pipes, Parquet in files, provenance, atomic output.

Input: a path or stdin (``-``/None); the format is sniffed (Parquet starts with ``PAR1``).
Parquet read from stdin is buffered whole, because its footer sits at the end of the file.
Output: ``-o PATH`` (written to a temp file, renamed on success) or stdout. The format is
``--format``, else the output path's extension, else — when stdout is redirected to a regular
file — that file's extension (``irtk … > x.parquet`` writes real Parquet), else JSONL.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from irtk import __version__
from irtk.errors import InputError, IrtkError, UsageError
from irtk.records import RecordType, codec_fields, decode_row, detect, encode_row

PROVENANCE_KEY = b"irtk.provenance"
FORMATS = ("jsonl", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
STDIN_NAME = "<stdin>"


# --- sharding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Slice K of N (0-based) of a record stream: rows whose index ≡ K (mod N).

    Round-robin keeps shards balanced whatever the input order, and works on a stream without
    knowing its length; shard outputs concatenate to a permutation of the whole.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            k, n = (int(p) for p in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard expects K/N (e.g. 0/4), got {text!r}") from None
        if n < 1 or not 0 <= k < n:
            raise UsageError(f"--shard {text}: need 0 <= K < N")
        return cls(k, n)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Shard | None:
        """The slice of a Slurm array task (SLURM_ARRAY_TASK_ID relative to its minimum)."""
        env = os.environ if env is None else env
        if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
            return None
        task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return cls(task, int(env["SLURM_ARRAY_TASK_COUNT"]))

    def keeps(self, i: int) -> bool:
        return i % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# --- provenance -----------------------------------------------------------------------------------


def make_provenance(stage: str, **fields: Any) -> dict:
    """Who made an output: irtk version, stage, command line, time, plus stage fields."""
    prov = {
        "irtk_version": __version__,
        "stage": stage,
        "argv": list(sys.argv),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    prov.update({k: v for k, v in fields.items() if v is not None})
    return json.loads(json.dumps(prov, default=_json_default))


# --- reading --------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(row: dict) -> str:
    """One JSONL line (no newline) for a record."""
    return json.dumps(row, ensure_ascii=False, default=_json_default)


class RecordReader:
    """Iterate the records of one input, as validated dicts in batches or as Arrow batches.

    ``record_type`` validates each row (clear error naming source, line/row and field);
    ``shard`` keeps one slice. Unknown fields are kept as they are.
    """

    BLOCK_SIZE = 1 << 22  # bytes of JSONL parsed per Arrow block on the fast path

    def __init__(
        self,
        source: str | Path | None = None,
        *,
        record_type: RecordType | None = None,
        batch_size: int = 256,
        shard: Shard | None = None,
        allow_empty: bool = False,
    ) -> None:
        self.path = None if source in (None, "-") else Path(source)
        self.name = STDIN_NAME if self.path is None else str(source)
        self.record_type = record_type
        self.batch_size = max(1, batch_size)
        self.shard = shard
        self.allow_empty = allow_empty
        self.rows_read = 0
        self._stream, self._head = self._open()
        self.format = "parquet" if self._head.startswith(b"PAR1") else "jsonl"
        self._parquet: pq.ParquetFile | None = None
        if self.format == "parquet":
            self._parquet = self._open_parquet()
        elif not self._head.strip() and not allow_empty:
            self._check_nonempty()

    # -- opening --

    def _open(self) -> tuple[BinaryIO, bytes]:
        if self.path is None:
            stream: BinaryIO = sys.stdin.buffer
        else:
            if not self.path.exists():
                raise InputError("no such file", source=self.name)
            if self.path.is_dir():
                raise InputError("is a directory, expected a JSONL or Parquet file", source=self.name)
            try:
                stream = open(self.path, "rb")  # noqa: SIM115 - closed by close()/iteration
            except OSError as e:
                raise InputError(f"cannot open: {e.strerror}", source=self.name) from None
        head = stream.read(4)
        return stream, head

    def _open_parquet(self) -> pq.ParquetFile:
        try:
            if self.path is None:  # the footer is at the end: buffer stdin whole
                data = self._head + self._stream.read()
                return pq.ParquetFile(pa.BufferReader(data))
            self._stream.close()
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise InputError(
                f"not a readable Parquet file (truncated or corrupt?): {e}", source=self.name
            ) from None

    def _check_nonempty(self) -> None:
        # The head is blank; look past leading whitespace for any content at all.
        while True:
            chunk = self._stream.read(1 << 16)
            if not chunk:
                raise InputError("empty input: no records", source=self.name)
            if chunk.strip():
                self._head += chunk
                return
            self._head += chunk

    def close(self) -> None:
        if self.path is not None and not self._stream.closed:
            self._stream.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata --

    @property
    def provenance(self) -> dict | None:
        if self._parquet is None:
            return None
        raw = (self._parquet.schema_arrow.metadata or {}).get(PROVENANCE_KEY)
        return json.loads(raw) if raw else None

    @property
    def arrow_schema(self) -> pa.Schema | None:
        return None if self._parquet is None else self._parquet.schema_arrow

    @property
    def row_count(self) -> int | None:
        """Rows in a Parquet input (from its footer), None for JSONL."""
        return None if self._parquet is None else self._parquet.metadata.num_rows

    # -- rows as dicts --

    def _jsonl_rows(self) -> Iterator[tuple[int, dict]]:
        first = self._head + self._stream.readline()
        lines = _chain_first(first, self._stream)
        for line_no, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"not valid UTF-8 (byte {e.start + 1} of the line)",
                    source=self.name, row=line_no, unit="line",
                ) from None
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                what = "truncated JSON" if e.pos >= len(text.rstrip()) else "invalid JSON"
                raise InputError(
                    f"{what}: {e.msg} at column {e.colno}", source=self.name, row=line_no, unit="line"
                ) from None
            if not isinstance(row, dict):
                raise InputError(
                    f"expected a JSON object, got {type(row).__name__}",
                    source=self.name, row=line_no, unit="line",
                )
            yield line_no, row

    def _parquet_rows(self) -> Iterator[tuple[int, dict]]:
        assert self._parquet is not None
        codecs = codec_fields(self._parquet.schema_arrow)
        row_no = 0
        try:
            for batch in self._parquet.iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    row_no += 1
                    yield row_no, decode_row(row, codecs)
        except (pa.ArrowException, OSError) as e:
            raise InputError(
                f"Parquet data unreadable after row {row_no} (truncated or corrupt?): {e}",
                source=self.name,
            ) from None

    def rows(self) -> Iterator[dict]:
        """Every kept record as a dict, validated against ``record_type``."""
        unit = "line" if self.format == "jsonl" else "row"
        raw = self._jsonl_rows() if self.format == "jsonl" else self._parquet_rows()
        index = -1
        try:
            for row_no, row in raw:
                index += 1
                if self.shard is not None and not self.shard.keeps(index):
                    continue
                if self.record_type is not None:
                    try:
                        self.record_type.validate(row)
                    except InputError as e:
                        raise e.located(source=self.name, row=row_no, unit=unit) from None
                self.rows_read += 1
                yield row
        finally:
            self.close()
        if index < 0 and not self.allow_empty:
            raise InputError("empty input: no records", source=self.name)

    def batches(self) -> Iterator[list[dict]]:
        """``rows()`` grouped into lists of ``batch_size``."""
        batch: list[dict] = []
        for row in self.rows():
            batch.append(row)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- rows as Arrow --

    def arrow_batches(self) -> Iterator[pa.RecordBatch] | None:
        """Arrow batches straight from the input, or None where rows must go through dicts.

        Parquet streams its row groups; a regular JSONL file goes through pyarrow's streaming
        JSON reader unless its records have a field whose JSON and Arrow layouts differ.
        """
        if self.shard is not None or self.record_type is not None:
            return None
        if self._parquet is not None:
            return self._parquet_arrow()
        if self.path is None or not self.path.is_file():
            return None
        first_line = self._head + self._stream.readline()
        try:
            first = json.loads(first_line)
        except (ValueError, UnicodeDecodeError):
            first = None  # let the dict path report the exact problem
        if not isinstance(first, dict) or detect(first) is not None:
            self._stream.seek(0)
            self._head = self._stream.read(4)
            return None
        self._stream.close()
        return self._jsonl_arrow()

    def _parquet_arrow(self) -> Iterator[pa.RecordBatch]:
        assert self._parquet is not None
        try:
            yield from self._parquet.iter_batches(batch_size=max(self.batch_size, 65536))
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"Parquet data unreadable (truncated or corrupt?): {e}",
                             source=self.name) from None

    def _jsonl_arrow(self) -> Iterator[pa.RecordBatch]:
        # pyarrow's streaming JSON reader holds memory in proportion to the input; parsing
        # line-aligned blocks one at a time (multi-threaded inside each) keeps it flat.
        import pyarrow.json as pj

        schema: pa.Schema | None = None
        first_line = 1
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            while True:
                block = f.read(self.BLOCK_SIZE)
                if not block:
                    break
                block += f.readline()
                options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error") \
                    if schema is not None else pj.ParseOptions()
                try:
                    table = pj.read_json(pa.BufferReader(block), parse_options=options)
                except pa.ArrowException as e:
                    raise self._locate_in_block(block, first_line, options, e) from None
                schema = schema or table.schema
                self.rows_read += table.num_rows
                first_line += block.count(b"\n")
                yield from table.to_batches()
        if self.rows_read == 0 and not self.allow_empty:
            raise InputError("empty input: no records", source=self.name)

    def _locate_in_block(self, block: bytes, first_line: int, options: Any, err: Exception) -> InputError:
        """pyarrow names no line: find the first line of the block that fails on its own."""
        import pyarrow.json as pj

        for offset, raw in enumerate(block.split(b"\n")):
            if not raw.strip():
                continue
            line_no = first_line + offset
            where = {"source": self.name, "row": line_no, "unit": "line"}
            try:
                json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return InputError("not valid UTF-8", **where)
            except json.JSONDecodeError as e:
                return InputError(f"invalid JSON: {e.msg} at column {e.colno}", **where)
            try:
                pj.read_json(pa.BufferReader(raw), parse_options=options)
            except pa.ArrowException as e:
                reason = str(e).split("\n")[0]
                return InputError(f"does not fit the columns of the lines before it: {reason}", **where)
        return InputError(f"cannot read as JSON records: {err}", source=self.name)


def _chain_first(first: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    yield first
    yield from stream


def read_rows(source: str | Path | None, record_type: RecordType | None = None, **kw: Any) -> list[dict]:
    """Every record of ``source`` as a list (small inputs, tests, notebooks)."""
    return list(RecordReader(source, record_type=record_type, **kw).rows())


# --- writing --------------------------------------------------------------------------------------


def stdout_target() -> Path | None:
    """The regular file stdout is redirected to, if any (Linux: /proc/self/fd/1)."""
    try:
        mode = os.fstat(1).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return None
    try:
        return Path(os.readlink("/proc/self/fd/1"))
    except OSError:
        return None


def _write_position(fd: int) -> int:
    """Where this process's next write to ``fd`` lands: the end of the file for ``>>`` (an
    O_APPEND descriptor's offset says nothing until it writes), else its offset."""
    import fcntl

    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
        return os.fstat(fd).st_size
    return os.lseek(fd, 0, os.SEEK_CUR)


def _same_file(fd_a: int, fd_b: int) -> bool:
    try:
        a, b = os.fstat(fd_a), os.fstat(fd_b)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def resolve_format(fmt: str | None, output: str | Path | None, *, extra: Iterable[str] = ()) -> str:
    """``--format``, else the output's extension, else stdout's target's extension, else jsonl."""
    allowed = (*FORMATS, *extra)
    if fmt:
        fmt = fmt.lower()
        if fmt not in allowed:
            raise UsageError(f"--format must be one of {', '.join(allowed)}, got {fmt!r}")
        return fmt
    for target in (Path(output) if output not in (None, "-") else None, stdout_target()):
        if target is not None:
            return _EXTENSIONS.get(target.suffix.lower(), "jsonl")
        if output not in (None, "-"):
            break
    return "jsonl"


class RecordWriter:
    """Write records to ``-o PATH`` atomically, or to stdout, as JSONL or Parquet.

    Use as a context manager: an exception inside leaves no output file (a temp file is
    removed; a redirected stdout file is truncated back to where this run started).
    Known fields get the record type's Arrow types; unknown fields are typed from the first
    rows written and kept.
    """

    def __init__(
        self,
        output: str | Path | None = None,
        *,
        fmt: str | None = None,
        record_type: RecordType | None = None,
        schema: pa.Schema | None = None,
        provenance: dict | None = None,
        row_group_size: int = 4096,
    ) -> None:
        self.output = None if output in (None, "-") else Path(output)
        self.format = resolve_format(fmt, self.output)
        self.known = schema if schema is not None else (record_type.schema if record_type else None)
        self.required = record_type.required if record_type else frozenset()
        self.provenance = provenance
        self.row_group_size = row_group_size
        self.rows_written = 0
        self._buffer: list[dict] = []
        self._schema: pa.Schema | None = None
        self._codecs: list[pa.Field] = []
        self._pq: pq.ParquetWriter | None = None
        self._closed = False
        self._stdout_start: int | None = None
        if self.format == "parquet" and self.output is None and sys.stdout.isatty():
            raise UsageError("refusing to write Parquet to a terminal: use -o FILE or redirect stdout")
        if self.output is not None:
            if self.output.is_dir():
                raise UsageError(f"{self.output}: is a directory, expected an output file path")
            if not self.output.parent.exists():
                raise UsageError(f"{self.output}: folder {self.output.parent} does not exist")
            self._tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
            self._fh: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115
        else:
            self._tmp = None
            self._fh = sys.stdout.buffer
            if stdout_target() is not None:
                self._stdout_start = _write_position(1)

    # -- context --

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- writing --

    def write_rows(self, rows: Iterable[dict]) -> None:
        """Write records given as dicts (JSON layout)."""
        rows = list(rows)
        if self.known is None and rows:
            # Untyped rows of a known record type (a C-DAG's ``nodes`` is a dict in JSON, a keyed
            # list in Parquet) get that type's Arrow layout, not one inferred from the dicts.
            detected = detect(rows[0])
            if detected is not None:
                self.known = detected.schema
        if self.format == "jsonl":
            self._fh.write("".join(dumps(r) + "\n" for r in rows).encode("utf-8"))
            self._fh.flush()  # a downstream stage on the pipe can start on these now
            self.rows_written += len(rows)
            return
        self._buffer.extend(rows)
        if len(self._buffer) >= self.row_group_size:
            self._flush_rows()

    def write_arrow(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Write an Arrow batch (the fast path for format conversion)."""
        if self.format == "jsonl":
            codecs = codec_fields(batch.schema)
            rows = batch.to_pylist()
            self._fh.write("".join(dumps(decode_row(r, codecs)) + "\n" for r in rows).encode("utf-8"))
            self._fh.flush()
            self.rows_written += batch.num_rows
            return
        if self._pq is None:
            self._open_parquet(batch.schema)
        assert self._schema is not None
        if batch.schema != self._schema:
            batch = batch.cast(self._schema) if hasattr(batch, "cast") else batch
        if isinstance(batch, pa.Table):
            self._pq.write_table(batch)
        else:
            self._pq.write_batch(batch)
        self.rows_written += batch.num_rows

    def _open_parquet(self, schema: pa.Schema) -> None:
        meta = dict(schema.metadata or {})
        meta.pop(PROVENANCE_KEY, None)
        if self.provenance is not None:
            meta[PROVENANCE_KEY] = json.dumps(self.provenance).encode()
        self._schema = schema.with_metadata(meta)
        self._codecs = codec_fields(self._schema)
        self._pq = pq.ParquetWriter(self._fh, self._schema, compression="zstd")

    def _schema_for(self, rows: list[dict]) -> pa.Schema:
        known = {f.name: f for f in self.known} if self.known is not None else {}
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                seen.setdefault(k, None)
        fields = [f for f in (self.known or []) if f.name in seen or f.name in self.required]
        for name in seen:
            if name not in known:
                fields.append(pa.field(name, _infer_type([r.get(name) for r in rows], name)))
        return pa.schema(fields)

    def _flush_rows(self) -> None:
        rows, self._buffer = self._buffer, []
        if not rows:
            return
        if self._pq is None:
            self._open_parquet(self._schema_for(rows))
        assert self._schema is not None
        names = set(self._schema.names)
        for i, r in enumerate(rows):
            extra = [k for k in r if k not in names and r[k] is not None]
            if extra:
                raise InputError(
                    f"new field not in the first {self.row_group_size} records; Parquet needs "
                    "every column up front (write JSONL, or put the field in early records)",
                    source="output", row=self.rows_written + i + 1, field=extra[0],
                )
        encoded = [encode_row(r, self._codecs) for r in rows]
        try:
            table = pa.Table.from_pylist(encoded, schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
            raise self._locate(encoded, e) from None
        self._pq.write_table(table)
        self.rows_written += len(rows)

    def _locate(self, rows: list[dict], err: Exception) -> InputError:
        assert self._schema is not None
        for i, r in enumerate(rows):
            for f in self._schema:
                try:
                    pa.array([r.get(f.name)], type=f.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
                    return InputError(
                        f"value does not fit column type {f.type}: {e}",
                        source="output", row=self.rows_written + i + 1, field=f.name,
                    )
        return InputError(f"cannot convert records to Parquet: {err}", source="output")

    # -- finishing --

    def close(self) -> None:
        if self._closed:
            return
        if self.format == "parquet":
            self._flush_rows()
            if self._pq is None:  # no records: still a valid, typed, empty file
                self._open_parquet(self._schema_for([]) if self.known is not None else pa.schema([]))
            self._pq.close()
        self._fh.flush()
        self._closed = True
        if self._tmp is not None:
            self._fh.close()
            os.replace(self._tmp, self.output)

    def abort(self) -> None:
        """Drop everything this writer wrote."""
        if self._closed:
            return
        self._closed = True
        if self._pq is not None:
            try:  # finish the writer so its destructor does not write into a dropped file
                self._pq.close()
            except (OSError, ValueError, pa.ArrowException):
                pass
        if self._tmp is not None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            return
        if self._stdout_start is not None:
            # Undo only the bytes this writer appended to the redirected file; never unlink it
            # (the shell created it, and `{ a; b; } > f` goes on writing to it), and leave it
            # alone when stderr goes to the same file (`> job.out 2>&1`: the error message
            # explaining the failure is in there).
            try:
                self._fh.flush()
            except OSError:
                pass
            if not _same_file(1, 2):
                os.ftruncate(1, self._stdout_start)
                os.lseek(1, self._stdout_start, os.SEEK_SET)


def _infer_type(values: list, name: str) -> pa.DataType:
    try:
        t = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
        raise InputError(f"values of mixed types cannot share a Parquet column: {e}",
                         source="output", field=name) from None
    return pa.string() if pa.types.is_null(t) else t


__all__ = [
    "FORMATS",
    "RecordReader",
    "RecordWriter",
    "Shard",
    "dumps",
    "make_provenance",
    "read_rows",
    "resolve_format",
    "stdout_target",
]


def write_text(path: Path | str, text: str, *, what: str = "the file") -> None:
    """Write a text file atomically (a temp file renamed into place): a failed or killed run
    never leaves half a file, and an earlier file stays whole until the new one is ready."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise IrtkError(f"{path}: cannot write {what}: {e.strerror}") from None


def write_report(path: Path | str, data: Any) -> None:
    """Write a JSON report atomically (``write_text``)."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", what="the report")
