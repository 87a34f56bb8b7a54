"""Calibrate the simulated user's gate from C-DAGs, split by seed (``irtk calibrate``).

Hand-labelled pairs written alongside the thresholds they pick do not carry over, so the labelled
pairs come from the graphs themselves:

- *relevance*: every node of a trajectory's graph, asked as the expert dialogues ask it (question
  and options) and reworded (the bare question; its options alone as a choice question), against
  that user's latent intents: a node on the user's path should be answered, a node on a branch the
  user did not take is irrelevant;
- *repetition*: two renderings of the same node (a reworded repeat) are redundant; two different
  nodes of the same graph in the same rendering are not;
- *restatement*: the request turned into a question ("Is your question: <request>?") restates it;
  the graph's own questions about that request do not.

Seeds (a trajectory's ``seed_id``, else its id before '/') are split into a calibration part and a
held-out part; each threshold is the one with the best balanced accuracy on the calibration part
(the widest gap between neighbouring scores on ties), and every figure reported is measured on the
held-out part only — for both gates (``path`` and ``embedding``) and for the paper's thresholds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from irtk.config import require, setting
from irtk.dialogue.gate import PAPER_THRESHOLDS, EmbeddingGate, Thresholds, node_forms
from irtk.dialogue.metrics import seed_of
from irtk.models import DEFAULT_EMBEDDER

_RESTATEMENTS = (
    "Is your question: {q}?",
    "Could you tell me more about your request, {q}?",
    "What would you like to know about \"{q}\"?",
)


@dataclass
class CalibrateConfig:
    """Settings of a calibration run."""

    embedder: str = setting(DEFAULT_EMBEDDER, "Sentence embedder to calibrate: a registry name, path or hub id.")
    heldout: float = setting(0.5, "Fraction of seeds held out for the reported figures.")
    seed: int = setting(0, "Seed of the calibration / held-out split of the seeds.")

    def __post_init__(self) -> None:
        require(0.0 < self.heldout < 1.0, f"--heldout is a fraction in (0, 1), got {self.heldout}")


def split_seeds(seeds: Iterable[str], heldout: float = 0.5, seed: int = 0) -> tuple[list[str], list[str]]:
    """(calibration, held-out) seeds: a hash order, so adding seeds moves few of the others."""
    ordered = sorted(set(seeds), key=lambda s: (hashlib.sha1(f"{seed}:{s}".encode()).hexdigest(), s))
    n_held = min(max(1, round(len(ordered) * heldout)), len(ordered) - 1) if len(ordered) > 1 else 0
    return sorted(ordered[n_held:]), sorted(ordered[:n_held])


def _options_question(node: Mapping) -> str | None:
    options = [str(o.get("text") or "") for o in node.get("options") or []]
    if len(options) < 2:
        return None
    return f"Would you prefer {', '.join(options[:-1])} or {options[-1]}?"


def renderings(node: Mapping) -> dict[str, str]:
    """A node as the oracle asks it (``asked``) and reworded (``bare`` question, ``options`` only)."""
    forms = node_forms(node)
    out = {"asked": forms[0], "bare": forms[-1]}
    options = _options_question(node)
    if options:
        out["options"] = options
    return out


@dataclass(frozen=True)
class RelevancePair:
    seed: str
    form: str  # asked | reworded
    question: str
    intents: tuple[str, ...]
    on_path: bool
    graph: Mapping = field(compare=False)
    path: Sequence[Mapping] = field(compare=False)


@dataclass(frozen=True)
class TextPair:
    seed: str
    a: str
    b: str
    positive: bool  # redundant / restates
    graph: Mapping | None = field(default=None, compare=False, repr=False)  # repetition: both questions' C-DAG


@dataclass
class Pairs:
    relevance: list[RelevancePair] = field(default_factory=list)
    repetition: list[TextPair] = field(default_factory=list)
    restatement: list[TextPair] = field(default_factory=list)

    def of(self, seeds: set[str]) -> Pairs:
        return Pairs(*([p for p in getattr(self, k) if p.seed in seeds]
                       for k in ("relevance", "repetition", "restatement")))

    def counts(self) -> dict:
        return {k: {"positive": sum(self._positive(p) for p in getattr(self, k)),
                    "negative": sum(not self._positive(p) for p in getattr(self, k))}
                for k in ("relevance", "repetition", "restatement")}

    @staticmethod
    def _positive(p: Any) -> bool:
        return p.on_path if isinstance(p, RelevancePair) else p.positive


def derive_pairs(rows: Iterable[Mapping]) -> Pairs:
    """Labelled gate pairs from trajectories (graph, path, intents, simple_query)."""
    pairs = Pairs()
    graphs_done: set[tuple[str, str]] = set()
    for row in rows:
        seed = seed_of(row)
        graph = row.get("graph") or {}
        nodes = graph.get("nodes") or {}
        path = list(row.get("path") or [])
        intents = tuple(str(i) for i in row.get("intents") or [])
        on_path = {s.get("node_id") for s in path}
        for node_id in sorted(nodes):
            forms = renderings(nodes[node_id])
            for form, text in forms.items():
                pairs.relevance.append(RelevancePair(seed, "asked" if form == "asked" else "reworded", text,
                                                     intents, node_id in on_path, graph, path))
        key = (seed, json.dumps(graph, sort_keys=True))
        if key in graphs_done:
            continue  # trajectories of one graph share its repetition and restatement pairs
        graphs_done.add(key)
        forms = {n: renderings(nodes[n]) for n in sorted(nodes)}
        ids = list(forms)
        for i, n in enumerate(ids):
            texts = sorted(forms[n].values())
            # A reworded repeat: the same node in two renderings.
            pairs.repetition.extend(TextPair(seed, a, b, True, graph) for k, a in enumerate(texts)
                                    for b in texts[k + 1:])
            # A different question of the same graph in the same rendering: a clarifier asks all
            # its questions in one format, and the shared format must not make them repeats.
            pairs.repetition.extend(TextPair(seed, forms[n][f], forms[m][f], False, graph) for m in ids[i + 1:]
                                    for f in sorted(forms[n]) if f in forms[m])
        request = str(row.get("simple_query") or "").strip()
        if request:
            q = request.rstrip("?.! ")
            for template in _RESTATEMENTS:
                pairs.restatement.append(TextPair(seed, template.format(q=q), request, True))
            for fn in forms.values():
                for text in (fn["asked"], fn["bare"]):
                    pairs.restatement.append(TextPair(seed, text, request, False))
    return pairs


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Mean of the rates of positives above and negatives at or below ``threshold``."""
    pos, neg = scores[labels], scores[~labels]
    rates = [float(np.mean(pos > threshold))] if pos.size else []
    rates += [float(np.mean(neg <= threshold))] if neg.size else []
    return float(np.mean(rates)) if rates else float("nan")


