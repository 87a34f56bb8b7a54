"""``irtk research`` end to end on tiny models: each clarify mode, the citation check through the
LLM writer, Markdown reports, the comparison table, and bad input."""

from __future__ import annotations

import json

import pytest

from irtk.io import read_rows
from tests.conftest import run_irtk

from .conftest import env, write_jsonl
from .fixtures import INVENTED

SCRIPTED = "tests.research.fixtures:ScriptedBackend"


def research(*args: str, input: str | None = None):
    return run_irtk("research", *args, input=input, env=env())


def common(index: str, tiny_st: str, thresholds: str) -> list[str]:
    return ["--index", index, "--embedder", tiny_st, "--thresholds", thresholds, "--bootstrap", "50", "--max-turns", "2"]


def test_none_extractive_needs_no_model_and_writes_markdown(tmp_path, requests_file, index, tiny_st, thresholds):
    out = tmp_path / "reports.jsonl"
    md = tmp_path / "md"
    report = tmp_path / "metrics.json"
    r = research(str(requests_file), *common(index, tiny_st, thresholds), "--clarify", "none", "--writer", "extractive",
                 "-o", str(out), "--out-dir", str(md), "--report", str(report), "--repeats", "2")
    assert r.returncode == 0, r.stderr.decode()
    rows = read_rows(out)
    assert [(x["id"], x["seed"]) for x in rows] == [("copy", 0), ("stats", 0), ("copy", 1), ("stats", 1)]
    first = rows[0]
    assert first["turns"] == [] and first["brief"] == {"query": "How do I copy files?", "points": []}
    assert first["subqueries"] == ["How do I copy files?"]
    ids = [e["docid"] for e in first["evidence"]]
    assert 1 <= len(ids) <= 5 and all("[" + d + "]" in first["report"] for d in ids[:1])
    assert first["citations"]["invalid"] == 0 and first["citations"]["total"] > 0
    # A graph request is a simulated user: one path drawn per seed, its intents evaluated.
    assert first["intents"] and first["coverage"] is not None and first["path"]
    assert sorted(p.name for p in md.iterdir()) == ["copy.seed0.md", "copy.seed1.md", "stats.seed0.md",
                                                     "stats.seed1.md"]
    assert "### Evidence" in (md / "copy.seed0.md").read_text()
    metrics = json.loads(report.read_text())
    assert metrics["label"] == "none" and metrics["runs"] == 4 and metrics["requests"] == 2
    assert metrics["metrics"]["citation_validity"]["mean"] == 1.0
    # The extractive writer is deterministic: the same run gives the same reports.
    again = tmp_path / "again.jsonl"
    r = research(str(requests_file), *common(index, tiny_st, thresholds), "--clarify", "none", "--writer", "extractive",
                 "-o", str(again), "--repeats", "2", "-q")
    assert r.returncode == 0 and [x["report"] for x in read_rows(again)] == [x["report"] for x in rows]
    table = run_irtk("research-table", str(report), str(report))
    assert table.returncode == 0 and table.stdout.decode().count("| none |") == 2


