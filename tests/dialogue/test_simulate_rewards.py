"""Rewards: format counting, content/penalty/total arithmetic on hand-chosen vectors, TRL calling."""

from __future__ import annotations

import math

import pytest

from irtk.dialogue.gate import EmbeddingGate
from irtk.dialogue.rewards import IntentRewards, count_questions, format_score

from .simulate_fixtures import KeyedEmbedder


@pytest.mark.parametrize("text, n", [
    ("Which region? Options: Europe; Asia.", 1),
    ("Which region?\nA) Europe?\nB) Asia?", 1),  # option lines are not questions
    ("Which region? And for whom?", 2),
    ("Which region?? Really?!", 2),  # a run of marks is one question
    ("Tell me the region.", 0),
    ("One? Two? Three?", 3),
    ("哪个地区？", 1),
    ("", 0),
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
VECTORS = {Q: [1, 0, 0], I1: [0.6, 0.8, 0], I2: [0, 0, 1], H: [0, 1, 0], "off?": [0, -1, 0.01]}


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
    with pytest.raises(ValueError, match="target_intents"):
        rewards().score(None, [Q, Q], target_intents=[[I1]])


def test_gate_ties_go_to_the_first_intent():
    gate = EmbeddingGate(KeyedEmbedder({"q": [1, 0], "a": [1, 1], "b": [1, 1]}), tau_rep=0.9, tau_rel=0.5)
    v = gate.judge("q", [], ["a", "b"])
    assert v.verdict == "answered" and v.matched_intent == "a"
    assert math.isclose(v.similarity, 1 / math.sqrt(2), rel_tol=1e-6)
    assert gate.judge("q", [], []).verdict == "irrelevant"


def test_restating_the_request_is_a_repetition():
    vectors = {**VECTORS, "the request": [1, 0, 0.05]}
    r = IntentRewards(KeyedEmbedder(vectors), tau_rep=0.9, tau_rel=0.5)
    [s] = r.score(None, [Q], target_intents=[[I1]], intents=[[I1]], history=[[]],
                  simple_query=["the request"])
    assert s.repeats and s.verdict.verdict == "redundant" and s.penalty == 2.0
    # The request itself is not an earlier repetition: a second restatement costs gamma * 2.
    [s2] = r.score(None, [Q], target_intents=[[I1]], intents=[[I1]], history=[[Q]],
                   simple_query=["the request"])
    assert s2.penalty == 4.0
