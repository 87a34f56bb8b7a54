"""Metrics against hand-computed runs; both qrels formats; bad qrels/run files."""

from __future__ import annotations

import math

import pytest

from irtk.errors import InputError
from irtk.retrieval import metrics as M


def test_hand_computed_run_with_ties_and_missing_queries():
    qrels = {"q1": {"a": 1, "c": 2, "z": 0}, "q2": {"x": 1}, "q3": {"m": 1}, "q4": {"n": 0}}
    run = {
        # b and c tie: b sorts first by docid, so c is at rank 3.
        "q1": {"a": 0.9, "c": 0.8, "b": 0.8, "d": 0.1},
        # x and y tie at the top: x wins on docid.
        "q2": {"y": 0.5, "x": 0.5},
        # q3 is judged but missing from the run; q4 has no relevant doc; q5 has no qrels.
        "q4": {"n": 1.0},
        "q5": {"a": 1.0},
    }
    r = M.evaluate(run, qrels)
    assert r["queries"] == 3
    assert r["queries_missing_from_run"] == 1
    assert r["run_queries_without_qrels"] == 2
    ndcg_q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert r["MRR@10"] == pytest.approx((1 + 1 + 0) / 3)
    assert r["NDCG@10"] == pytest.approx((ndcg_q1 + 1 + 0) / 3)
    assert r["Recall@5"] == pytest.approx((1 + 1 + 0) / 3)
    assert r["Hit@1"] == pytest.approx(2 / 3)


def test_relevant_beyond_cutoffs():
    run = {"q": {f"d{i:03d}": 1.0 - i / 1000 for i in range(150)}}
    qrels = {"q": {"d012": 1, "d050": 1, "d120": 1, "d149": 1, "nowhere": 1}}
    r = M.evaluate(run, qrels)
    assert r["MRR@10"] == 0.0 and r["NDCG@10"] == 0.0 and r["Hit@1"] == 0.0
    assert r["Recall@5"] == 0.0
    assert r["Recall@20"] == pytest.approx(1 / 5)
    assert r["Recall@100"] == pytest.approx(2 / 5)


def test_rank_within_ten_and_ndcg_ideal_capped_at_ten():
    ranking = [f"d{i}" for i in range(20)]
    rel = {f"d{i}" for i in range(3, 15)}  # 12 relevant, ideal DCG uses 10
    m = M.query_metrics(ranking, rel)
    assert m["MRR@10"] == pytest.approx(1 / 4)
    dcg = sum(1 / math.log2(i + 2) for i in range(3, 10))
    idcg = sum(1 / math.log2(i + 2) for i in range(10))
    assert m["NDCG@10"] == pytest.approx(dcg / idcg)


def test_both_qrels_formats_agree(tmp_path):
    trec = tmp_path / "trec.qrels"
    trec.write_text("q1 0 a 1\nq1 0 b 0\nq2 Q0 c 2\n")
    webqa = tmp_path / "webqa.qrels"
    webqa.write_text("q1\ta\t1\nq1\tb\t0\n\nq2\tc\t2\n")
    assert M.read_qrels(trec) == M.read_qrels(webqa) == {"q1": {"a": 1, "b": 0}, "q2": {"c": 2}}


@pytest.mark.parametrize("text, message", [
    ("q1 0 a 1 extra\n", "line 1: expected 4 columns"),
    ("q1 0 a 1\nq2 b 1\n", "line 2: 3 columns after 4-column lines"),
    ("q1 0 a high\n", "line 1: field 'grade'"),
    ("\n\n", "empty qrels"),
])
def test_bad_qrels(tmp_path, text, message):
    path = tmp_path / "bad.qrels"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        M.read_qrels(path)


def test_missing_qrels_file(tmp_path):
    with pytest.raises(InputError, match="no such qrels file"):
        M.read_qrels(tmp_path / "nope")


def test_trec_run_parse_and_errors(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 a 1 0.5 tag\nq1 Q0 b 2 0.25 tag\n")
    assert M.read_trec_run(run) == {"q1": {"a": 0.5, "b": 0.25}}
    run.write_text("q1 Q0 a 1 0.5 tag\nq1 Q0 b 2 tag\n")
    with pytest.raises(InputError, match="line 2: expected 6 columns"):
        M.read_trec_run(run)
    run.write_text("q1 Q0 a 1 zero tag\n")
    with pytest.raises(InputError, match="field 'score'"):
        M.read_trec_run(run)
    run.write_text("")
    with pytest.raises(InputError, match="empty run"):
        M.read_trec_run(run)


def test_qrels_without_relevant_documents():
    with pytest.raises(InputError, match="no relevant"):
        M.evaluate({"q": {"a": 1.0}}, {"q": {"a": 0}})
