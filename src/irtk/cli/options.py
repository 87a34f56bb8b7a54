"""The one option vocabulary shared by every stage.

Each option is defined once here and used by annotation in the stage modules, so ``-o``,
``--format``, ``--seed``, ``--batch-size``, ``--backend``, ``--model``, ``--dtype``, ``--shard``, ``--config``,
``-q`` and ``-v`` mean the same everywhere and read the same ``IRTK_*`` environment variables.

``--config FILE`` (TOML or JSON) supplies defaults for any option: top-level keys apply to every
command, a table named after the command (``[simulate]``) to that command only. Precedence:
command line > environment > config file > built-in default.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import runtime
from irtk.errors import ConfigError, UsageError
from irtk.io import Shard


def _set_verbose(value: int) -> int:
    if value:
        runtime.state.verbose = value
    return value


def _set_quiet(value: bool) -> bool:
    if value:
        runtime.state.quiet = True
    return value


def _set_progress(value: bool | None) -> bool | None:
    if value is not None:
        runtime.state.progress = value
    return value


def load_config(path: Path) -> dict:
    """Read a TOML or JSON config file into a dict of option defaults."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of option names")
    return data


def _apply_config(ctx: typer.Context, param: object, value: Path | None) -> Path | None:
    if value is None:
        return None
    data = load_config(value)
    command = ctx.command.name or ""
    defaults: dict[str, object] = {}
    names = {p.name for p in ctx.command.params if p.name}
    commands = set(getattr(ctx.parent.command, "commands", {})) if ctx.parent else set()
    for key, val in data.items():
        if isinstance(val, dict) and key in commands:
            if key == command:
                defaults.update({k.replace("-", "_"): v for k, v in val.items()})
            continue
        defaults[key.replace("-", "_")] = val
    # Top-level keys may be meant for other commands; a command's own table must be exact.
    own = data.get(command, {}) if isinstance(data.get(command), dict) else {}
    unknown = sorted(k for k in own if k.replace("-", "_") not in names)
    if unknown:
        raise ConfigError(f"{value}: [{command}] has unknown option(s): {', '.join(unknown)}")
    ctx.default_map = {**(ctx.default_map or {}), **{k: v for k, v in defaults.items() if k in names}}
    return value


Input = Annotated[
    Optional[str],
    typer.Argument(help="Input records (JSONL or Parquet); '-' or nothing reads stdin.", show_default=False),
]
Output = Annotated[
    Optional[Path],
    typer.Option("-o", "--output", help="Write here (atomically) instead of stdout.", show_default=False),
]
Format = Annotated[
    Optional[str],
    typer.Option("--format", envvar="IRTK_FORMAT",
                 help="jsonl or parquet; default from -o's extension, else from the file stdout "
                      "is redirected to, else jsonl.", show_default=False),
]
Seed = Annotated[int, typer.Option("--seed", envvar="IRTK_SEED", help="Random seed.")]
BatchSize = Annotated[
    int, typer.Option("--batch-size", envvar="IRTK_BATCH_SIZE", min=1, help="Records per batch / backend call.")
]
Backend = Annotated[
    str,
    typer.Option("--backend", envvar="IRTK_BACKEND",
                 help="Generation backend: auto (vllm where it is installed, else hf), hf, vllm, openai, "
                      "or module:attr."),
]
Model = Annotated[
    str,
    typer.Option("--model", envvar="IRTK_MODEL", help="Model: a registry name (irtk models), a local path or a hub id."),
]
BaseUrl = Annotated[
    Optional[str],
    typer.Option("--base-url", envvar="IRTK_BASE_URL",
                 help="OpenAI-compatible server for --backend openai (key from OPENAI_API_KEY or IRTK_API_KEY).",
                 show_default=False),
]
BackendArg = Annotated[
    Optional[list[str]],
    typer.Option("--backend-arg", envvar="IRTK_BACKEND_ARG", show_default=False,
                 help="KEY=VALUE for the backend's constructor, repeatable; VALUE is read as JSON where "
                      "it parses (true, 2048, 0.85). vllm: enforce_eager, max_model_len, "
                      "gpu_memory_utilization, tensor_parallel_size; openai: max_concurrency, timeout, "
                      "max_retries; hf: device, prefix_cache, cache_bytes, lockstep, call_size."),
]


def key_values(items: list[str] | None, flag: str) -> dict:
    """``KEY=VALUE`` items as a dict (dashes in keys become underscores); a VALUE that parses as
    JSON is that value, else the string."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


Dtype = Annotated[
    str,
    typer.Option("--dtype", envvar="IRTK_DTYPE",
                 help="Model weights for --backend hf/vllm: auto (bf16 where the device runs it natively, "
                      "else fp16 on GPU / fp32 on CPU), float32, bfloat16 or float16."),
]
ShardOpt = Annotated[
    Optional[str],
    typer.Option("--shard", envvar="IRTK_SHARD",
                 help="K/N: process slice K of N (0-based); default from SLURM_ARRAY_TASK_ID/COUNT.",
                 show_default=False),
]
Config = Annotated[
    Optional[Path],
    typer.Option("--config", envvar="IRTK_CONFIG", is_eager=True, callback=_apply_config,
                 help="TOML/JSON file of option defaults (top level, or a table per command).",
                 show_default=False),
]
Report = Annotated[
    Optional[Path],
    typer.Option("--report", help="Write the run's metrics / statistics here as JSON (atomically).",
                 show_default=False),
]
Embedder = Annotated[
    str,
    typer.Option("--embedder", envvar="IRTK_EMBEDDER",
                 help="Sentence embedder: a registry name (irtk models), a local path or a hub id."),
]
Quiet = Annotated[
    bool,
    typer.Option("-q", "--quiet", callback=_set_quiet,
                 help="No status lines or progress bars; warnings and errors still go to stderr."),
]
Verbose = Annotated[
    int,
    typer.Option("-v", "--verbose", count=True, callback=_set_verbose,
                 help="More detail on stderr; tracebacks on errors."),
]
ProgressOpt = Annotated[
    Optional[bool],
    typer.Option("--progress/--no-progress", callback=_set_progress,
                 help="Progress bars (default: only when stderr is a terminal).", show_default=False),
]


def option(config: type, name: str, *flags: str, **kwargs: object) -> typer.models.OptionInfo:
    """A typer option whose help text comes from ``config``'s field ``name`` (irtk.config); pair it
    with ``= default_of(config, name)`` so the default, too, is written only in the dataclass."""
    from irtk.config import help_of

    return typer.Option(*flags, help=help_of(config, name), **kwargs)


def check_report(report: Path | None) -> None:
    """Fail before any work when ``--report``'s folder does not exist."""
    if report is not None and not report.parent.exists():
        raise UsageError(f"--report {report}: folder {report.parent} does not exist")


def write_report(report: Path | None, data: object) -> None:
    if report is not None:
        from irtk.io import write_report as write

        write(report, data)


def shard_of(value: str | None) -> Shard | None:
    """Turn the --shard option (or Slurm's array variables) into a Shard."""
    return Shard.from_env() if value is None else Shard.parse(value)
