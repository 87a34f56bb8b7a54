"""The simulation loop in-process: policies, verdicts, penalties, batching, limits, pass-through.

A bag-of-words embedder stands in for MiniLM (cosine = word overlap), so these tests run in
seconds; the real embedder is exercised by the slow tests.
"""

from __future__ import annotations

import io
import json

import pytest

from irtk.dialogue.simulate import SIMULATE_INPUT, SimulateConfig, _Parts, run_simulate
from irtk.errors import InputError, UsageError
from irtk.io import RecordReader, read_rows
from irtk.resumable import ResumableOutput

from .simulate_fixtures import (
    ASIA_USER,
    EUROPE,
    EUROPE_USER,
    GERMANY,
    TRAJECTORIES,
    BagOfWordsEmbedder,
    ScriptedBackend,
    jsonl,
)

SCRIPTED = "tests.dialogue.simulate_fixtures:ScriptedBackend"


@pytest.fixture(autouse=True)
def bow_embedder(monkeypatch):
    """Every gate built in these tests embeds with the bag-of-words stand-in."""
    from irtk.dialogue import gate

    embedder = BagOfWordsEmbedder()
    monkeypatch.setattr(gate.EmbeddingGate, "model", property(lambda self: embedder))
    ScriptedBackend.calls.clear()


def simulate(tmp_path, rows, **config):
    src = tmp_path / "traj.jsonl"
    src.write_text(jsonl(rows))
    out = tmp_path / "dialogs.jsonl"
    cfg = SimulateConfig(**{"summary": "template", "tau_rel": 0.2, "tau_rep": 0.8, **config})
    reader = RecordReader(src, record_type=SIMULATE_INPUT, batch_size=cfg.batch_size)
    with ResumableOutput(out) as writer:
        report = run_simulate(cfg, reader, writer)
    return read_rows(out), report


def test_oracle_asks_the_path_and_the_user_answers_from_the_intent(tmp_path):
    [d], report = simulate(tmp_path, [EUROPE_USER], policy="oracle")
    assert [t["question"].split(" Options:")[0] for t in d["turns"]] == [
        s["question"] for s in EUROPE_USER["path"]]
    first = d["turns"][0]
    assert first["verdict"] == "answered" and first["matched_intent"] == EUROPE
    assert first["answer"] == f"Europe. {EUROPE}"
    assert first["target_intents"] == EUROPE_USER["path"][0]["target_intents"]
    assert first["format"] == 1.0 and first["penalty"] == 0.0
    assert first["reward"] == pytest.approx(2 * first["content"] + 1.0, abs=1e-5)
    assert d["recall"] == 1.0 and d["precision"] == 1.0 and d["turns_used"] == 3
    assert d["stopped_early"] is True  # the path ran out before --max-turns 9
    assert d["summary"].startswith("Tell me about the battery market") and GERMANY in d["summary"]
    # Input columns pass through untouched.
    assert d["extra_column"] == {"kept": "battery/0"} and d["path"] == EUROPE_USER["path"]
    assert report["dialogues"] == 1 and report["metrics"]["recall"]["mean"] == 1.0


def test_baseline_ordering_on_hand_made_users(tmp_path):
    recall = {}
    for policy in ("oracle", "random", "none"):
        _, report = simulate(tmp_path, TRAJECTORIES, policy=policy, max_turns=2, seed=1)
        recall[policy] = report["metrics"]["recall"]["mean"]
    assert recall["oracle"] > recall["random"] > recall["none"] == 0.0


def test_none_policy_asks_nothing_and_summary_is_the_request(tmp_path):
    rows, _ = simulate(tmp_path, TRAJECTORIES, policy="none")
    for d in rows:
        assert d["turns"] == [] and d["precision"] is None and d["recall"] == 0.0
        assert d["summary"] == "Tell me about the battery market" and d["stopped_early"] is False


def test_repeated_question_gets_negative_feedback_and_growing_penalties(tmp_path):
    [d], _ = simulate(tmp_path, [EUROPE_USER], policy="model", backend=SCRIPTED, model="repeat",
                      max_turns=3, summary="llm")
    verdicts = [t["verdict"] for t in d["turns"]]
    assert verdicts == ["answered", "redundant", "redundant"]
    assert d["turns"][1]["answer"] == "You already asked me about this. It is not important to me."
    assert [t["penalty"] for t in d["turns"]] == [0.0, 2.0, 4.0]
    assert d["turns"][1]["reward"] == pytest.approx(1.0 - 2.0)
    assert d["redundant"] == 2 and d["precision"] == pytest.approx(1 / 3)
    # The summary agent saw only the kept exchange and answered.
    assert d["summary"] == "SUMMARY: battery market report"
    assert d["tokens_in"] > 0 and d["turns"][0]["prompt_tokens"] == 10


