"""Rewards: format counting, content/penalty/total arithmetic on hand-chosen vectors, TRL calling."""

from __future__ import annotations

import math

import pytest

from irtk.dialogue.gate import EmbeddingGate
from irtk.dialogue.rewards import (
    REWARD_PRESETS,
    IntentRewards,
    RewardPreset,
    count_questions,
    format_score,
)
from irtk.errors import InputError, UsageError

from .simulate_fixtures import KeyedEmbedder


@pytest.mark.parametrize("text, n", [
    ("Which region? Options: Europe; Asia.", 1),
    ("Question: Which region?\nOptions: A) Europe; B) Asia; C) Both", 1),
    ("Which region?\nA) Europe\nB) Asia", 1),  # option lines are statements
    ("Which region? And for whom?", 2),
    ("Which region?? Really?!", 2),  # a run of marks is one question
    ("Which region?!? Really", 1),
    ("Tell me the region.", 0),
    ("One? Two? Three?", 3),
    ("哪个地区？", 1),
    ("", 0),
    ("Q: Which region should it cover?", 1),  # a labelled question is a question
    ("1. Which region?\n2. Which audience?", 2),  # so are numbered ones
    ("- Which region?", 1),
    # A question hidden after the options label still counts.
    ("Which region? Options: A) Europe; B) Asia. And which year?", 2),
    ("Which region?\nOptions:\nA) Europe?\nB) Asia?", 3),
])
def test_count_questions(text, n):
    assert count_questions(text) == n


def test_format_score_levels():
    assert format_score("Which region?") == 1.0
    assert format_score("Which region? Which year?") == 0.5
    assert format_score("Region? Year? Audience?") == 0.0
    assert format_score("No question here.") == 0.0


Q, H, I1, I2 = "which region?", "earlier question?", "intent one", "intent two"
# cos(Q, I1) = 0.6, cos(Q, I2) = 0.0, cos(Q, H) = 0.0; OFF is far from both intents.
VECTORS = {Q: [1, 0, 0], I1: [0.6, 0.8, 0], I2: [0, 0, 1], H: [0, 1, 0], "off?": [0, -1, 0.01],
           "STOP": [0, -1, 0]}


def rewards(**kw) -> IntentRewards:
    return IntentRewards(KeyedEmbedder(VECTORS), tau_rep=0.9, tau_rel=0.5, **kw)


def test_content_is_max_cosine_to_targets_and_total_adds_format():
    r = rewards()
    [s] = r.score(None, [Q], target_intents=[[I2, I1]], intents=[[I1, I2]], history=[[H]])
    assert s.content == pytest.approx(0.6, abs=1e-6)
    assert s.format == 1.0 and s.penalty == 0.0
    assert s.reward == pytest.approx(2 * 0.6 + 1.0, abs=1e-6)
    assert s.quality == pytest.approx(2.2, abs=1e-6)
    assert s.verdict.verdict == "answered" and s.verdict.matched_intent == I1


def test_no_targets_means_no_content():
    [s] = rewards().score(None, [Q], target_intents=[[]], intents=[[I1]], history=[[]])
    assert s.content == 0.0


def test_repetition_penalty_grows_with_earlier_repeats():
    r = rewards(gamma=2.0)
    first, second = r.score(None, [Q, Q], target_intents=[[I1], [I1]], intents=[[I1], [I1]],
                            history=[[Q], [Q, Q]])
    # First repeat: gamma * (0 + 1); the second history already holds one repeat: gamma * 2.
    assert first.repeats and first.penalty == 2.0
    assert second.repeats and second.penalty == 4.0
    # Content does not count once a penalty fires.
    assert first.reward == pytest.approx(1.0 - 2.0)
    assert first.verdict.verdict == "redundant"


def test_deviation_penalty_counts_earlier_deviations():
    r = rewards(gamma=2.0)
    [s] = r.score(None, ["off?"], target_intents=[[I1]], intents=[[I1]], history=[[H]])
    # H is on-intent (cos(H, I1) = 0.8 >= 0.5), so this is the first deviation.
    assert s.deviates and not s.repeats
    assert s.penalty == 2.0
    assert s.verdict.verdict == "irrelevant" and s.verdict.matched_intent is None
    [s2] = r.score(None, ["off?"], target_intents=[[I1]], intents=[[I1]], history=[[I2, H]])
    assert s2.penalty == 4.0  # I2 asked earlier was a deviation (cos(I2, I1) = 0)


