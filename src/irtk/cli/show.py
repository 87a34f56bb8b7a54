"""``irtk show``: look at records (pretty, schema, count) or convert JSONL <-> Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt


def register(app: typer.Typer) -> None:
    app.command("show", help="Pretty-print records, show their schema or count, or convert JSONL <-> Parquet.")(show)


def show(
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(help="Input files (JSONL or Parquet), read in order; none or '-' reads stdin. "
                            "Several inputs concatenate (e.g. shard outputs).", show_default=False),
    ] = None,
    head: Annotated[Optional[int], typer.Option("--head", "-n", min=0, help="Only the first N records.",
                                                show_default=False)] = None,
    schema: Annotated[bool, typer.Option("--schema", help="Print the Arrow schema and provenance.")] = False,
    count: Annotated[bool, typer.Option("--count", help="Print the number of records.")] = False,
    summary: Annotated[Optional[Path], typer.Option(
        "--summary", metavar="DIR", help="Instead: summarise a run folder for a person: what ran and the "
        "key figures from its --report JSON files (retrieve, expand, simulate; a missing one is "
        "named), and its files.", show_default=False)] = None,
    output: opt.Output = None,
    format: opt.Format = None,
    batch_size: opt.BatchSize = 65536,
    shard: opt.ShardOpt = None,
    config: opt.Config = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Pretty-print to the terminal; convert when --format or -o is given or stdout is a
    .jsonl/.parquet file (``irtk show a.jsonl > a.parquet``); --summary DIR describes a run folder."""
    from irtk import show as lib
    from irtk.io import stdout_target

    if summary is not None:
        from irtk.errors import UsageError
        from irtk.reports import summary_lines

        if inputs or schema or count or output is not None:
            raise UsageError("--summary DIR reads the folder's reports: give no inputs, --schema, --count or -o")
        typer.echo("\n".join(summary_lines(summary)))
        return

    converting = format is not None or output is not None or (
        stdout_target() is not None and stdout_target().suffix.lower() in lib.DATA_SUFFIXES
    )
    from irtk.io import Shard

    sources = inputs or [None]
    # Only an explicit --shard: a viewer inside a Slurm array task should still see everything.
    part = Shard.parse(shard) if shard else None
    if schema:
        lib.print_schema(sources[0])
    elif count:
        typer.echo(sum(lib.count(s) for s in sources))
    elif converting:
        lib.convert(sources, output=output, fmt=format, head=head, batch_size=batch_size, shard=part)
    else:
        lib.pretty(sources, head=head)

