"""The simulation loop in-process: policies, verdicts, penalties, batching, limits, pass-through.

A bag-of-words embedder stands in for MiniLM (cosine = word overlap), so these tests run in
seconds; the real embedder is exercised by the slow tests.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace

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
    reader = RecordReader(src, record_type=SIMULATE_INPUT, batch_size=2)  # batches unlike the pool
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


def test_continuous_batching_refills_slots_and_keeps_input_order(tmp_path):
    """Dialogues that end leave the batch at once and waiting ones join; rows keep input order."""
    from irtk.dialogue.episode import Episode
    from irtk.dialogue.simulate import play

    # Oracle dialogues end when their path runs out: paths of 1 and 3 questions, interleaved.
    rows = [{**EUROPE_USER, "id": f"e{i}", "path": EUROPE_USER["path"][:1 if i % 2 else 3]} for i in range(6)]
    parts = _Parts(SimulateConfig(policy="oracle", summary="template", tau_rel=0.2, tau_rep=0.8))
    calls, summaries = [], []
    ask, summarize = parts.policy.ask, parts.summarizer.summarize
    parts.policy.ask = lambda eps, turns: calls.append(sorted(turns)) or ask(eps, turns)
    parts.summarizer.summarize = lambda eps: summaries.append(len(eps)) or summarize(eps)
    done = list(play((Episode(dict(r)) for r in rows), parts, max_turns=9, slots=3))
    assert [e.id for e in done] == [r["id"] for r in rows]
    assert [len(e.turns) for e in done] == [3, 1, 3, 1, 3, 1]
    # Every step but the last ones asks three dialogues, at whatever turn each has reached.
    # e1 finds nothing left to ask at its turn 2 and leaves; e3 takes its place at turn 1.
    assert [len(c) for c in calls[:4]] == [3, 3, 3, 3] and calls[2] == [1, 3, 3]
    # Ended dialogues are summarised three at a time (the last ones once the input has run out).
    assert sum(summaries) == 6 and max(summaries) <= 3


def test_a_dialogue_may_start_from_played_turns(tmp_path):
    from irtk.dialogue.episode import Episode
    from irtk.dialogue.simulate import simulate_batch

    parts = _Parts(SimulateConfig(policy="oracle", summary="template", tau_rel=0.2, tau_rep=0.8))
    fresh, resumed = Episode(dict(EUROPE_USER)), Episode(dict(EUROPE_USER))
    simulate_batch([fresh], parts, 1)
    resumed.turns = [dict(fresh.turns[0])]
    simulate_batch([resumed, Episode(dict(ASIA_USER))], parts, 2)
    assert [t["turn"] for t in resumed.turns] == [1, 2]  # joined at its second turn
    assert resumed.turns[1]["question"].startswith(EUROPE_USER["path"][1]["question"])


def play_hf(tmp_path, rows, backend, model, **config):
    """Dialogues of the model policy on a loaded hf backend, greedy, with the LLM summary agent."""
    cfg = SimulateConfig(**{"policy": "model", "backend": "hf", "model": model, "summary": "llm",
                            "temperature": 0.0, "max_turns": 3, "max_tokens": 10, "summary_max_tokens": 10,
                            "tau_rel": 0.2, "tau_rep": 0.8, **config})
    src = tmp_path / "traj.jsonl"
    src.write_text(jsonl(rows))
    out = tmp_path / f"dialogs-{id(backend)}.jsonl"
    parts = _Parts(cfg, backends={model: backend})
    with ResumableOutput(out) as writer:
        run_simulate(cfg, RecordReader(src, record_type=SIMULATE_INPUT, batch_size=2), writer, parts=parts)
    return read_rows(out)


def test_streamed_runs_keep_only_the_batch_and_its_successors_in_flight(tiny_llama):
    """Where the policy's turns are streamed (hf, template user), a run plays the batch plus the
    rows it frees before waiting ones join (``stream_size``); turn by turn (an LLM user), twice
    the batch per call (``call_size``); a ``call_size`` the user gives sets both."""
    from irtk.generation import get_backend

    backend = get_backend("hf", tiny_llama, dtype="float32", batch_size=16)
    assert (backend.stream_size, backend.call_size) == (18, 32)
    cfg = SimulateConfig(policy="model", backend="hf", model=tiny_llama, summary="llm", tau_rel=0.2, tau_rep=0.8)
    streamed = _Parts(cfg, backends={tiny_llama: backend})
    assert streamed.streams and streamed.slots() == 18
    in_turns = _Parts(replace(cfg, user="llm"), backends={tiny_llama: backend})
    assert not in_turns.streams and in_turns.slots() == 32
    assert get_backend("hf", tiny_llama, dtype="float32", batch_size=16, call_size=5).stream_size == 5
    assert get_backend("hf", tiny_llama, dtype="float32", batch_size=16, lockstep=True).stream_size == 16


def test_a_summary_in_the_stream_holds_its_episodes_slot(tmp_path, tiny_llama, monkeypatch):
    """Summaries written in the stream count against the slots until they are written: the
    stream never holds more rows (turns and summaries, waiting or decoding) than there are
    slots, and every dialogue still gets its summary."""
    from irtk.generation import get_backend
    from irtk.generation.hf import ChatStream

    rows = [{**r, "id": f"{r['id']}-{i}"} for i in range(4) for r in TRAJECTORIES]
    outstanding, peak, summaries = [0], [0], [0]
    submit, iterate = ChatStream.submit, ChatStream.__iter__

    def counted_submit(self, key, conversation, **kw):  # noqa: ANN001, ANN202
        outstanding[0] += 1
        peak[0] = max(peak[0], outstanding[0])
        summaries[0] += type(key).__name__ == "_SummaryOf"
        return submit(self, key, conversation, **kw)

    def counted_iter(self):  # noqa: ANN001, ANN202
        for finished in iterate(self):
            outstanding[0] -= len(finished)
            yield finished

    monkeypatch.setattr(ChatStream, "submit", counted_submit)
    monkeypatch.setattr(ChatStream, "__iter__", counted_iter)
    backend = get_backend("hf", tiny_llama, dtype="float32", batch_size=2)
    got = play_hf(tmp_path, rows, backend, tiny_llama, batch_size=3, tau_rel=0.0, tau_rep=1.0)
    assert [d["id"] for d in got] == [r["id"] for r in rows]
    assert summaries[0] == len(rows) and all(d["summary"] for d in got)
    assert peak[0] == 3 and outstanding[0] == 0


def test_turn_cache_and_continuous_batching_change_no_dialogue(tmp_path, tiny_llama, monkeypatch):
    """Greedy fp32: the cached, continuously batched loop plays the uncached lockstep dialogues."""
    from irtk.generation import get_backend

    rows = [{**r, "id": f"{r['id']}-{i}"} for i in range(3) for r in TRAJECTORIES]
    plain = get_backend("hf", tiny_llama, dtype="float32", prefix_cache=False, lockstep=True)
    cached = get_backend("hf", tiny_llama, dtype="float32")
    served = []  # cache entries later prompts started from
    consumed = cached._consumed
    monkeypatch.setattr(cached, "_consumed", lambda hit: (served.append(hit[1]), consumed(hit)))
    want = play_hf(tmp_path, rows, plain, tiny_llama, batch_size=len(rows), summary_max_tokens=14)
    # The summaries join the policy's stream (greedy, longer than a question), not a call of their own.
    from irtk.dialogue.summary import LLMSummarizer

    monkeypatch.setattr(LLMSummarizer, "summarize", lambda *_: pytest.fail("summaries not streamed"))
    got = play_hf(tmp_path, rows, cached, tiny_llama, batch_size=4, summary_max_tokens=14)  # 6 dialogues, 4 slots
    assert [d["id"] for d in got] == [r["id"] for r in rows]
    for w, g in zip(want, got, strict=True):
        assert g["turns"] == w["turns"] and g["summary"] == w["summary"]
        assert g["tokens_in"] == w["tokens_in"] and g["tokens_out"] == w["tokens_out"]
    assert sum(n > 0 for n in served) >= len(rows)  # every dialogue's later turns came from its cache
    assert len(cached.kv_store) == 0  # last turns are not stored, and the others were consumed


def test_dialogues_that_end_early_leave_no_key_values_behind(tmp_path, tiny_llama, monkeypatch):
    """A dialogue that stops before ``max_turns`` had its last turn stored for a next one: the
    policy drops it as the dialogue ends (streamed and turn by turn), so the store holds only
    dialogues still playing."""
    from irtk.dialogue import policies
    from irtk.generation import get_backend

    calls = iter(range(10_000))
    monkeypatch.setattr(policies, "is_stop", lambda text: next(calls) % 3 == 1)  # some stop at turn 2
    rows = [{**r, "id": f"{r['id']}-{i}"} for i in range(3) for r in TRAJECTORIES]
    for backend in (get_backend("hf", tiny_llama, dtype="float32"),  # streamed
                    get_backend("hf", tiny_llama, dtype="float32", call_size=4)):
        ended = []
        forget = backend.forget
        monkeypatch.setattr(backend, "forget",
                            lambda c, f=forget, seen=ended, b=backend: (seen.append(len(b.kv_store)), f(c)))
        got = play_hf(tmp_path, rows, backend, tiny_llama, batch_size=4, max_turns=4, allow_stop=True)
        assert any(d["stopped_early"] for d in got) and any(len(d["turns"]) == 4 for d in got)
        assert any(n > 0 for n in ended)  # entries were there to drop
        assert len(backend.kv_store) == 0 and backend.kv_store.bytes == 0


@pytest.mark.slow
def test_turn_cache_changes_no_dialogue_of_the_embedded_model(tmp_path):
    from irtk.generation import get_backend

    model = "smollm2-135m-instruct"
    rows = [{**r, "id": f"{r['id']}-{i}"} for i in range(2) for r in TRAJECTORIES]
    plain = get_backend("hf", model, dtype="float32", prefix_cache=False, lockstep=True)
    cached = get_backend("hf", model, dtype="float32")
    kwargs = {"max_turns": 3, "max_tokens": 48, "summary_max_tokens": 32}
    want = play_hf(tmp_path, rows, plain, model, batch_size=len(rows), **kwargs)
    got = play_hf(tmp_path, rows, cached, model, batch_size=3, **kwargs)
    for w, g in zip(want, got, strict=True):
        assert g["turns"] == w["turns"] and g["summary"] == w["summary"]


def test_model_policy_stops_at_the_end_of_its_question_block():
    """The stop rule: the policy asks every backend to end its turn after the question and options."""
    from irtk.dialogue import prompts
    from irtk.dialogue.policies import ModelPolicy
    from irtk.generation import SamplingParams

    policy = ModelPolicy(ScriptedBackend("repeat"), SamplingParams(max_tokens=96, stop=("###",)))
    assert policy.params.stop == ("###", *prompts.QUESTION_END)
    assert "\n\n" in prompts.QUESTION_END and "\nQuestion:" in prompts.QUESTION_END


def test_hf_generation_ends_at_a_stop_string(tiny_llama):
    """Generation stops at the stop string (fewer tokens), and the text is cut before it."""
    from irtk.generation import SamplingParams, get_backend

    backend = get_backend("hf", tiny_llama, dtype="float32")
    conv = [{"role": "user", "content": "Which region should the report cover?"}]
    free = backend.chat([conv], SamplingParams(max_tokens=16, temperature=0.0))[0]
    middle = len(free.text) // 2
    stop = free.text[middle:middle + 2]  # two characters the model writes halfway through
    cut = backend.chat([conv], SamplingParams(max_tokens=16, temperature=0.0, stop=(stop,)))[0]
    assert free.text.startswith(cut.text) and stop not in cut.text and len(cut.text) < len(free.text)
    assert cut.completion_tokens < free.completion_tokens and cut.finish_reason == "stop"