def test_answered_content_counts_only_what_the_user_answers_with_something_new():
    r = rewards(content="answered")
    cols = dict(target_intents=[[I1]] * 4, intents=[[I1, I2]] * 4, history=[[H], [H], [H], [Q]])
    # Answered about I1 (new): the cosine counts, as in the paper's content.
    # Answered about I1, which the user already stated: 0 (the cosine alone would give 0.6).
    # Irrelevant ("off?" is far from every intent): 0. Redundant (asked before): 0.
    scores = r.score(None, [Q, Q, "off?", Q], matched_intents=[[], [I1], [], []], **cols)
    assert [s.content for s in scores] == [pytest.approx(0.6, abs=1e-6), 0.0, 0.0, 0.0]
    assert [s.verdict.verdict for s in scores] == ["answered", "answered", "irrelevant", "redundant"]
    cosine = rewards().score(None, [Q, Q, "off?", Q], matched_intents=[[], [I1], [], []], **cols)
    assert cosine[1].content == pytest.approx(0.6, abs=1e-6)  # the cosine alone counts a parroted intent
    # The Stage I preset reads it through content_reward; without matched_intents nothing is stated.
    p = REWARD_PRESETS.create("stage1", rewards=r)
    assert p.total(None, [Q, "off?"], target_intents=[[I1]] * 2, intents=[[I1]] * 2, history=[[H]] * 2) == [
        pytest.approx(2 * 0.6 + 1.0), pytest.approx(1.0)]
    # The gate needs the intents: the column is named when it is missing.
    with pytest.raises(InputError, match="answered content reward needs the dataset column 'intents'"):
        r.content_reward(None, [Q], target_intents=[[I1]])
    with pytest.raises(UsageError, match="--content must be one of cosine, answered"):
        rewards(content="gated")


def test_trl_signature_with_conversational_prompts_and_extra_columns():
    r = rewards()
    prompts = [[{"role": "system", "content": "s"}, {"role": "user", "content": "req"},
                {"role": "assistant", "content": Q}, {"role": "user", "content": "Europe."}]]
    completions = [[{"role": "assistant", "content": Q}]]
    kwargs = dict(target_intents=[[I1]], intents=[[I1]], completion_ids=[[1, 2]], trainer_state=None)
    # History comes from the prompt's assistant turns: the same question again is a repeat.
    assert r.penalty_reward(prompts=prompts, completions=completions, **kwargs) == [-2.0]
    assert r.format_reward(prompts=prompts, completions=completions, **kwargs) == [1.0]
    assert r.content_reward(prompts=prompts, completions=completions, **kwargs) == [pytest.approx(0.6, abs=1e-6)]
    assert r.total_reward(prompts=prompts, completions=completions, **kwargs) == [pytest.approx(-1.0)]
    assert r.total_reward.__name__ == "total_reward"  # TRL logs rewards under __name__


def test_mismatched_column_is_an_error():
    with pytest.raises(InputError, match="target_intents"):
        rewards().score(None, [Q, Q], target_intents=[[I1]], intents=[[I1], [I1]])


@pytest.mark.parametrize("method, missing", [
    ("content_reward", "target_intents"), ("total_reward", "target_intents"),
    ("quality_reward", "target_intents"),
])
def test_missing_target_column_fails_loudly(method, missing):
    # Without the column every completion used to score -1 silently.
    with pytest.raises(InputError, match=f"needs the dataset column '{missing}'"):
        getattr(rewards(), method)(None, [Q], intents=[[I1]])


def test_missing_intents_column_fails_for_penalties():
    with pytest.raises(InputError, match="needs the dataset column 'intents'"):
        rewards().penalty_reward(None, [Q], target_intents=[[I1]])


def test_gate_ties_go_to_the_first_intent():
    gate = EmbeddingGate(KeyedEmbedder({"q": [1, 0], "a": [1, 1], "b": [1, 1]}), tau_rep=0.9, tau_rel=0.5)
    v = gate.judge("q", [], ["a", "b"])
    assert v.verdict == "answered" and v.matched_intent == "a"
    assert math.isclose(v.similarity, 1 / math.sqrt(2), rel_tol=1e-6)
    assert gate.judge("q", [], []).verdict == "irrelevant"


def test_restating_the_request_has_its_own_threshold():
    vectors = {**VECTORS, "the request": [1, 0, 0.05], "on topic?": [0.8, 0.6, 0]}
    r = IntentRewards(KeyedEmbedder(vectors), tau_rep=0.5, tau_rel=0.5, tau_req=0.9)
    [s] = r.score(None, [Q], target_intents=[[I1]], intents=[[I1]], history=[[]],
                  simple_query=["the request"])
    assert s.restates and not s.repeats and s.verdict.verdict == "restates" and s.penalty == 2.0
    # A second restatement costs gamma * 2; the request is no earlier question (no repeat).
    [s2] = r.score(None, [Q], target_intents=[[I1]], intents=[[I1]], history=[[Q]],
                   simple_query=["the request"])
    assert s2.restates and s2.repeats and s2.penalty == 2.0 + 4.0
    # A question naming the topic (cos 0.8 to the request) is above tau_rep but below tau_req:
    # comparing it with the request under the question-vs-question threshold would reject it.
    [s3] = r.score(None, ["on topic?"], target_intents=[[I1]], intents=[[I1]], history=[[]],
                   simple_query=["the request"])
    assert not s3.restates and s3.penalty == 0.0 and s3.verdict.verdict == "answered"
    # Without the request column nothing changes for an on-target question.
    [s4] = r.score(None, ["on topic?"], target_intents=[[I1]], intents=[[I1]], history=[[]])
    assert s4.reward == s3.reward


