"""Viewing and converting record files (the library behind ``irtk show``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from irtk.io import RecordReader, RecordWriter, Shard, make_provenance

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".pq")


def count(source: str | Path | None) -> int:
    """Number of records (from the footer for Parquet, by scanning for JSONL)."""
    reader = RecordReader(source, allow_empty=True)
    if reader.row_count is not None:
        return reader.row_count
    return sum(1 for _ in reader.rows())


def convert(
    sources: str | Path | None | list,
    *,
    output: str | Path | None = None,
    fmt: str | None = None,
    head: int | None = None,
    batch_size: int = 65536,
    shard: Shard | None = None,
) -> int:
    """Copy records (of one input, or several concatenated) to another format; returns the count.

    Goes Arrow batch to Arrow batch where it can (pyarrow's readers and writers do the work),
    through dicts where a field's JSON and Arrow layouts differ (the C-DAG's ``nodes``). The
    first input's provenance is kept.
    """
    sources = sources if isinstance(sources, list) else [sources]
    readers = iter(RecordReader(s, batch_size=batch_size, shard=shard) for s in sources)
    first = next(readers)
    prov = first.provenance or make_provenance("show", source=first.name)
    left = head
    with RecordWriter(output, fmt=fmt, provenance=prov) as writer:
        for reader in (first, *readers):
            batches = reader.arrow_batches()
            if batches is not None:
                for batch in batches:
                    if left is not None:
                        batch = batch.slice(0, left)
                        left -= batch.num_rows
                    writer.write_arrow(batch)
                    if left == 0:
                        break
            else:
                for rows in reader.batches():
                    if left is not None:
                        rows = rows[:left]
                        left -= len(rows)
                    writer.write_rows(rows)
                    if left == 0:
                        break
            reader.close()
            if left == 0:
                break
    return writer.rows_written


def pretty(sources: str | Path | None | list, *, head: int | None = None) -> None:
    """Print records for people: a rich panel per record on a terminal, indented JSON otherwise."""
    from rich.console import Console
    from rich.json import JSON
    from rich.panel import Panel

    out = Console(soft_wrap=False)
    shown = 0
    for source in sources if isinstance(sources, list) else [sources]:
        for row in RecordReader(source, allow_empty=True, batch_size=64).rows():
            if head is not None and shown >= head:
                return
            shown += 1
            text = json.dumps(row, ensure_ascii=False, indent=2, default=str)
            if out.is_terminal:
                title = next((str(row[k]) for k in ("id", "qid", "doc_id") if k in row), f"record {shown}")
                out.print(Panel(JSON(text), title=title, title_align="left"))
            else:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()


def print_schema(source: str | Path | None) -> None:
    """The Arrow schema (Parquet: as stored; JSONL: as inferred) and any provenance, on stdout."""
    reader = RecordReader(source, allow_empty=True)
    schema = reader.arrow_schema
    if schema is None:
        import pyarrow as pa

        rows = []
        for row in reader.rows():
            rows.append(row)
            if len(rows) >= 1000:
                break
        schema = pa.Table.from_pylist(rows).schema if rows else pa.schema([])
    print(schema.remove_metadata().to_string(show_field_metadata=False))
    if reader.provenance:
        print("provenance: " + json.dumps(reader.provenance, indent=2))
    if reader.row_count is not None:
        print(f"rows: {reader.row_count}")
