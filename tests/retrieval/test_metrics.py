"""Metrics against hand-computed runs and pytrec_eval (trec_eval); both qrels formats; bad
qrels/run files."""

from __future__ import annotations

import math

import pytest

from irtk.errors import InputError
from irtk.retrieval import metrics as M

QRELS = {"q1": {"a": 1, "c": 2, "z": 0}, "q2": {"x": 1}, "q3": {"m": 1}, "q4": {"n": 0}}
RUN = {
    # b and c tie: trec_eval orders equal scores by docid descending, so c (grade 2) is 2nd.
    "q1": {"a": 0.9, "c": 0.8, "b": 0.8, "d": 0.1},
    # x and y tie at the top: y wins (descending), x is 2nd.
    "q2": {"y": 0.5, "x": 0.5},
    # q3 is judged but missing from the run; q4 is judged without a relevant doc; q5 has no qrels.
    "q4": {"n": 1.0},
    "q5": {"a": 1.0},
}


def test_hand_computed_run_with_trec_eval_semantics():
    r = M.evaluate(RUN, QRELS)
    # Averaged over the judged queries in the run (q1, q2, q4); q4 counts with zeros.
    assert r["queries"] == 3
    assert r["queries_missing_from_run"] == 1
    assert r["run_queries_without_qrels"] == 1
    ndcg_q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))  # graded gain, ideal order c, a
    ndcg_q2 = (1 / math.log2(3)) / 1
    assert r["MRR@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert r["NDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3)
    assert r["Recall@5"] == pytest.approx((1 + 1 + 0) / 3)
    assert r["Hit@1"] == pytest.approx(1 / 3)
    assert r["semantics"] == {"ties": "trec_eval", "gain": "graded", "average": "run"}


def test_switchable_differences_from_trec_eval():
    # -c: every judged query, q3 (missing from the run) scoring 0.
    assert M.evaluate(RUN, QRELS, average="all")["MRR@10"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    # Ascending ties (the order irtk writes ranks in): b before c, x before y.
    asc = M.evaluate(RUN, QRELS, ties="docid", gain="binary")
    assert asc["MRR@10"] == pytest.approx((1 + 1 + 0) / 3)
    ndcg_q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert asc["NDCG@10"] == pytest.approx((ndcg_q1 + 1 + 0) / 3)
    assert M.ranked({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]
    assert M.ranked({"a": 1.0, "b": 1.0, "c": 2.0}, ties="docid") == ["c", "a", "b"]


def test_graded_ndcg_matches_trec_eval_hand_computed():
    # qrels {d1: 1, d2: 3} ranked d1, d2: trec_eval's ndcg_cut.10 is 0.797, not 1.
    m = M.query_metrics(["d1", "d2"], {"d1": 1, "d2": 3})
    dcg = 1 + 3 / math.log2(3)
    idcg = 3 + 1 / math.log2(3)
    assert m["NDCG@10"] == pytest.approx(dcg / idcg)
    assert round(m["NDCG@10"], 3) == 0.797
    assert M.query_metrics(["d1", "d2"], {"d1": 1, "d2": 3}, gain="binary")["NDCG@10"] == pytest.approx(1.0)
    # Negative and zero grades are not relevant and gain nothing (trec_eval's relevance level 1).
    m = M.query_metrics(["a", "b"], {"a": -1, "b": 2})
    assert m["MRR@10"] == 0.5 and m["NDCG@10"] == pytest.approx(1 / math.log2(3))


def test_agrees_with_pytrec_eval_on_random_graded_runs_with_ties():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    import random

    rng = random.Random(0)
    docs = [f"d{i:02d}" for i in range(40)]
    qrels = {f"q{q}": {d: rng.choice([0, 0, 1, 2, 3]) for d in rng.sample(docs, 12)} for q in range(30)}
    # Scores on a coarse grid, so many tie; one judged query left out of the run.
    run = {q: {d: rng.randint(0, 8) / 8 for d in rng.sample(docs, 30)} for q in list(qrels)[1:]}
    mine = M.evaluate(run, qrels)
    measures = {"ndcg_cut.10", "recall.5", "recall.20", "recall.100", "P.1"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    top10 = {q: {d: run[q][d] for d in M.ranked(run[q])[:10]} for q in run}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    assert mine["queries"] == len(theirs) == 29

    def mean(key: str, per_query: dict) -> float:
        return sum(v[key] for v in per_query.values()) / len(per_query)

    assert mine["NDCG@10"] == pytest.approx(mean("ndcg_cut_10", theirs), abs=1e-9)
    for k in (5, 20, 100):
        assert mine[f"Recall@{k}"] == pytest.approx(mean(f"recall_{k}", theirs), abs=1e-9)
    assert mine["Hit@1"] == pytest.approx(mean("P_1", theirs), abs=1e-9)
    assert mine["MRR@10"] == pytest.approx(mean("recip_rank", rr), abs=1e-9)


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
    m = M.query_metrics(ranking, dict.fromkeys(rel, 1))
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