def pick_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold (positives above it) with the best balanced accuracy; on ties the middle of
    the widest gap between neighbouring scores. Returns (threshold, balanced accuracy)."""
    points = np.unique(scores)
    if points.size < 2:
        return float(points[0]) if points.size else 0.5, float("nan")
    candidates = (points[:-1] + points[1:]) / 2
    gaps = points[1:] - points[:-1]
    best = max(range(len(candidates)),
               key=lambda i: (balanced_accuracy(scores, labels, candidates[i]), gaps[i], -i))
    return float(candidates[best]), balanced_accuracy(scores, labels, candidates[best])


def _text_scores(gate: EmbeddingGate, pairs: Sequence[TextPair]) -> tuple[np.ndarray, np.ndarray]:
    gate.prefetch([t for p in pairs for t in (p.a, p.b)])
    scores = np.array([gate.best(p.a, [p.b])[0] for p in pairs], dtype=np.float64)
    return scores, np.array([p.positive for p in pairs], dtype=bool)


def _relevance_scores(gate: EmbeddingGate, pairs: Sequence[RelevancePair]) -> tuple[np.ndarray, np.ndarray]:
    gate.prefetch([t for p in pairs for t in (p.question, *p.intents)])
    scores = np.array([gate.best(p.question, list(p.intents))[0] for p in pairs], dtype=np.float64)
    return scores, np.array([p.on_path for p in pairs], dtype=bool)


def _rates(answered: np.ndarray, on_path: np.ndarray) -> dict:
    tpr = float(np.mean(answered[on_path])) if on_path.any() else float("nan")
    fpr = float(np.mean(answered[~on_path])) if (~on_path).any() else float("nan")
    return {"balanced_accuracy": round(0.5 * (tpr + 1.0 - fpr), 4), "answered_on_path": round(tpr, 4),
            "answered_off_branch": round(fpr, 4), "n_on_path": int(on_path.sum()),
            "n_off_branch": int((~on_path).sum())}


def evaluate(gate: EmbeddingGate, pairs: Pairs) -> dict:
    """Held-out figures of ``gate``'s thresholds: relevance per gate mode and rendering,
    repetition and restatement (balanced accuracy and both error rates)."""
    out: dict[str, Any] = {"relevance": {}}
    for mode in ("path", "embedding"):
        g = gate.configured(mode=mode)
        out["relevance"][mode] = {}
        for form in ("asked", "reworded"):
            sub = [p for p in pairs.relevance if p.form == form]
            g.prefetch([t for p in sub for t in g.texts_for(p.question, [], p.intents, None, p.graph)])
            answered = np.array([g.relevance(p.question, list(p.intents), graph=p.graph, path=p.path).verdict
                                 == "answered" for p in sub], dtype=bool)
            out["relevance"][mode][form] = _rates(answered, np.array([p.on_path for p in sub], dtype=bool))
    for kind, tau in (("repetition", gate.tau_rep), ("restatement", gate.tau_req)):
        scores, labels = _text_scores(gate, getattr(pairs, kind))
        out[kind] = _flag_rates(scores > tau, labels)
    # The path gate's repetition test: the same node asked twice (the cosine test as fallback).
    path_gate = gate.configured(mode="path")
    flagged = np.array([path_gate.redundancy(p.a, [p.b], p.graph)[0] for p in pairs.repetition], dtype=bool)
    out["repetition_path"] = _flag_rates(flagged, np.array([p.positive for p in pairs.repetition], dtype=bool))
    return out


def _flag_rates(flagged: np.ndarray, labels: np.ndarray) -> dict:
    tpr = float(np.mean(flagged[labels])) if labels.any() else float("nan")
    fpr = float(np.mean(flagged[~labels])) if (~labels).any() else float("nan")
    return {"balanced_accuracy": round(0.5 * (tpr + 1.0 - fpr), 4),
            "flagged_positive": round(tpr, 4) if labels.any() else None,
            "flagged_negative": round(fpr, 4) if (~labels).any() else None,
            "n_positive": int(labels.sum()), "n_negative": int((~labels).sum())}


def calibrate(rows: Iterable[Mapping], config: CalibrateConfig, *, embedder: Any = None,
              source: str | None = None) -> Thresholds:
    """Thresholds picked on the calibration seeds, with held-out figures (calibrated and the
    paper's values) in ``Thresholds.calibration``. ``embedder``: an already loaded model."""
    rows = list(rows)
    pairs = derive_pairs(rows)
    calib_seeds, held_seeds = split_seeds((seed_of(r) for r in rows), config.heldout, config.seed)
    require(bool(calib_seeds) and bool(held_seeds), "calibration needs trajectories from at least two seeds")
    calib, held = pairs.of(set(calib_seeds)), pairs.of(set(held_seeds))
    gate = EmbeddingGate(embedder if embedder is not None else config.embedder, thresholds=PAPER_THRESHOLDS,
                         mode="embedding")
    # Relevance is picked on the oracle's renderings: the questions a clarifier is expected to ask.
    asked = [p for p in calib.relevance if p.form == "asked"]
    tau_rel, acc_rel = pick_threshold(*_relevance_scores(gate, asked))
    tau_rep, acc_rep = pick_threshold(*_text_scores(gate, calib.repetition))
    tau_req, acc_req = pick_threshold(*_text_scores(gate, calib.restatement))
    name = config.embedder if isinstance(config.embedder, str) else None
    calibration = {
        "method": "derived from C-DAGs, split by seed; best balanced accuracy on the calibration seeds",
        "source": source, "split_seed": config.seed, "heldout_fraction": config.heldout,
        "calibration_seeds": calib_seeds, "heldout_seeds": held_seeds,
        "pairs": {"calibration": calib.counts(), "heldout": held.counts()},
        "calibration_balanced_accuracy": {"relevance": round(acc_rel, 4), "repetition": round(acc_rep, 4),
                                          "restatement": round(acc_req, 4)},
    }
    thresholds = Thresholds(round(tau_rel, 4), round(tau_rep, 4), round(tau_req, 4), embedder=name,
                            source="irtk calibrate", calibration=calibration)
    calibration["heldout"] = evaluate(gate.configured(thresholds=thresholds), held)
    calibration["heldout_paper_thresholds"] = evaluate(gate.configured(thresholds=PAPER_THRESHOLDS), held)
    return thresholds


def summary_table(thresholds: Thresholds) -> object:
    """A rich Table of the held-out figures, calibrated next to the paper's thresholds.

    Relevance rows show "answered on path / answered off branch"; repetition and restatement rows
    show "flagged positives / flagged negatives"."""
    from rich.table import Table

    cal = thresholds.calibration
    t = Table(title=f"held-out gate figures: {thresholds.embedder}, {len(cal['heldout_seeds'])} seeds",
              title_justify="left")
    for col in ("check", "tau", "bal.acc", "pos/neg", "paper tau", "bal.acc", "pos/neg"):
        t.add_column(col, justify="left" if col == "check" else "right")
    ours, paper = cal["heldout"], cal["heldout_paper_thresholds"]

    def pct(m: Mapping, a: str, b: str) -> str:
        return f"{m[a]:.1%}/{m[b]:.1%}"

    for mode in ("path", "embedding"):
        for form in ("asked", "reworded"):
            a, b = ours["relevance"][mode][form], paper["relevance"][mode][form]
            t.add_row(f"relevance {mode} {form}", f"{thresholds.tau_rel:.3f}", f"{a['balanced_accuracy']:.3f}",
                      pct(a, "answered_on_path", "answered_off_branch"), f"{PAPER_THRESHOLDS.tau_rel:.2f}",
                      f"{b['balanced_accuracy']:.3f}", pct(b, "answered_on_path", "answered_off_branch"))
    for kind, label, tau, ptau in (
            ("repetition_path", "repetition path", thresholds.tau_rep, PAPER_THRESHOLDS.tau_rep),
            ("repetition", "repetition embedding", thresholds.tau_rep, PAPER_THRESHOLDS.tau_rep),
            ("restatement", "restatement", thresholds.tau_req, PAPER_THRESHOLDS.tau_req)):
        if kind not in ours:  # a thresholds file written before the path gate's repetition row
            continue
        a, b = ours[kind], paper[kind]
        t.add_row(label, f"{tau:.3f}", f"{a['balanced_accuracy']:.3f}", pct(a, "flagged_positive", "flagged_negative"),
                  f"{ptau:.2f}", f"{b['balanced_accuracy']:.3f}", pct(b, "flagged_positive", "flagged_negative"))
    return t
