"""The index / retrieve / train-retriever commands as a user runs them (real subprocesses)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_irtk

from .conftest import write_jsonl


def _ok(proc):
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def _one_line_error(proc, *fragments):
    assert proc.returncode == 1, proc.stderr.decode()
    err = proc.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture()
def queries(tmp_path, corpus):
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    q = [{"qid": f"q{r['doc_id']}", "query": r["text"]} for r in rows if "image" not in r]
    (tmp_path / "qrels").write_text("".join(f"q{r['doc_id']} 0 {r['doc_id']} 1\n" for r in rows
                                            if "image" not in r))
    return write_jsonl(tmp_path / "queries.jsonl", q)


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, corpus, tiny_clip):
    """An index folder built by the CLI, shared by the tests that only read it."""
    idx = tmp_path_factory.mktemp("cli-index") / "idx"
    _ok(run_irtk("index", str(corpus), "-o", str(idx), "--encoder", "clip", "--model", tiny_clip))
    return idx


def test_index_retrieve_trec_and_metrics(tmp_path, cli_index, queries):
    idx = cli_index
    run = tmp_path / "run.trec"
    proc = _ok(run_irtk("retrieve", str(queries), "-i", str(idx), "-k", "3", "-o", str(run),
                        "--qrels", str(tmp_path / "qrels")))
    assert "MRR@10 1.0000" in proc.stderr.decode() and "Hit@1 1.0000" in proc.stderr.decode()
    lines = run.read_text().splitlines()
    assert len(lines) == 60
    qid, q0, docid, rank, score, tag = lines[0].split()
    assert (qid, q0, docid, rank, tag) == ("qd00", "Q0", "d00", "1", "irtk")
    # Evaluating the run file needs no index.
    proc = _ok(run_irtk("retrieve", "--run", str(run), "--qrels", str(tmp_path / "qrels")))
    metrics = json.loads(proc.stdout)
    assert metrics["MRR@10"] == 1.0 and metrics["queries"] == 20
    # JSONL hits on stdout, piped from stdin.
    proc = _ok(run_irtk("retrieve", "-i", str(idx), "-k", "2", input=queries.read_bytes()))
    hits = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert hits[0] == {"qid": "qd00", "docid": "d00", "rank": 1, "score": pytest.approx(1.0, abs=1e-5)}
    assert len(hits) == 40


def test_sharded_cli_build_and_merge(tmp_path, corpus, tiny_clip):
    for k in range(2):
        _ok(run_irtk("index", str(corpus), "-o", str(tmp_path / f"s{k}"), "--shard", f"{k}/2",
                     "--encoder", "clip", "--model", tiny_clip))
    _ok(run_irtk("index", "--merge", str(tmp_path / "s0"), "--merge", str(tmp_path / "s1"),
                 "-o", str(tmp_path / "merged")))
    from irtk.retrieval.index import load_index

    merged, s0 = load_index(tmp_path / "merged", mmap=True), load_index(tmp_path / "s0")
    assert merged.index.ntotal == 40 and merged.mmapped
    assert list(merged.doc_ids) == [f"d{i:02d}" for i in range(40)]
    assert list(s0.doc_ids) == [f"d{i:02d}" for i in range(0, 40, 2)]


def test_bad_documents_fail_cleanly(tmp_path, tiny_clip):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"doc_id": "a", "text": "x"}, {"text": "no id"}])
    proc = run_irtk("index", str(docs), "-o", str(tmp_path / "idx"), "--encoder", "clip", "--model", tiny_clip)
    _one_line_error(proc, "docs.jsonl", "line 2", "field 'doc_id'")
    assert not (tmp_path / "idx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["docs.jsonl"]
    docs.write_text('{"doc_id": "a", "text": "x", "image": "aGVsbG8gd29ybGQ="}\n')
    proc = run_irtk("index", str(docs), "-o", str(tmp_path / "idx"), "--encoder", "clip", "--model", tiny_clip)
    _one_line_error(proc, "record 1", "field 'image'", "not a readable image")
    assert not (tmp_path / "idx").exists()


def test_bad_queries_and_incompatible_encoder(tmp_path, cli_index, other_clip):
    idx = cli_index
    bad = write_jsonl(tmp_path / "q.jsonl", [{"qid": "1", "text": "wrong column"}])
    out = tmp_path / "hits.jsonl"
    _one_line_error(run_irtk("retrieve", str(bad), "-i", str(idx), "-o", str(out)),
                    "q.jsonl", "line 1", "field 'query'")
    assert not out.exists()
    good = write_jsonl(tmp_path / "good.jsonl", [{"qid": "1", "query": "bell foundry"}])
    _one_line_error(run_irtk("retrieve", str(good), "-i", str(idx), "-o", str(out), "--encoder", "clip",
                             "--model", other_clip), "incompatible encoder", "dim 64 != 32")
    assert not out.exists()
    _one_line_error(run_irtk("retrieve", str(good), "-i", str(tmp_path / "nope")), "no such index folder")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """A small slice of the digits testbed."""
    from irtk.retrieval import testbed

    out = tmp_path_factory.mktemp("testbed")
    testbed.build(out)
    pairs = (out / "train-pairs.jsonl").read_text().splitlines()[:48]
    (out / "pairs.jsonl").write_text("\n".join(pairs) + "\n")
    docs = [json.loads(p) for p in pairs]
    write_jsonl(out / "docs.jsonl", [{k: d[k] for k in ("doc_id", "text", "image")} for d in docs])
    return out


def test_train_ciea_index_retrieve_and_hard_negatives(tmp_path, testbed):
    ckpt = tmp_path / "ciea"
    proc = _ok(run_irtk("train-retriever", str(testbed / "pairs.jsonl"), "-o", str(ckpt), "--encoder", "ciea",
                        "--text-model", "tiny", "--vision", "tiny", "--batch-size", "16", "--max-steps", "2",
                        "--lr", "1e-3"))
    # Frozen by default, as the released scripts freeze CLIP; a random tower frozen is flagged.
    assert "randomly initialised and frozen" in proc.stderr.decode()
    names = {p.name for p in ckpt.iterdir()}
    assert {"encoder.json", "model.safetensors", "provenance.json", "train_log.jsonl", "text"} <= names
    prov = json.loads((ckpt / "provenance.json").read_text())
    assert prov["stage"] == "train-retriever" and prov["train_config"]["encoder"] == "ciea"
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and "comp" in log[-1]
    assert 0 < log[-1]["logit_scale"] < 100  # learned from its initial 100, and logged
    assert json.loads((ckpt / "encoder.json").read_text())["freeze_vision"] is True
    idx = tmp_path / "idx"
    # --model reads IRTK_MODEL, as everywhere.
    _ok(run_irtk("index", str(testbed / "docs.jsonl"), "-o", str(idx), "--encoder", "ciea",
                 env={"IRTK_MODEL": str(ckpt)}))
    queries = write_jsonl(tmp_path / "q.jsonl", [{"qid": "q1", "query": json.loads(
        (testbed / "pairs.jsonl").read_text().splitlines()[0])["query"]}])
    qrels = tmp_path / "q.qrels"
    qrels.write_text("q1 0 train-0000 1\n")
    for flag in ("--report", "--metrics-out"):  # --metrics-out is an alias
        report = tmp_path / f"m{flag}.json"
        _ok(run_irtk("retrieve", str(queries), "-i", str(idx), "-k", "5", "--qrels", str(qrels),
                     flag, str(report), "-o", str(tmp_path / "run.trec")))
        metrics = json.loads(report.read_text())
        assert metrics["queries"] == 1 and metrics["semantics"]["ties"] == "trec_eval"
        assert "provenance" in metrics
    # Scores keep 9 significant digits: enough to give float32 scores back without new ties.
    score = (tmp_path / "run.trec").read_text().split()[4]
    assert len(score.lstrip("-0.").replace(".", "")) >= 7
    # Stage two: hard negatives mined from the first model's index, continuing from it.
    stage2 = tmp_path / "ciea-hn"
    proc = _ok(run_irtk("train-retriever", str(testbed / "pairs.jsonl"), "-o", str(stage2), "--encoder", "ciea",
                        "--model", str(ckpt), "--negatives-from", str(idx), "--docs", str(testbed / "docs.jsonl"),
                        "--batch-size", "16", "--max-steps", "1", "--negatives-k", "10"))
    assert "hard negatives" in proc.stderr.decode()
    log = [json.loads(line) for line in (stage2 / "train_log.jsonl").read_text().splitlines()]
    assert "comp" not in log[-1]  # the complementary loss is dropped in the hard-negative stage
    assert json.loads((stage2 / "provenance.json").read_text())["hard_negatives"] > 0
    assert json.loads((stage2 / "provenance.json").read_text())["train_config"]["negatives_pick"] == "sample"


def test_train_retriever_bad_pairs(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "a", "doc_id": "1", "text": "x"},
                                                   {"doc_id": "2", "text": "y"}])
    out = tmp_path / "ckpt"
    _one_line_error(run_irtk("train-retriever", str(pairs), "-o", str(out), "--encoder", "clip",
                             "--model", "tiny"), "pairs.jsonl", "line 2", "field 'query'")
    assert not out.exists()


@pytest.mark.slow
def test_text_corpus_example_end_to_end(tmp_path):
    from tests.conftest import ROOT

    ex = ROOT / "examples"
    _ok(run_irtk("index", str(ex / "corpus.jsonl"), "-o", str(tmp_path / "idx")))
    proc = _ok(run_irtk("retrieve", str(ex / "corpus-queries.jsonl"), "-i", str(tmp_path / "idx"),
                        "--qrels", str(ex / "corpus.qrels"), "--metrics-out", str(tmp_path / "m.json"),
                        "-o", str(tmp_path / "run.trec")))
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["MRR@10"] > 0.5, proc.stderr.decode()


def test_testbed_sheets_table_and_extractor_weights(tmp_path, testbed, tiny_ciea):
    from irtk.retrieval import testbed as tb

    pair = json.loads((testbed / "pairs.jsonl").read_text().splitlines()[0])
    # The caption names one digit of the two the query asks for, never both.
    named = pair["text"].rsplit(" is a ", 1)[1].rstrip(".")
    left, right = pair["query"].split("handwritten ")[1].split(" on the left and ")
    right = right.split(" on the right")[0]
    assert named in (left, right) and pair["text"].count(" digit is a ") == 1
    qrels = (testbed / "test.qrels").read_text().splitlines()
    assert len(qrels) == 450 and all(line.split()[2].startswith("test-") for line in qrels)
    w = tb.extractor_weights(tiny_ciea, testbed / "docs.jsonl")
    assert set(w) == {"named", "unnamed", "blank"} and all(0.0 <= v <= 1.0 for v in w.values())
    for seed, mrr in ((0, 0.5), (1, 0.7)):
        metrics = dict.fromkeys(("MRR@10", "NDCG@10", "Recall@5", "Recall@20", "Recall@100", "Hit@1"), mrr)
        (tmp_path / f"ciea-seed{seed}.json").write_text(json.dumps(metrics))
    table = tb.table([str(tmp_path / "ciea-seed0.json"), str(tmp_path / "ciea-seed1.json")])
    row = table.splitlines()[-1]
    # mean ± sd; 95% t-interval 60 ± 12.706 · 14.14 / √2 = 60 ± 127.1; range.
    assert row.startswith("| ciea | 2 | 60.0 ± 14.1 |") and row.endswith("| -67.1–187.1 | 50.0–70.0 |")
    one = tb.table([str(tmp_path / "ciea-seed1.json")]).splitlines()[-1]  # one seed: no spread to show
    assert one.startswith("| ciea | 1 | 70.0 | 70.0 |") and one.endswith("| 70.0 | – | – |")
