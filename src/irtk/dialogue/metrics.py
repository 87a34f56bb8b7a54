"""Intent metrics of simulated dialogues, per dialogue and aggregated with seed-bootstrap CIs.

Per dialogue (IntentRL, "Evaluation", with precision and recall used as in the paper's analysis):

- precision = questions the user answered (matched to a latent intent) / questions asked;
  undefined (None) when no question was asked;
- recall = distinct latent intents matched / latent intents;
- F1 = their harmonic mean per dialogue (0 when both are 0; precision None counts as 0 here);
- online quality = mean over the policy's own asked questions of 2 * content + format (max 3).
  This is *not* the paper's offline Quality Score, which scores a model's next question after
  each *expert* prefix (``offline_quality_score``); the two are reported under their own names.

Aggregates (``aggregate``): means over dialogues, plus the paper's F1 — 2PR/(P+R) of the mean
precision and the mean recall (``f1_paper``), which is not the mean of per-dialogue F1 (``f1``).
The 95 % intervals are percentile bootstraps that resample *seeds* (graphs), each with all of its
dialogues: dialogues grown from one C-DAG are not independent, and resampling them as if they
were gives intervals that are too narrow. A dialogue's seed is its ``seed_id``, else its id up to
the first '/'. Seeded, so a report is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from irtk.dialogue.gate import ANSWERED, IRRELEVANT, REDUNDANT, RESTATES, STOP

# name -> label, in table order (f1_paper is computed from the precision and recall means)
AGGREGATED = {
    "precision": "intent precision",
    "recall": "intent recall",
    "f1_paper": "intent F1 (paper: of mean P, R)",
    "f1": "intent F1 (mean per dialogue)",
    "quality": "online quality (own turns)",
    "redundant": "redundant questions",
    "restates": "request restated",
    "irrelevant": "irrelevant questions",
    "turns_used": "questions asked",
    "stopped_early": "stopped early",
    "tokens_in": "tokens in",
    "tokens_out": "tokens out",
}
PERCENT = {"precision", "recall", "f1", "f1_paper", "stopped_early"}
# Per-dialogue values the aggregate reads (f1_paper has none: it is derived).
PER_DIALOGUE = [name for name in AGGREGATED if name != "f1_paper"]


def seed_of(row: Mapping) -> str:
    """The seed (graph) a trajectory or dialogue comes from: ``seed_id``, else its id up to '/'."""
    return str(row.get("seed_id") or row.get("seed") or str(row.get("id", "")).split("/")[0])


def paper_f1(precision: float, recall: float) -> float:
    """IntentRL's F1: the harmonic mean of mean precision and mean recall (0 when both are 0)."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


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


def seed_bootstrap(rows: Sequence[Mapping], *, confidence: float = 0.95, resamples: int = 1000,
                   seed: int = 0) -> dict:
    """Mean, CI and count of every aggregated metric, resampling seeds (``seed_of``) with all
    their dialogues. A metric's mean over a resample is its total over the drawn seeds'
    dialogues divided by their count (dialogues where it is undefined do not count)."""
    seeds = sorted({seed_of(r) for r in rows})
    index = {s: i for i, s in enumerate(seeds)}
    sums = np.zeros((len(seeds), len(PER_DIALOGUE)))
    counts = np.zeros((len(seeds), len(PER_DIALOGUE)))
    for r in rows:
        i = index[seed_of(r)]
        for j, name in enumerate(PER_DIALOGUE):
            if r.get(name) is not None:
                sums[i, j] += float(r[name])
                counts[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.sum(axis=0) / counts.sum(axis=0)
        if len(seeds) > 1 and resamples > 0:
            picks = np.random.default_rng(seed).integers(0, len(seeds), size=(resamples, len(seeds)))
            draws = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)  # (resamples, metrics)
        else:
            draws = mean[None, :]
    p, r = PER_DIALOGUE.index("precision"), PER_DIALOGUE.index("recall")
    f1_draws = np.array([paper_f1(a, b) if not (np.isnan(a) or np.isnan(b)) else np.nan
                         for a, b in zip(draws[:, p], draws[:, r], strict=True)])
    f1_mean = paper_f1(mean[p], mean[r]) if not (np.isnan(mean[p]) or np.isnan(mean[r])) else np.nan
    alpha = (1.0 - confidence) / 2
    out = {}
    for name in AGGREGATED:
        if name == "f1_paper":
            m, d, n = f1_mean, f1_draws, int(min(counts[:, p].sum(), counts[:, r].sum()))
        else:
            j = PER_DIALOGUE.index(name)
            m, d, n = mean[j], draws[:, j], int(counts[:, j].sum())
        d = d[~np.isnan(d)]
        low, high = (np.quantile(d, [alpha, 1.0 - alpha]) if d.size else (np.nan, np.nan))
        col = PER_DIALOGUE.index("precision" if name == "f1_paper" else name)
        out[name] = {"mean": _finite(float(m)), "ci_low": _finite(float(low)), "ci_high": _finite(float(high)),
                     "n": n, "seeds": int((counts[:, col] > 0).sum())}
    return out


def aggregate(rows: Sequence[Mapping], *, confidence: float = 0.95, resamples: int = 1000,
              seed: int = 0) -> dict:
    """Every aggregated metric over dialogue rows, with seed-bootstrap intervals
    (``seed_bootstrap``)."""
    return seed_bootstrap(rows, confidence=confidence, resamples=resamples, seed=seed)


def offline_quality_score(scores: Sequence[float]) -> float | None:
    """The paper's offline Quality Score: the mean of ``2 * R_con + R_fmt`` (max 3) over a model's
    next question after each *expert* prefix (Stage I's turn-level samples), e.g. the values of
    ``IntentRewards.quality_reward`` on those samples. None without samples."""
    return float(np.mean(scores)) if len(scores) else None


def _finite(x: float) -> float | None:
    return None if np.isnan(x) else round(x, 6)


def metrics_table(report: Mapping, title: str = "simulate") -> object:
    """A rich Table of an aggregate (``aggregate``'s output) for the stderr console."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("95% CI (seeds)", justify="right")
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
