"""Turn samples, prompts and the seed split (no models)."""

from __future__ import annotations

import pytest

from irtk.dialogue.episode import Episode
from irtk.dialogue.policies import ModelPolicy
from irtk.dialogue.prompts import STOP_RULE, STOP_WORD
from irtk.errors import UsageError
from irtk.generation import SamplingParams
from irtk.training import samples as S


def test_expert_samples_one_per_turn_with_hindsight_targets(trajectory_rows):
    rows = trajectory_rows[:20]
    samples = S.expert_samples(rows)
    assert len(samples) == sum(len(r["path"]) for r in rows)
    row = rows[0]
    first = [s for s in samples if s["id"] == row["id"]]
    assert [s["turn"] for s in first] == list(range(1, len(row["path"]) + 1))
    for s, step in zip(first, row["path"], strict=True):
        assert s["target_intents"] == step["target_intents"]
        assert s["prefix_turns"] == s["turn"] - 1 and s["rollout"] is False
        assert len(s["history"]) == s["turn"] - 1
        # prompt: instructions, the request, then one question/answer pair per earlier turn
        assert len(s["prompt"]) == 2 + 2 * (s["turn"] - 1)
        assert s["completion"][0]["role"] == "assistant"
    # the expert's own turn t is the completion of sample t and the history of sample t+1
    assert first[1]["history"] == [first[0]["completion"][0]["content"]]
    assert first[2]["matched_intents"] == [row["path"][0]["intent"], row["path"][1]["intent"]]


def test_prompt_is_the_model_policy_conversation(trajectory_rows):
    row = trajectory_rows[0]
    turns = S.expert_turns(row)
    sample = S.expert_samples([row])[3]
    policy = ModelPolicy(None, SamplingParams())
    assert sample["prompt"] == policy.conversation(Episode(dict(row), turns=turns[:3]))


def test_allow_stop_adds_a_final_stop_sample(trajectory_rows):
    row = trajectory_rows[0]
    samples = S.expert_samples([row], allow_stop=True)
    assert len(samples) == len(row["path"]) + 1
    last = samples[-1]
    assert last["source"] == "expert-stop" and last["completion"][0]["content"] == STOP_WORD
    assert set(last["target_intents"]) <= set(last["matched_intents"])
    assert STOP_RULE.strip() in last["prompt"][0]["content"]


def test_rollout_samples_are_rollout_turns_only(trajectory_rows):
    row = trajectory_rows[0]
    expert = S.expert_turns(row)[:2]
    played = [dict(expert[0], turn=3, question="Which budget?", target_intents=["I want X."]),
              dict(expert[1], turn=4, question="Which years?", target_intents=["I want Y."])]
    samples = S.rollout_samples(row, expert + played, 2)
    assert [s["turn"] for s in samples] == [3, 4]
    assert all(s["rollout"] and s["prefix_turns"] == 2 for s in samples)
    assert samples[1]["history"][-1] == "Which budget?"
    assert samples[0]["target_intents"] == ["I want X."]


def test_fit_prompts_drops_oldest_exchanges(trajectory_rows):
    samples = S.expert_samples(trajectory_rows[:1])
    longest = max(samples, key=lambda s: len(s["prompt"]))
    n = len(longest["prompt"])
    count = lambda msgs: sum(len(m["content"]) for m in msgs)  # noqa: E731
    budget = count(longest["prompt"][:2]) + count(longest["prompt"][-2:])
    S.fit_prompts([longest], count, budget)
    assert len(longest["prompt"]) == 4 < n
    assert longest["prompt"][1]["content"].startswith("My research request")


def test_split_by_seed_never_splits_a_seed(trajectory_rows):
    train, held = S.split_by_seed(trajectory_rows, 0.25, seed=0)
    assert held and train and len(train) + len(held) == len(trajectory_rows)
    assert not {S.seed_of(r) for r in train} & {S.seed_of(r) for r in held}
    assert S.split_by_seed(trajectory_rows, 0.25, seed=0) == (train, held)  # seeded
    S.check_disjoint(train, held, held_name="held")
    with pytest.raises(UsageError, match="also occur in the training data"):
        S.check_disjoint(train, held + train[:1], held_name="--eval x")


def test_stop_precision_counts_stops_with_nothing_left():
    from irtk.training.live import stop_metrics

    right = {"turns": [{"verdict": "answered", "matched_intent": "I want a."},
                       {"verdict": "stop", "target_intents": ["I want a."]}]}
    early = {"turns": [{"verdict": "stop", "target_intents": ["I want b."]}]}
    assert stop_metrics([right, early]) == {"stops": 2, "stop_precision": 0.5}
    assert stop_metrics([]) == {"stops": 0, "stop_precision": None}
