"""Evaluation of research reports: intent coverage, citation validity, length; aggregates with
intervals that resample requests and seeds; the comparison table of clarification modes.

- *Intent coverage*: the fraction of the user's latent intents that some report sentence citing
  the evidence addresses — cosine similarity of the intent and the sentence (citations stripped)
  at or above the simulated user's relevance threshold ``tau_rel`` (``irtk.dialogue.gate``'s
  calibrated default), with the same embedder. Headings and uncited prose do not count: they can
  restate the brief (which holds the user's own answers) without reporting any evidence.
- *Citation validity*: valid citations / all citations before the check (None without any).
- *Length*: words of the report.

Intervals: the unit is a (request, seed) run. A percentile bootstrap draws requests and seeds
independently with replacement and averages the crossed cells (a two-way bootstrap), so both
request-to-request and seed-to-seed variation widen the interval; sentences are never resampled.
``dialogue.metrics.bootstrap_ci`` resamples one level only, hence this one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from irtk.research.writers import cited_sentences

# name -> (label, percent?) in table order
METRICS = {
    "coverage": ("intent coverage", True),
    "citation_validity": ("citation validity", True),
    "words": ("report words", False),
    "questions": ("questions asked", False),
    "evidence": ("evidence docs", False),
}


def intent_coverage(report: str, valid_ids: Sequence[str], intents: Sequence[str], gate: Any) -> tuple[float | None, list[str]]:
    """(coverage, covered intents) of one report; coverage None when there are no intents.

    ``gate`` is an ``EmbeddingGate`` (its embedder, cache and ``tau_rel``)."""
    if not intents:
        return None, []
    sentences = cited_sentences(report, valid_ids)
    if not sentences:
        return 0.0, []
    sims = gate.vectors(list(intents)) @ gate.vectors(sentences).T
    covered = [i for i, row in zip(intents, sims, strict=True) if float(row.max()) >= gate.tau_rel]
    return len(covered) / len(intents), covered


def report_metrics(record: Mapping) -> dict:
    """The per-run numbers the aggregate needs, from an output record."""
    c = record.get("citations") or {}
    return {
        "id": str(record["id"]),
        "seed": int(record.get("seed") or 0),
        "coverage": record.get("coverage"),
        "citation_validity": (c["valid"] / c["total"]) if c.get("total") else None,
        "words": len(str(record.get("report") or "").split()),
        "questions": sum(t.get("verdict") != "stop" for t in record.get("turns") or []),
        "evidence": len(record.get("evidence") or []),
    }


def crossed_bootstrap(cells: Mapping[tuple[str, int], float], *, resamples: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Mean and percentile interval of values indexed by (request, seed), resampling requests and
    seeds independently (empty cells of a draw are skipped). (None, None, None) without values."""
    if not cells:
        return None, None, None
    requests = sorted({r for r, _ in cells})
    seeds = sorted({s for _, s in cells})
    grid = np.full((len(requests), len(seeds)), np.nan)
    for (r, s), v in cells.items():
        grid[requests.index(r), seeds.index(s)] = v
    mean = float(np.nanmean(grid))
    if resamples <= 0 or grid.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        rows = rng.integers(0, len(requests), size=len(requests))
        cols = rng.integers(0, len(seeds), size=len(seeds))
        draw = grid[np.ix_(rows, cols)]
        if not np.isnan(draw).all():
            means.append(float(np.nanmean(draw)))
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def aggregate(rows: Sequence[Mapping], *, resamples: int = 1000, seed: int = 0) -> dict:
    """Mean, 95% interval and count of every metric over per-run rows (``report_metrics``)."""
    out = {}
    for name in METRICS:
        cells = {(r["id"], r["seed"]): float(r[name]) for r in rows if r.get(name) is not None}
        mean, low, high = crossed_bootstrap(cells, resamples=resamples, seed=seed)
        out[name] = {"mean": _round(mean), "ci_low": _round(low), "ci_high": _round(high), "n": len(cells)}
    return out


def _round(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 6)


def _cell(m: Mapping | None, percent: bool) -> str:
    if not m or m.get("mean") is None:
        return "–"
    scale, unit, digits = (100.0, "%", 1) if percent else (1.0, "", 1)
    return (f"{m['mean'] * scale:.{digits}f}{unit} "
            f"[{m['ci_low'] * scale:.{digits}f}, {m['ci_high'] * scale:.{digits}f}]")


def comparison_table(reports: Sequence[Mapping]) -> str:
    """A Markdown table, one row per research report (``irtk research --report`` JSON): mean and
    95% interval of each metric, and the number of (request, seed) runs."""
    header = ["run", *(label for label, _ in METRICS.values()), "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for rep in reports:
        metrics = rep.get("metrics") or {}
        cells = [_cell(metrics.get(name), pct) for name, (_, pct) in METRICS.items()]
        lines.append("| " + " | ".join([str(rep.get("label") or rep.get("clarify")), *cells,
                                        str(rep.get("runs", ""))]) + " |")
    return "\n".join(lines) + "\n"
