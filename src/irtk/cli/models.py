"""``irtk models``: list the model registry and where each name resolves."""

from __future__ import annotations

from typing import Annotated

import typer

from irtk.cli import options as opt


def register(app: typer.Typer) -> None:
    app.command("models", help="List the model registry and where each name resolves.")(models)


def models(
    json_out: Annotated[bool, typer.Option("--json", help="One JSON record per model on stdout.")] = False,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    from irtk.io import dumps
    from irtk.models import describe

    rows = describe()
    if json_out:
        for row in rows:
            typer.echo(dumps(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "source", "status", "resolves to")
    for row in rows:
        table.add_row(row["name"], row["kind"], row["source"], row["status"], row["resolves_to"])
    Console().print(table)
