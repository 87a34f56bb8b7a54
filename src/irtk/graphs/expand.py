"""`irtk expand` as a library: seeds -> C-DAGs -> trajectories -> dialogues, with Table 4 stats.

``run_expand(config, reader, writer)`` streams seeds in batches of ``config.batch_size``. A
seed's own graph is validated and used as is; a seed without one is built with the LLM backend
(batched across the seeds of a batch). Seeds whose graph is invalid, or cannot be built within
``retries``, are rejected with a reason (``config.rejects`` file, the returned stats) and the run
goes on. Each trajectory row follows ``records.TRAJECTORY``; unknown seed columns pass through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irtk.generation import SamplingParams
from irtk.graphs.config import ExpandConfig
from irtk.graphs.graph import GraphError, depth, validate_graph
from irtk.graphs.render import RenderCounts, llm_dialogues, template_dialogue
from irtk.graphs.traversal import Traversal, steps_of

# Without --max-paths a graph with more paths than this is rejected rather than exploding the output.
PATH_SAFETY_LIMIT = 100_000


@dataclass
class ExpandStats:
    """Run statistics; ``summary()`` gives the paper's Table 4 columns and more."""

    seeds: int = 0
    graphs_given: int = 0
    graphs_built: int = 0
    rejected: int = 0
    trajectories: int = 0
    turns: int = 0
    depths: list[int] = field(default_factory=list)
    paths_per_graph: list[int] = field(default_factory=list)
    paths_available: int = 0  # before --max-paths sampling
    llm_calls: int = 0
    render_fallbacks: int = 0
    rejects: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        def avg(xs: Sequence[int]) -> float | None:
            return round(sum(xs) / len(xs), 2) if xs else None

        return {
            "seeds": self.seeds,
            "graphs": len(self.depths),
            "graphs_given": self.graphs_given,
            "graphs_built": self.graphs_built,
            "graphs_failed": self.rejected,
            "trajectories": self.trajectories,
            "turns": self.turns,
            "turns_per_trajectory_avg": round(self.turns / self.trajectories, 2) if self.trajectories else None,
            "depth_avg": avg(self.depths),
            "depth_max": max(self.depths, default=None),
            "paths_per_graph_avg": avg(self.paths_per_graph),
            "paths_per_graph_max": max(self.paths_per_graph, default=None),
            "paths_available": self.paths_available,
            "llm_calls": self.llm_calls,
            "render_fallbacks": self.render_fallbacks,
            "rejects": self.rejects,
        }


class _Lazy:
    """The backend and embedder, created on first use (a run on given graphs needs neither)."""

    def __init__(self, config: ExpandConfig, backend: Any = None) -> None:
        self.config = config
        self._backend = backend

    def backend(self) -> Any:
        if self._backend is None:
            from irtk.generation import get_backend

            opts: dict[str, Any] = {"dtype": self.config.dtype, "batch_size": self.config.batch_size}
            if self.config.base_url:
                opts["base_url"] = self.config.base_url
            self._backend = get_backend(self.config.backend, self.config.model, **opts)
        return self._backend

    def embed_fn(self) -> Callable[[Sequence[str]], Any] | None:
        if self.config.merge_threshold >= 1.0:
            return None

        def embed_texts(texts: Sequence[str]) -> Any:
            from irtk.embedding import embed

            return embed(texts, self.config.embedder)

        return embed_texts


def _reject(stats: ExpandStats, seed: Mapping, stage: str, reason: str) -> dict:
    row = {"id": seed.get("id"), "stage": stage, "reason": reason}
    stats.rejected += 1
    stats.rejects.append(row)
    return row


def _graphs_for(batch: list[dict], config: ExpandConfig, lazy: _Lazy, stats: ExpandStats,
                reject: Callable[[dict, str, str], None]) -> list[tuple[dict, dict, dict]]:
    """(seed, graph, extra output fields) for every seed of the batch that has a usable graph."""
    ready: list[tuple[dict, dict, dict] | None] = [None] * len(batch)
    to_build: list[int] = []
    for i, seed in enumerate(batch):
        graph = seed.get("graph")
        if graph is None:
            if config.build:
                to_build.append(i)
            else:
                reject(seed, "graph", "the seed has no graph and building is off (--no-build)")
            continue
        try:
            validate_graph(graph, config.limits)
        except GraphError as e:
            reject(seed, "graph", f"{e.field}: {e.message}")
            continue
        stats.graphs_given += 1
        ready[i] = (seed, graph, {})
    if to_build:
        from irtk.graphs.build import BuildSettings, build_graphs

        settings = BuildSettings(
            limits=config.limits, retries=config.retries, merge_threshold=config.merge_threshold,
            embedder=config.embedder,
            params=SamplingParams(max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed),
        )
        results = build_graphs([batch[i] for i in to_build], lazy.backend(), settings, lazy.embed_fn())
        for i, result in zip(to_build, results, strict=True):
            stats.llm_calls += result.attempts
            if result.graph is None:
                reject(batch[i], result.stage or "build",
                       f"graph building failed after {config.retries + 1} attempt(s): {result.error}")
                continue
            stats.graphs_built += 1
            extra = {"simple_query": result.simple_query,
                     "seed_intents": {"shallow": result.shallow, "deep": result.deep}}
            ready[i] = (batch[i], result.graph, extra)
    return [r for r in ready if r is not None]