def test_simulate_on_a_tiny_model(tmp_path, requests_file, index, tiny_st, thresholds, tiny_llama):
    out = tmp_path / "reports.jsonl"
    r = research(str(requests_file), *common(index, tiny_st, thresholds), "--clarify", "simulate", "--model", tiny_llama,
                 "--max-tokens", "12", "--summary", "template", "--writer", "extractive", "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()
    rows = read_rows(out)
    assert len(rows) == 2 and all(len(x["turns"]) == 2 for x in rows)
    assert {t["verdict"] for x in rows for t in x["turns"]} <= {"answered", "redundant", "irrelevant"}
    assert all(x["coverage"] is not None for x in rows)
    # The brief's points are exactly the answers the user gave to questions the gate let through.
    for x in rows:
        kept = [t["answer"] for t in x["turns"] if t["verdict"] == "answered"]
        assert x["brief"]["points"] == kept


def test_auto_states_assumptions_with_a_tiny_model(tmp_path, index, tiny_st, thresholds, tiny_llama):
    out = tmp_path / "reports.jsonl"
    r = research("How do I copy files?", *common(index, tiny_st, thresholds), "--clarify", "auto", "--model", tiny_llama,
                 "--max-tokens", "16", "--writer", "llm", "--writer-max-tokens", "16", "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()
    [row] = read_rows(out)
    assert row["id"] == "query" and row["clarify"] == "auto" and row["turns"] == []
    assert row["brief"]["points"] == row["assumptions"]
    assert row["coverage"] is None  # no latent intents to evaluate against
    assert row["tokens_out"] > 0  # the model really wrote the assumptions and the report


def test_auto_assumptions_become_points_and_sub_queries(tmp_path, index, tiny_st, thresholds):
    out = tmp_path / "reports.jsonl"
    r = research("How do I copy files?", *common(index, tiny_st, thresholds), "--clarify", "auto", "--backend", SCRIPTED,
                 "--writer", "extractive", "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()
    [row] = read_rows(out)
    assert row["assumptions"] == ["I assume the user wants to copy whole directory trees.",
                                  "I assume a short report."]
    assert row["subqueries"] == ["How do I copy files?", "the user wants to copy whole directory trees.",
                                 "a short report."]


def test_llm_writer_citations_of_missing_documents_are_removed_and_counted(tmp_path, requests_file, index,
                                                                          tiny_st, thresholds):
    out = tmp_path / "reports.jsonl"
    report = tmp_path / "metrics.json"
    r = research(str(requests_file), *common(index, tiny_st, thresholds), "--clarify", "simulate", "--backend", SCRIPTED,
                 "--writer", "llm", "-o", str(out), "--report", str(report))
    assert r.returncode == 0, r.stderr.decode()
    for row in read_rows(out):
        assert row["citations"] == {"total": 2, "valid": 1, "invalid": 1, "invalid_ids": [INVENTED]}
        assert INVENTED not in row["report"] and "[as above]" in row["report"]
        assert f"[{row['evidence'][0]['docid']}]" in row["report"] or row["evidence"]
    metrics = json.loads(report.read_text())
    assert metrics["metrics"]["citation_validity"]["mean"] == 0.5


def test_interactive_without_a_terminal_says_so_and_uses_auto(tmp_path, index, tiny_st, thresholds):
    out = tmp_path / "reports.jsonl"
    requests = write_jsonl(tmp_path / "r.jsonl", [{"id": "r1", "query": "How do I copy files?"}])
    r = research(*common(index, tiny_st, thresholds), "--clarify", "interactive", "--backend", SCRIPTED,
                 "--writer", "extractive", "-o", str(out), input=requests.read_text())
    assert r.returncode == 0, r.stderr.decode()
    assert "stdin is not a terminal" in r.stderr.decode()
    [row] = read_rows(out)
    assert row["clarify"] == "auto" and row["assumptions"]


@pytest.mark.parametrize("case", ["no-index", "not-an-index", "other-encoder", "empty-query", "no-query",
                                  "bad-graph"])
def test_bad_input_is_one_line_and_exit_1(tmp_path, case, index, tiny_st, thresholds, other_st, requests_file):
    out = tmp_path / "out.jsonl"
    args = [str(requests_file), "--index", index, "--clarify", "none", "--writer", "extractive", "-o", str(out)]
    expect = {
        "no-index": "no such index folder",
        "not-an-index": "not an irtk index folder",
        "other-encoder": "incompatible encoder",
        "empty-query": "empty query",
        "no-query": "line 2: field 'query': missing required field",
        "bad-graph": "field 'graph.start_node_ids[0]'",
    }[case]
    if case == "no-index":
        args[2] = str(tmp_path / "missing")
    elif case == "not-an-index":
        args[2] = str(tmp_path)
    elif case == "other-encoder":
        args += ["--encoder", "text", "--encoder-model", other_st]
    elif case == "empty-query":
        args[0] = "   "
    elif case == "no-query":
        args[0] = str(write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "query": "ok"}, {"id": "b", "intents": []}]))
    elif case == "bad-graph":
        args[0] = str(write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "query": "ok", "graph": {
            "root_node": "ok", "start_node_ids": ["q9"], "nodes": {"q1": {"id": "q1", "text": "?", "options": [
                {"text": "a", "next_node_id": []}, {"text": "b", "next_node_id": []}]}}}}]))
    r = research(*args)
    err = r.stderr.decode().strip()
    assert r.returncode == 1, err
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err
    assert not out.exists()


def test_simulate_needs_intents(tmp_path, index):
    requests = write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "query": "How do I copy files?"}])
    r = research(str(requests), "--index", index, "--clarify", "simulate", "-o", str(tmp_path / "o.jsonl"))
    assert r.returncode == 1 and "row 1: field 'intents'" in r.stderr.decode()