def test_irrelevant_question_gets_negative_feedback(tmp_path):
    row = {**EUROPE_USER, "intents": ["I want tables comparing chemistries."]}
    [d], _ = simulate(tmp_path, [row], policy="model", backend=SCRIPTED, model="repeat", max_turns=1)
    t = d["turns"][0]
    assert t["verdict"] == "irrelevant" and t["answer"] == "This is not important to me."
    assert t["matched_intent"] is None and t["penalty"] == 2.0 and t["reward"] == pytest.approx(-1.0)


def test_model_policy_advances_all_dialogues_in_one_call_per_turn(tmp_path):
    rows = [{**EUROPE_USER, "id": f"e{i}"} for i in range(5)]
    simulate(tmp_path, rows, policy="model", backend=SCRIPTED, model="repeat", max_turns=3, batch_size=5)
    # Three agent turns, each one call for all five dialogues (template user and summary: no calls).
    assert ScriptedBackend.calls == [5, 5, 5]


def test_allow_stop_ends_the_dialogue_and_is_counted(tmp_path):
    [d], report = simulate(tmp_path, [EUROPE_USER], policy="model", backend=SCRIPTED, model="stop",
                           max_turns=5, allow_stop=True)
    assert [t["verdict"] for t in d["turns"]] == ["answered", "stop"]
    assert d["turns_used"] == 1 and d["stopped_early"] is True
    assert report["metrics"]["stopped_early"]["mean"] == 1.0
    # Without --allow-stop the same reply is just a bad question.
    [d2], _ = simulate(tmp_path, [EUROPE_USER], policy="model", backend=SCRIPTED, model="stop", max_turns=2)
    assert [t["verdict"] for t in d2["turns"]] == ["answered", "irrelevant"]


def test_limit_and_skip_ids(tmp_path):
    rows = [{**EUROPE_USER, "id": f"e{i}"} for i in range(5)]
    out, report = simulate(tmp_path, rows, policy="oracle", limit=2, batch_size=2)
    assert [d["id"] for d in out] == ["e0", "e1"] and report["new_dialogues"] == 2
    out, report = simulate(tmp_path, rows, policy="oracle", skip_ids=frozenset({"e1", "e3"}))
    assert [d["id"] for d in out] == ["e0", "e2", "e4"] and report["skipped_inputs"] == 2


def test_random_policy_is_reproducible_and_never_repeats_a_node(tmp_path):
    a, _ = simulate(tmp_path, TRAJECTORIES, policy="random", seed=7)
    b, _ = simulate(tmp_path, TRAJECTORIES, policy="random", seed=7)
    assert [t["question"] for d in a for t in d["turns"]] == [t["question"] for d in b for t in d["turns"]]
    for d in a:
        questions = [t["question"] for t in d["turns"]]
        assert len(questions) == len(set(questions)) == 4  # every node of the graph, once


@pytest.mark.parametrize("row, field, message", [
    ({**ASIA_USER, "intents": []}, "intents", "no latent intents"),
    ({k: v for k, v in ASIA_USER.items() if k != "intents"}, "intents", "missing required field"),
    ({**ASIA_USER, "graph": {"root_node": "r", "start_node_ids": [], "nodes": {}}}, "graph.nodes", "empty graph"),
    ({k: v for k, v in ASIA_USER.items() if k != "graph"}, "graph", "missing the trajectory's C-DAG"),
    ({**ASIA_USER, "intents": "I want Asia"}, "intents", "expected array, got string"),
])
def test_bad_trajectories_name_row_and_field(tmp_path, row, field, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(jsonl([EUROPE_USER, row]))
    reader = RecordReader(src, record_type=SIMULATE_INPUT)
    with pytest.raises(InputError) as e:
        run_simulate(SimulateConfig(policy="oracle", summary="template"), reader, io.StringIO())
    assert e.value.row == 2 and e.value.field == field and message in str(e.value)
    assert str(src) in str(e.value)


def test_config_is_checked():
    with pytest.raises(UsageError, match="--policy"):
        SimulateConfig(policy="smart")
    with pytest.raises(UsageError, match="--tau-rel"):
        SimulateConfig(tau_rel=1.5)
    with pytest.raises(UsageError, match="--user"):
        SimulateConfig(user="robot")


def test_llm_user_and_summary_share_the_policy_backend(tmp_path):
    cfg = SimulateConfig(policy="model", backend=SCRIPTED, model="repeat", user="llm", summary="llm")
    parts = _Parts(cfg)
    assert parts.policy.backend is parts.user.backend is parts.summarizer.backend
    [d], _ = simulate(tmp_path, [EUROPE_USER], policy="model", backend=SCRIPTED, model="repeat",
                      user="llm", max_turns=1)
    # The scripted backend answers the user's turn with its question text: a real LLM reply path.
    assert d["turns"][0]["answer"].startswith("Question:")
    json.dumps(d)  # JSON-clean record
