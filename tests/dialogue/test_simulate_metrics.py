"""Intent metrics on hand-computed dialogues, and the bootstrap intervals."""

from __future__ import annotations

import pytest

from irtk.dialogue.metrics import (
    aggregate,
    bootstrap_ci,
    dialogue_metrics,
    metrics_table,
    offline_quality_score,
    paper_f1,
    seed_of,
)


def turn(verdict, matched=None, content=0.0, fmt=1.0):
    return {"verdict": verdict, "matched_intent": matched, "content": content, "format": fmt}


INTENTS = ["a", "b", "c", "d"]


def test_precision_recall_f1_by_hand():
    turns = [turn("answered", "a", 0.5), turn("answered", "a", 0.5), turn("redundant"),
             turn("answered", "c", 0.25, 0.5), turn("irrelevant", None, 0.0, 0.0)]
    m = dialogue_metrics(turns, INTENTS)
    # 3 of 5 questions answered; 2 of 4 intents covered (a twice counts once).
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    assert m["matched_intents"] == ["a", "c"]
    # quality: mean of 2*content + format = (2 + 2 + 1 + 1 + 0) / 5
    assert m["quality"] == pytest.approx(6 / 5)
    assert (m["redundant"], m["irrelevant"], m["turns_used"]) == (1, 1, 5)


def test_stop_turn_is_not_a_question_and_no_questions_is_undefined_precision():
    m = dialogue_metrics([turn("answered", "b"), {"verdict": "stop", "content": None, "format": None}], INTENTS)
    assert m["turns_used"] == 1 and m["precision"] == 1.0 and m["recall"] == 0.25
    empty = dialogue_metrics([], INTENTS)
    assert empty["precision"] is None and empty["quality"] is None
    assert empty["recall"] == 0.0 and empty["f1"] == 0.0


def test_matched_intent_outside_the_intent_set_is_not_recall():
    m = dialogue_metrics([turn("answered", "zzz")], INTENTS)
    assert m["recall"] == 0.0 and m["matched_intents"] == []


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [0.0, 1.0, 0.5, 0.25, 0.75, 1.0, 0.0, 0.5]
    mean, low, high = bootstrap_ci(values, seed=3)
    assert mean == pytest.approx(sum(values) / len(values))
    assert low < mean < high
    assert bootstrap_ci(values, seed=3) == (mean, low, high)
    assert bootstrap_ci([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4, 0.4))
    nan = bootstrap_ci([])
    assert all(x != x for x in nan)


def test_aggregate_skips_undefined_values_and_renders():
    rows = [{"id": "s1/0", "precision": None, "recall": 0.0, "stopped_early": 0.0},
            {"id": "s2/0", "precision": 0.5, "recall": 1.0, "stopped_early": 1.0}]
    agg = aggregate(rows, resamples=200)
    assert agg["precision"]["n"] == 1 and agg["precision"]["mean"] == 0.5
    assert agg["recall"]["mean"] == 0.5 and agg["recall"]["n"] == 2
    assert agg["quality"]["mean"] is None and agg["quality"]["n"] == 0
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(metrics_table(agg, title="t"))
    text = console.export_text()
    assert "intent recall" in text and "50.00%" in text


def test_paper_f1_is_of_the_means_not_the_mean_of_f1():
    rows = [{"id": "a/0", "precision": 1.0, "recall": 0.2, "f1": 2 * 0.2 / 1.2},
            {"id": "b/0", "precision": 0.5, "recall": 0.6, "f1": 2 * 0.5 * 0.6 / 1.1}]
    agg = aggregate(rows, resamples=0)
    # Mean P 0.75, mean R 0.4: 2PR/(P+R) = 0.6 / 1.15; the per-dialogue mean is 0.4394.
    assert agg["f1_paper"]["mean"] == pytest.approx(0.6 / 1.15, abs=1e-6)
    assert agg["f1"]["mean"] == pytest.approx((2 * 0.2 / 1.2 + 0.6 / 1.1) / 2, abs=1e-6)
    assert paper_f1(0.0, 0.0) == 0.0


def test_seed_of():
    assert seed_of({"id": "s01-heat/3"}) == "s01-heat"
    assert seed_of({"id": "x/3", "seed_id": "s02"}) == "s02"
    assert seed_of({"id": "plain"}) == "plain"


def test_bootstrap_resamples_seeds_not_dialogues():
    # Seed A: three dialogues at 0; seed B: one at 1. The mean is 1/4. Drawing two seeds gives
    # only 0 (A, A), 1/4 (A, B) or 1 (B, B): the interval spans [0, 1]. Resampling the four
    # dialogues as independent would give a much narrower one.
    rows = [{"seed_id": "A", "recall": 0.0}] * 3 + [{"seed_id": "B", "recall": 1.0}]
    agg = aggregate(rows, resamples=2000, seed=1)
    assert agg["recall"]["mean"] == 0.25 and agg["recall"]["n"] == 4 and agg["recall"]["seeds"] == 2
    assert agg["recall"]["ci_low"] == 0.0 and agg["recall"]["ci_high"] == 1.0
    _, low, high = bootstrap_ci([r["recall"] for r in rows], resamples=2000, seed=1)
    assert high - low < 1.0
    # Same seed, same interval; one seed: no spread to draw from.
    assert aggregate(rows, resamples=2000, seed=1) == agg
    one = aggregate(rows[:3], resamples=500)
    assert one["recall"]["ci_low"] == one["recall"]["ci_high"] == 0.0


def test_offline_quality_score_is_the_mean_of_expert_prefix_scores():
    assert offline_quality_score([3.0, 2.0, 1.0]) == 2.0
    assert offline_quality_score([]) is None
