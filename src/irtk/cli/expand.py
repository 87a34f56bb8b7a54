"""``irtk expand``: seed tasks -> intent refinement graphs -> one row per simulated user."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt


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
    render: Annotated[str, typer.Option("--render", help="Dialogue rendering: template (deterministic, "
                                        "no LLM) or llm (role-play with --backend/--model).")] = "template",
    max_paths: Annotated[int, typer.Option("--max-paths", min=0, help="Keep at most N paths per graph, "
                                           "sampled with --seed (0: every path).")] = 0,
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="Write rejected seeds (id, stage, "
                                                    "reason) here as JSONL.", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the run statistics here as JSON.",
                                                   show_default=False)] = None,
    draw: Annotated[Optional[Path], typer.Option("--draw", help="Draw every graph into this folder "
                                                 "(.mmd, .dot; .svg/.png when Graphviz is installed).",
                                                 show_default=False)] = None,
    build: Annotated[bool, typer.Option("--build/--no-build", help="Build graphs with the LLM for seeds "
                                        "that have none (else reject those seeds).")] = True,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Re-ask the LLM this many times, with the "
                                         "error fed back, when a reply is not JSON or not a valid graph.")] = 2,
    max_nodes: Annotated[int, typer.Option("--max-nodes", min=1, help="Most questions a graph may have.")] = 20,
    min_options: Annotated[int, typer.Option("--min-options", min=1, help="Fewest options per question.")] = 2,
    max_options: Annotated[int, typer.Option("--max-options", min=1, help="Most options per question.")] = 3,
    merge_threshold: Annotated[float, typer.Option("--merge-threshold", help="Merge built questions whose "
                                                   "embeddings are this cosine-similar (1: never).")] = 0.9,
    embedder: Annotated[str, typer.Option("--embedder", envvar="IRTK_EMBEDDER",
                                          help="Sentence embedder for merging questions.")] = "minilm-l6",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Token budget per graph-building "
                                            "reply.")] = 1024,
    render_max_tokens: Annotated[int, typer.Option("--render-max-tokens", min=1, help="Token budget per "
                                                   "rendered message (--render llm).")] = 96,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature for "
                                               "graph building (rendering uses at least 0.7).")] = 0.3,
    backend: opt.Backend = "hf",
    model: opt.Model = "smollm2-135m-instruct",
    base_url: opt.BaseUrl = None,
    dtype: opt.Dtype = "auto",
    seed: opt.Seed = 0,
    batch_size: opt.BatchSize = 16,
    shard: opt.ShardOpt = None,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Seeds (id, query; optional simple_query, intents, rubric, graph) in; trajectories out."""
    from irtk.cli import runtime
    from irtk.errors import IrtkError
    from irtk.graphs.expand import ExpandConfig, config_dict, run_expand
    from irtk.graphs.graph import GraphLimits
    from irtk.io import RecordReader, RecordWriter, make_provenance
    from irtk.records import SEED, TRAJECTORY

    cfg = ExpandConfig(
        render=render, backend=backend, model=model, base_url=base_url, dtype=dtype, build=build, retries=retries,
        max_paths=max_paths or None,
        limits=GraphLimits(max_nodes=max_nodes, min_options=min_options, max_options=max_options),
        merge_threshold=merge_threshold, embedder=embedder, max_tokens=max_tokens,
        render_max_tokens=render_max_tokens, temperature=temperature,
        seed=seed, batch_size=batch_size, rejects=rejects, report=report, draw_dir=draw,
    )
    cfg.check()
    reader = RecordReader(input, record_type=SEED, batch_size=batch_size, shard=opt.shard_of(shard))
    prov = make_provenance("expand", source=reader.name, **config_dict(cfg))

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
