"""``irtk expand``: seed tasks -> intent refinement graphs -> one row per simulated user."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.config import default_of as D
from irtk.graphs.config import ExpandConfig as C  # no torch: --help stays light


def register(app: typer.Typer) -> None:
    app.command(
        "expand",
        help="Expand seed research tasks into clarification trajectories: build/validate each C-DAG, "
             "walk it depth-first (one path per choice) with per-turn hindsight target intents, and "
             "render a dialogue per path. Stats (the IntentRL Table 4 columns) go to stderr.",
    )(expand)


def expand(
    input: opt.Input = None,
    output: opt.Output = None,
    format: opt.Format = None,
    render: Annotated[str, opt.option(C, "render", "--render")] = D(C, "render"),
    max_paths: Annotated[int, opt.option(C, "max_paths", "--max-paths", min=0)] = 0,
    rejects: Annotated[Optional[Path], opt.option(C, "rejects", "--rejects", show_default=False)] = None,
    report: opt.Report = None,
    draw: Annotated[Optional[Path], opt.option(C, "draw_dir", "--draw", show_default=False)] = None,
    build: Annotated[bool, opt.option(C, "build", "--build/--no-build")] = D(C, "build"),
    retries: Annotated[int, opt.option(C, "retries", "--retries", min=0)] = D(C, "retries"),
    max_nodes: Annotated[int, opt.option(C, "max_nodes", "--max-nodes", min=1)] = D(C, "max_nodes"),
    min_options: Annotated[int, opt.option(C, "min_options", "--min-options", min=1)] = D(C, "min_options"),
    max_options: Annotated[int, opt.option(C, "max_options", "--max-options", min=1)] = D(C, "max_options"),
    merge_threshold: Annotated[float, opt.option(C, "merge_threshold", "--merge-threshold")] = D(C, "merge_threshold"),
    embedder: opt.Embedder = D(C, "embedder"),
    max_tokens: Annotated[int, opt.option(C, "max_tokens", "--max-tokens", min=1)] = D(C, "max_tokens"),
    render_max_tokens: Annotated[int, opt.option(C, "render_max_tokens", "--render-max-tokens",
                                                 min=1)] = D(C, "render_max_tokens"),
    temperature: Annotated[float, opt.option(C, "temperature", "--temperature", min=0.0)] = D(C, "temperature"),
    backend: opt.Backend = D(C, "backend"),
    model: opt.Model = D(C, "model"),
    base_url: opt.BaseUrl = None,
    dtype: opt.Dtype = D(C, "dtype"),
    seed: opt.Seed = D(C, "seed"),
    batch_size: opt.BatchSize = D(C, "batch_size"),
    shard: opt.ShardOpt = None,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Seeds (id, query; optional simple_query, intents, rubric, graph) in; trajectories out."""
    from irtk.cli import runtime
    from irtk.errors import IrtkError
    from irtk.graphs.expand import run_expand
    from irtk.io import RecordReader, RecordWriter, make_provenance
    from irtk.records import SEED, TRAJECTORY

    opt.check_report(report)
    cfg = C(
        render=render, backend=backend, model=model, base_url=base_url, dtype=dtype, build=build, retries=retries,
        max_paths=max_paths, max_nodes=max_nodes, min_options=min_options, max_options=max_options,
        merge_threshold=merge_threshold, embedder=embedder, max_tokens=max_tokens,
        render_max_tokens=render_max_tokens, temperature=temperature,
        seed=seed, batch_size=batch_size, rejects=rejects, report=report, draw_dir=draw,
    )
    reader = RecordReader(input, record_type=SEED, batch_size=batch_size, shard=opt.shard_of(shard))
    prov = make_provenance("expand", source=reader.name, **cfg.recorded())

    def on_reject(row: dict) -> None:
        runtime.warn(f"seed {row['id']!r} rejected at {row['stage']}: {row['reason']}")

    with RecordWriter(output, fmt=format, record_type=TRAJECTORY, provenance=prov) as writer, \
            runtime.progress("expanding seeds", reader.row_count) as advance:
        stats = run_expand(cfg, reader, writer, on_reject=on_reject, advance=advance)
        _print_stats(stats.summary(), runtime)
        if stats.trajectories == 0:  # an empty result is a failure a script must notice
            where = f" (see {rejects})" if rejects else ""
            raise IrtkError(f"no trajectories: all {stats.seeds} seed(s) were rejected{where}")


def _print_stats(summary: dict, runtime) -> None:
    def num(key: str) -> str:
        return "-" if summary[key] is None else str(summary[key])

    runtime.info(
        f"expand: {summary['seeds']} seeds -> {summary['graphs']} graphs ({summary['graphs_given']} given, "
        f"{summary['graphs_built']} built, {summary['graphs_failed']} failed) -> "
        f"{summary['trajectories']} trajectories, {summary['turns']} turns")
    runtime.info(
        f"  graph depth avg {num('depth_avg')} max {num('depth_max')}; paths per graph avg "
        f"{num('paths_per_graph_avg')} max {num('paths_per_graph_max')}; turns per trajectory avg "
        f"{num('turns_per_trajectory_avg')}")
    if summary["render_fallbacks"]:
        runtime.warn(f"{summary['render_fallbacks']} empty LLM message(s) replaced by the template text")