# ----------------------------------------------------------------------------- presets

def preset(name: str, **kw) -> RewardPreset:
    return REWARD_PRESETS.create(name, rewards=rewards(), **kw)


def test_presets_are_registered_with_distinct_names_and_weights():
    for name in ("stage1", "stage2"):
        for allow_stop in (False, True):
            p = preset(name, allow_stop=allow_stop)
            names = [f.__name__ for f in p.funcs]
            assert len(set(names)) == len(names) == len(p.weights)
            assert ("stop_reward" in names) == allow_stop
    with pytest.raises(UsageError, match="--reward"):
        REWARD_PRESETS.create("stage3")


def test_stage1_has_no_penalty():
    p = preset("stage1")
    assert [f.__name__ for f in p.funcs] == ["content_reward", "format_reward"] and p.weights == [2.0, 1.0]
    # A repeated, off-intent question draws no penalty in Stage I, even flagged as a rollout.
    cols = dict(target_intents=[[I1], [I1]], intents=[[I1], [I1]], history=[[Q], [H]], rollout=[True, True])
    assert p.total(None, [Q, "off?"], **cols) == p.total(None, [Q, "off?"], target_intents=[[I1], [I1]])
    assert p.total(None, [Q], **{k: v[:1] for k, v in cols.items()}) == [pytest.approx(2 * 0.6 + 1.0)]
    # Stage I needs only the targets.
    assert p.total(None, [Q], target_intents=[[I1]]) == [pytest.approx(2.2)]


def test_stage2_penalises_rollout_samples_only():
    p = preset("stage2")
    assert [f.__name__ for f in p.funcs] == ["gated_content_reward", "format_reward", "penalty_reward"]
    assert p.weights == [2.0, 1.0, 1.0]
    cols = dict(target_intents=[[I1]] * 3, intents=[[I1]] * 3, history=[[Q], [Q], [H]])
    # A repeat on a rollout: content gated off, format 1, penalty gamma * 1 -> 1 - 2.
    # The same repeat as an expert-prefix sample: no penalty, content counts -> 2 * 0.6 + 1.
    # An on-target new question on a rollout: no penalty fires -> 2 * 0.6 + 1.
    assert p.total(None, [Q, Q, Q], rollout=[True, False, True], **cols) == [
        pytest.approx(-1.0), pytest.approx(2.2), pytest.approx(2.2)]
    # No rollout column: every sample is an expert prefix.
    assert p.total(None, [Q, Q, Q], **cols) == [pytest.approx(2.2)] * 3
    parts = {f.__name__: f(None, [Q, Q], rollout=[1, 0], **{k: v[:2] for k, v in cols.items()})
             for f in p.funcs}
    assert parts["penalty_reward"] == [-2.0, 0.0]
    assert parts["gated_content_reward"] == [0.0, pytest.approx(0.6)]


def test_stop_reward():
    p = preset("stage2", allow_stop=True)
    cols = dict(target_intents=[[I1], [I1], [], [I1]], intents=[[I1]] * 4, history=[[]] * 4,
                matched_intents=[[], [I1], [], []], rollout=[True] * 4)
    # STOP with a target left: -1; with every target already matched or none: +1; a question: 0.
    parts = {f.__name__: f(None, ["STOP", "STOP", "Stop.", Q], **cols) for f in p.funcs}
    assert parts["stop_reward"] == [-1.0, 1.0, 1.0, 0.0]
    # A STOP completion gets no content, format or penalty (even though it matches no intent).
    for name in ("gated_content_reward", "format_reward", "penalty_reward"):
        assert parts[name][:3] == [0.0, 0.0, 0.0]
    assert parts["format_reward"][3] == 1.0
    with pytest.raises(InputError, match="target_intents"):
        p.funcs[-1](None, ["STOP"])


def test_without_allow_stop_a_stop_is_an_ordinary_completion():
    p = preset("stage2")
    cols = dict(target_intents=[[I1]], intents=[[I1]], history=[[]], rollout=[True])
    parts = {f.__name__: f(None, ["STOP"], **cols) for f in p.funcs}
    assert parts["format_reward"] == [0.0] and parts["penalty_reward"] == [-2.0]  # "STOP" deviates


def test_preset_functions_take_trl_extra_kwargs():
    p = preset("stage2", allow_stop=True)
    prompts = [[{"role": "user", "content": "req"}, {"role": "assistant", "content": Q},
                {"role": "user", "content": "Europe."}]]
    kwargs = dict(target_intents=[[I1]], intents=[[I1]], rollout=[True], completion_ids=[[1, 2]],
                  trainer_state=None)
    out = {f.__name__: f(prompts=prompts, completions=[[{"role": "assistant", "content": Q}]], **kwargs)
           for f in p.funcs}
    assert out["penalty_reward"] == [-2.0]  # the prompt's assistant turn makes this a repeat
