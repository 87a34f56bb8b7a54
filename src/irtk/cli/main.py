"""Entry point: builds the Typer app from the command modules and maps failures to exit codes.

Exit codes: 0 success, 1 bad input or runtime failure, 2 usage, 130 Ctrl-C, 141 broken pipe
(quietly, like any Unix filter whose reader went away). Errors are one line on stderr; ``-v``
adds the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import typer

from irtk import __version__
from irtk.cli import runtime
from irtk.device import bound_kernel_caches

# Each module defines ``register(app)``; a command is listed only once it works.
COMMAND_MODULES = [
    "irtk.cli.show",
    "irtk.cli.models",
    "irtk.cli.expand",
    "irtk.cli.simulate",
    "irtk.cli.calibrate",
    "irtk.cli.train",
    "irtk.cli.entropy_audit",
    "irtk.cli.index",
    "irtk.cli.retrieve",
    "irtk.cli.train_retriever",
    "irtk.cli.completion",
    "irtk.cli.research",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"irtk {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="irtk",
        help="Clarifying deep-research agents, entropy in RL fine-tuning and multimodal "
        "retrieval, as composable stages that pass JSONL/Parquet records.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """irtk: expand, simulate, train, audit, index, retrieve, research."""

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def _fail(message: str, code: int) -> int:
    runtime.console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return code


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its status."""
    sys.exit(run(argv))


def _quiet_libraries(argv: list[str]) -> None:
    # Library progress bars and advisories would drown the stage's own stderr output.
    verbose = runtime.state.verbose or any(a in ("-v", "-vv", "--verbose") for a in argv)
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(argv: list[str] | None = None) -> int:
    from irtk.errors import IrtkError

    runtime.reset()  # -q/-v of an earlier call in this process must not leak into this one
    _quiet_libraries(sys.argv[1:] if argv is None else argv)
    bound_kernel_caches()

    command = typer.main.get_command(build_app())
    if os.environ.get("_IRTK_COMPLETE"):  # a completion request from `irtk completion`'s script
        from typer.completion import completion_init

        completion_init()
    try:
        try:
            result = command.main(args=argv, prog_name="irtk", standalone_mode=False)
            sys.stdout.flush()
        except typer.Exit as e:  # --help, --version
            sys.stdout.flush()
            return e.exit_code
        if result == 130:  # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns it
            return _fail("interrupted", 130)
        return result if isinstance(result, int) else 0
    except BrokenPipeError:
        # The reader went away (`| head`): silence the flush at interpreter exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except typer.Abort:
        return _fail("interrupted", 130)
    except typer.TyperException as e:  # usage errors: the parser's own message
        e.show(file=sys.stderr)
        return e.exit_code
    except IrtkError as e:
        if runtime.state.verbose:
            traceback.print_exc()
        return _fail(str(e), e.exit_code)
    except Exception as e:  # a bug or an unexpected library failure: still one line
        if runtime.state.verbose:
            traceback.print_exc()
        return _fail(f"{type(e).__name__}: {e} (run with -v for the traceback)", 1)
