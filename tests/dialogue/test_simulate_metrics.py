"""Intent metrics on hand-computed dialogues, and the bootstrap intervals."""

from __future__ import annotations

import pytest

from irtk.dialogue.metrics import aggregate, bootstrap_ci, dialogue_metrics, metrics_table


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
    rows = [{"precision": None, "recall": 0.0, "stopped_early": 0.0},
            {"precision": 0.5, "recall": 1.0, "stopped_early": 1.0}]
    agg = aggregate(rows, resamples=200)
    assert agg["precision"]["n"] == 1 and agg["precision"]["mean"] == 0.5
    assert agg["recall"]["mean"] == 0.5 and agg["recall"]["n"] == 2
    assert agg["quality"]["mean"] is None and agg["quality"]["n"] == 0
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(metrics_table(agg, title="t"))
    text = console.export_text()
    assert "intent recall" in text and "50.00%" in text
