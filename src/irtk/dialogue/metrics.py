"""Intent metrics of simulated dialogues, per dialogue and aggregated with bootstrap CIs.

Per dialogue (IntentRL, "Evaluation", with precision and recall used as in the paper's analysis):

- precision = questions the user answered (matched to a latent intent) / questions asked;
  undefined (None) when no question was asked;
- recall = distinct latent intents matched / latent intents;
- F1 = their harmonic mean (0 when both are 0; precision None counts as 0 here);
- quality = mean over asked questions of 2 * content + format (max 3), None without questions.

Aggregates are means over dialogues with percentile-bootstrap 95 % confidence intervals
(seeded, so a report is reproducible).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from irtk.dialogue.gate import ANSWERED, IRRELEVANT, REDUNDANT, RESTATES, STOP

# name -> label, in table order
AGGREGATED = {
    "precision": "intent precision",
    "recall": "intent recall",
    "f1": "intent F1",
    "quality": "quality score",
    "redundant": "redundant questions",
    "restates": "request restated",
    "irrelevant": "irrelevant questions",
    "turns_used": "questions asked",
    "stopped_early": "stopped early",
    "tokens_in": "tokens in",
    "tokens_out": "tokens out",
}
PERCENT = {"precision", "recall", "f1", "stopped_early"}


def dialogue_metrics(turns: Sequence[Mapping], intents: Sequence[str]) -> dict:
    """Precision, recall, F1, quality and verdict counts for one dialogue's turns."""
    asked = [t for t in turns if t.get("verdict") != STOP]
    answered = [t for t in asked if t.get("verdict") == ANSWERED]
    known = set(intents)
    matched = list(dict.fromkeys(t["matched_intent"] for t in answered if t.get("matched_intent") in known))
    precision = len(answered) / len(asked) if asked else None
    recall = len(matched) / len(known) if known else 0.0
    p = precision or 0.0
    f1 = 2 * p * recall / (p + recall) if p + recall > 0 else 0.0
    quality = (sum(2.0 * (t.get("content") or 0.0) + (t.get("format") or 0.0) for t in asked) / len(asked)
               if asked else None)
    return {
        "matched_intents": matched,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "quality": quality,
        "redundant": sum(t.get("verdict") == REDUNDANT for t in asked),
        "restates": sum(t.get("verdict") == RESTATES for t in asked),
        "irrelevant": sum(t.get("verdict") == IRRELEVANT for t in asked),
        "turns_used": len(asked),
    }


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval; (nan, nan, nan) for no values."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size == 1 or resamples <= 0:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def aggregate(rows: Sequence[Mapping], *, confidence: float = 0.95, resamples: int = 1000,
              seed: int = 0) -> dict:
    """Mean, CI bounds and count of every aggregated metric over dialogue rows."""
    out = {}
    for name in AGGREGATED:
        values = [float(r[name]) for r in rows if r.get(name) is not None]
        mean, low, high = bootstrap_ci(values, confidence=confidence, resamples=resamples, seed=seed)
        out[name] = {"mean": _finite(mean), "ci_low": _finite(low), "ci_high": _finite(high),
                     "n": len(values)}
    return out


def _finite(x: float) -> float | None:
    return None if np.isnan(x) else round(x, 6)


def metrics_table(report: Mapping, title: str = "simulate") -> object:
    """A rich Table of an aggregate (``aggregate``'s output) for the stderr console."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("n", justify="right")
    for name, label in AGGREGATED.items():
        m = report.get(name)
        if not m:
            continue
        scale, unit = (100.0, "%") if name in PERCENT else (1.0, "")
        if m["mean"] is None:
            table.add_row(label, "-", "-", str(m["n"]))
            continue
        table.add_row(label, f"{m['mean'] * scale:.2f}{unit}",
                      f"[{m['ci_low'] * scale:.2f}, {m['ci_high'] * scale:.2f}]", str(m["n"]))
    return table
