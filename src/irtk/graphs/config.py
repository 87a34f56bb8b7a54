"""``ExpandConfig``: every setting of an ``irtk expand`` run, with its help text and validation.

The CLI reads defaults and help from here (irtk.config's convention), and graph building's
``BuildSettings`` takes its defaults from here too, so each default is written once. Light: no
torch at import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from irtk.config import require, setting
from irtk.graphs.graph import (
    DEFAULT_MAX_NODES,
    DEFAULT_MAX_OPTIONS,
    DEFAULT_MIN_OPTIONS,
    GraphLimits,
)
from irtk.models import DEFAULT_EMBEDDER, DEFAULT_LM

RENDERERS = ("template", "llm")


@dataclass
class ExpandConfig:
    """Every setting of an expand run (the CLI fills this from its options)."""

    render: str = setting("template", "Dialogue rendering: template (deterministic, no LLM) or llm "
                          "(role-play with --backend/--model).")
    backend: str = setting("auto", "Generation backend: auto (vllm where it is installed, else hf), "
                           "hf, vllm, openai, or module:attr.")
    model: str = setting(DEFAULT_LM, "Model: a registry name (irtk models), a local path or a hub id.")
    base_url: str | None = setting(None, "OpenAI-compatible server for --backend openai.")
    dtype: str = setting("auto", "Model weights for --backend hf/vllm: auto, float32, bfloat16 or float16.")
    build: bool = setting(True, "Build graphs with the LLM for seeds that have none (else reject those seeds).")
    retries: int = setting(2, "Re-ask the LLM this many times, with the error fed back, when a reply "
                           "is not JSON or not a valid graph.")
    max_paths: int | None = setting(None, "Keep at most N paths per graph, sampled with --seed "
                                    "(0 or None: every path).")
    max_nodes: int = setting(DEFAULT_MAX_NODES, "Most questions a graph may have.")
    min_options: int = setting(DEFAULT_MIN_OPTIONS, "Fewest options per question.")
    max_options: int = setting(DEFAULT_MAX_OPTIONS, "Most options per question.")
    merge_threshold: float = setting(0.9, "Merge built questions whose embeddings are this "
                                     "cosine-similar (1: never).")
    embedder: str = setting(DEFAULT_EMBEDDER, "Sentence embedder for merging questions.")
    max_tokens: int = setting(1024, "Token budget per graph-building reply.")
    render_max_tokens: int = setting(96, "Token budget per rendered message (--render llm).")
    temperature: float = setting(0.3, "Sampling temperature for graph building (rendering uses at least 0.7).")
    seed: int = setting(0, "Random seed.")
    batch_size: int = setting(16, "Seeds per batch (LLM calls batch across them).")
    rejects: Path | None = setting(None, "Write rejected seeds (id, stage, reason) here as JSONL.")
    report: Path | None = setting(None, "Write the run statistics here as JSON.")
    draw_dir: Path | None = setting(None, "Draw every graph into this folder: .mmd, .dot and .png "
                                    "(Graphviz when installed, with .svg; else drawn in Python).")

    def __post_init__(self) -> None:
        if self.max_paths == 0:
            self.max_paths = None
        require(self.render in RENDERERS,
                f"--render must be one of {', '.join(RENDERERS)}, got {self.render!r}")
        require(self.retries >= 0, "--retries must be >= 0")
        require(self.max_paths is None or self.max_paths > 0, "--max-paths must be >= 0 (0: every path)")
        require(self.max_nodes >= 1 and 1 <= self.min_options <= self.max_options,
                "need --max-nodes >= 1 and 1 <= --min-options <= --max-options")
        require(0.0 < self.merge_threshold <= 1.0, "--merge-threshold must be in (0, 1] (1 disables merging)")

    @property
    def limits(self) -> GraphLimits:
        return GraphLimits(max_nodes=self.max_nodes, min_options=self.min_options, max_options=self.max_options)

    def recorded(self) -> dict:
        """The config as plain JSON-able data (for provenance)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
