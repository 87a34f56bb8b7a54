"""``irtk completion SHELL``: print the shell completion script (bash, zsh or fish).

    eval "$(irtk completion bash)"                 # this shell
    irtk completion bash > ~/.local/share/bash-completion/completions/irtk
    irtk completion zsh > "${fpath[1]}/_irtk"        # zsh: a folder on $fpath

The script calls ``irtk`` back with ``_IRTK_COMPLETE`` set; ``irtk.cli.main`` answers those calls
with typer's own completion classes, so commands, options and their choices complete.
"""

from __future__ import annotations

from typing import Annotated

import typer

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_IRTK_COMPLETE"


def register(app: typer.Typer) -> None:
    app.command("completion", help="Print the shell completion script for bash, zsh or fish.")(completion)


def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", show_default=False)],
) -> None:
    """Print the completion script; source it or save it where the shell looks."""
    from typer._completion_shared import get_completion_script
    from typer.completion import completion_init

    from irtk.errors import UsageError

    if shell not in SHELLS:
        raise UsageError(f"shell must be one of {', '.join(SHELLS)}, got {shell!r}")
    completion_init()
    typer.echo(get_completion_script(prog_name="irtk", complete_var=COMPLETE_VAR, shell=shell))
