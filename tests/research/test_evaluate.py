"""Evaluation metrics on hand-made reports, the request/seed bootstrap and the table."""

from __future__ import annotations

import numpy as np
import pytest

from irtk.dialogue.gate import EmbeddingGate
from irtk.research.evaluate import (
    aggregate,
    comparison_table,
    crossed_bootstrap,
    intent_coverage,
    report_metrics,
)

TREE = "I want the report to cover copying directory trees."
TEMP = "I want the report to cover temporary directories."


class Keyed:
    """Hand-chosen unit vectors per text: cosines are exact."""

    def __init__(self, vectors):
        self.vectors = {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in vectors.items()}

    def get_sentence_embedding_dimension(self):
        return 3

    def encode(self, texts, **_):
        return np.stack([self.vectors[t] for t in texts])


def gate():
    return EmbeddingGate(Keyed({
        TREE: [1, 0, 0], TEMP: [0, 1, 0],
        "Trees are copied recursively.": [0.9, 0.1, 0],  # cos to TREE 0.99
        "Temporary folders exist.": [0.3, 0.3, 0.9],  # cos to TEMP 0.30: below tau_rel
        "Temporary folders are made.": [0, 0.6, 0.4],  # cos to TEMP 0.83
    }), tau_rel=0.46)


def test_coverage_counts_intents_addressed_by_cited_sentences():
    report = "# Temporary directories\n\nTrees are copied recursively [a]. Temporary folders exist [b]."
    assert intent_coverage(report, ["a", "b"], [TREE, TEMP], gate()) == (0.5, [TREE])
    full = report + " Temporary folders are made [b]."
    assert intent_coverage(full, ["a", "b"], [TREE, TEMP], gate()) == (1.0, [TREE, TEMP])
    # The same sentence without a valid citation reports no evidence.
    assert intent_coverage("Trees are copied recursively [zzz].", ["a"], [TREE], gate()) == (0.0, [])
    assert intent_coverage(report, ["a"], [], gate()) == (None, [])


def test_report_metrics_of_a_record():
    record = {"id": "r", "seed": 2, "coverage": 0.5, "report": "one two three [a]",
              "citations": {"total": 4, "valid": 3, "invalid": 1, "invalid_ids": ["x"]},
              "turns": [{"verdict": "answered"}, {"verdict": "stop"}], "evidence": [{}, {}]}
    assert report_metrics(record) == {"id": "r", "seed": 2, "coverage": 0.5, "citation_validity": 0.75,
                                      "words": 4, "questions": 1, "evidence": 2}
    assert report_metrics({**record, "citations": {"total": 0, "valid": 0}})["citation_validity"] is None


def test_crossed_bootstrap_resamples_requests_and_seeds():
    same = {(r, s): 0.5 for r in "abc" for s in (0, 1)}
    assert crossed_bootstrap(same, seed=0) == (0.5, 0.5, 0.5)
    # A seed effect alone (requests identical) still widens the interval: seeds are resampled.
    seed_effect = {(r, s): float(s) for r in "abcd" for s in range(4)}
    mean, low, high = crossed_bootstrap(seed_effect, resamples=500, seed=0)
    assert mean == pytest.approx(1.5) and low < 1.0 and high > 2.0
    # Reproducible for a given seed; empty input has no mean.
    assert crossed_bootstrap(seed_effect, resamples=200, seed=1) == crossed_bootstrap(seed_effect, resamples=200, seed=1)
    assert crossed_bootstrap({}) == (None, None, None)


def test_aggregate_and_table():
    rows = [{"id": r, "seed": s, "coverage": c, "citation_validity": 1.0, "words": 100, "questions": 3,
             "evidence": 8} for r, c in (("a", 0.2), ("b", 0.6)) for s in (0, 1)]
    agg = aggregate(rows, resamples=200)
    assert agg["coverage"]["mean"] == pytest.approx(0.4) and agg["coverage"]["n"] == 4
    table = comparison_table([{"label": "none", "metrics": agg, "runs": 4},
                              {"label": "simulate", "metrics": {}, "runs": 0}])
    lines = table.splitlines()
    assert lines[0].startswith("| run | intent coverage | citation validity")
    assert lines[2].startswith("| none | 40.0% [") and lines[2].endswith("| 4 |")
    assert lines[3] == "| simulate | – | – | – | – | – | 0 |"