def trajectory_rows(seed: Mapping, graph: Mapping, extra: Mapping, config: ExpandConfig,
                    stats: ExpandStats | None = None) -> list[dict]:
    """One TRAJECTORY row per kept path of ``graph`` (dialogue filled in later)."""
    traversal = Traversal(graph)
    total = traversal.count()
    if not config.max_paths and total > PATH_SAFETY_LIMIT:
        raise GraphError(f"{total} paths (more than {PATH_SAFETY_LIMIT}); cap them with --max-paths",
                         field="graph")
    passthrough = {k: v for k, v in seed.items() if k not in ("intents", "graph")}
    intents = seed.get("intents")
    base = {**passthrough, **extra}
    if intents is not None and "seed_intents" not in extra:
        base["seed_intents"] = intents
    simple = base.get("simple_query") or graph["root_node"]
    rows = []
    for rank, visits in traversal.paths(config.max_paths or None, seed=f"{config.seed}:{seed['id']}"):
        steps = steps_of(graph, visits)
        rows.append({**base, "id": f"{seed['id']}/{rank}", "seed_id": seed["id"], "query": seed["query"],
                     "simple_query": simple, "graph": graph, "path": steps,
                     "intents": [s["intent"] for s in steps]})
    if stats is not None:
        stats.paths_available += total
        stats.depths.append(depth(graph))
        stats.paths_per_graph.append(len(rows))
    return rows


def render_rows(rows: list[dict], config: ExpandConfig, lazy: _Lazy, stats: ExpandStats) -> None:
    """Fill ``dialogue`` and ``render`` in place."""
    if config.render == "template":
        for row in rows:
            row["dialogue"] = template_dialogue(row["path"])
            row["render"] = "template"
        return
    backend = lazy.backend()
    counts = RenderCounts()
    params = SamplingParams(max_tokens=config.render_max_tokens, temperature=max(config.temperature, 0.7),
                            seed=config.seed)
    items = [(row["simple_query"], row["path"], row["intents"]) for row in rows]
    for row, dialogue in zip(rows, llm_dialogues(backend, items, params, counts), strict=True):
        row["dialogue"] = dialogue
        row["render"] = f"llm:{backend.name}:{backend.model}"
    stats.llm_calls += counts.calls
    stats.render_fallbacks += counts.fallbacks


def run_expand(config: ExpandConfig, reader: Any, writer: Any, *, backend: Any = None,
               on_reject: Callable[[dict], None] | None = None,
               advance: Callable[[int], None] | None = None) -> ExpandStats:
    """Expand every seed ``reader`` yields into trajectory rows written to ``writer``.

    ``backend`` overrides the one the config names (tests, benchmarks, notebooks). ``on_reject``
    sees each reject as it happens; ``advance(n)`` is told of n more seeds done.
    """
    stats = ExpandStats()
    lazy = _Lazy(config, backend)
    rejects_writer = None
    if config.rejects is not None:
        from irtk.io import RecordWriter

        rejects_writer = RecordWriter(config.rejects, fmt="jsonl")
    drawn: set[str] = set()
    try:
        def reject(seed: Mapping, stage: str, reason: str) -> None:
            row = _reject(stats, seed, stage, reason)
            if rejects_writer is not None:
                rejects_writer.write_rows([row])
            if on_reject is not None:
                on_reject(row)

        for batch in reader.batches():
            stats.seeds += len(batch)
            rows: list[dict] = []
            for seed, graph, extra in _graphs_for(batch, config, lazy, stats, reject):
                try:
                    rows.extend(trajectory_rows(seed, graph, extra, config, stats))
                except GraphError as e:
                    reject(seed, "traverse", f"{e.field}: {e.message}")
                    continue
                if config.draw_dir is not None:
                    _draw(graph, config.draw_dir, str(seed["id"]), drawn)
            render_rows(rows, config, lazy, stats)
            stats.trajectories += len(rows)
            stats.turns += sum(len(r["path"]) for r in rows)
            writer.write_rows(rows)
            if advance is not None:
                advance(len(batch))
    except BaseException:
        if rejects_writer is not None:
            rejects_writer.abort()
        raise
    if rejects_writer is not None:
        rejects_writer.close()
    if config.report is not None:
        from irtk.io import write_report

        write_report(config.report, stats.summary())
    return stats


def _draw(graph: Mapping, folder: Path, name: str, drawn: set[str]) -> None:
    from irtk.graphs.draw import draw, file_stem

    stem, n = file_stem(name), 1
    while stem in drawn:  # two seed ids that sanitise to the same file name
        n += 1
        stem = f"{file_stem(name)}-{n}"
    drawn.add(stem)
    draw(graph, folder, stem)
