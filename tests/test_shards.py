# ruff: noqa: F811 - fixtures imported from tests/research are test arguments here
"""Every data stage honours --shard K/N (and Slurm's array variables): the shards' outputs,
concatenated, hold exactly the rows of the unsharded run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_irtk
from tests.research.conftest import write_jsonl

SEEDS = ROOT / "examples" / "seeds.jsonl"


def _rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _by_id(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["id"])


def _sharded(args: list[str], n: int, **kw) -> list[dict]:
    out = []
    for k in range(n):
        r = run_irtk(*args, "--shard", f"{k}/{n}", "--format", "jsonl", **kw)
        assert r.returncode == 0, r.stderr
        out += _rows(r.stdout)
    return out


def test_expand_shards_concatenate_to_the_whole():
    args = ["expand", str(SEEDS), "--no-build", "-q"]
    whole = run_irtk(*args, "--format", "jsonl")
    assert whole.returncode == 0, whole.stderr
    assert _by_id(_sharded(args, 3)) == _by_id(_rows(whole.stdout))


def test_slurm_array_variables_choose_the_shard():
    args = ["expand", str(SEEDS), "--no-build", "-q", "--format", "jsonl"]
    explicit = run_irtk(*args, "--shard", "1/3").stdout
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"}
    assert run_irtk(*args, env=env).stdout == explicit and explicit


@pytest.mark.slow
def test_simulate_shards_concatenate_to_the_whole(tmp_path):
    traj = tmp_path / "traj.jsonl"
    r = run_irtk("expand", str(SEEDS), "--no-build", "-q", "--format", "jsonl")
    traj.write_bytes(b"\n".join(r.stdout.splitlines()[:10]) + b"\n")
    args = ["simulate", str(traj), "--policy", "oracle", "--summary", "template", "--max-turns", "3", "-q"]
    whole = run_irtk(*args, "--format", "jsonl")
    assert whole.returncode == 0, whole.stderr

    def strip(rows: list[dict]) -> list[dict]:  # timings differ from run to run
        return [{k: v for k, v in row.items() if k not in ("seconds",)} for row in rows]

    assert strip(_by_id(_sharded(args, 2))) == strip(_by_id(_rows(whole.stdout)))


# --- retrieve, index, research, entropy-audit ------------------------------------------------------
# A tiny random text encoder, an index of real corpus documents built with it and gate thresholds
# for it: the research tests' session fixtures, imported (so registered here) rather than built a
# second way; the tests take them as arguments, which ruff reads as redefinitions.
from tests.research.conftest import docs, index, thresholds, tiny_st  # noqa: E402, F401

QUERIES = {"copy a whole directory tree": "shutil.copytree", "middle value of some numbers": "statistics.median",
           "make a temporary folder": "tempfile.mkdtemp", "find files matching a wildcard pattern": "glob.glob",
           "spread of a sample": "statistics.stdev", "delete a folder and its files": "shutil.rmtree",
           "move a file somewhere else": "shutil.move"}


def _close(a: object, b: object) -> bool:
    """Equal, floats up to rounding: a batch of other rows pads a row differently, which moves an
    encoder's or a model's float32 sums in the last digits."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(
            a, b, rel_tol=1e-4, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) and want
    for g, w in zip(got, want, strict=True):
        assert _close(g, w), f"shard row\n{g}\ndiffers from the unsharded row\n{w}"


def _hits(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["qid"], r["rank"]))


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("queries")
    (folder / "qrels").write_text("".join(f"q{i} 0 {d} 1\n" for i, d in enumerate(QUERIES.values())))
    return str(write_jsonl(folder / "queries.jsonl", [{"qid": f"q{i}", "query": q} for i, q in enumerate(QUERIES)]))


@pytest.fixture(scope="module")
def whole_hits(queries, index) -> list[dict]:
    r = run_irtk("retrieve", queries, "-i", index, "-k", "5", "--format", "jsonl", "-q")
    assert r.returncode == 0, r.stderr
    return _hits(_rows(r.stdout))


def test_retrieve_shards_concatenate_to_the_whole(tmp_path, queries, index, whole_hits):
    args = ["retrieve", queries, "-i", index, "-k", "5", "-q", "--format", "jsonl"]
    qrels = str(Path(queries).with_name("qrels"))
    first = run_irtk(*args, "--shard", "0/2", "--qrels", qrels, "--report", str(tmp_path / "m.json"))
    # The second slice as a Slurm array task sees it: task 4 of an array numbered from 3.
    second = run_irtk(*args, env={"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "2",
                                  "SLURM_ARRAY_TASK_MIN": "3"})
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    parts = [_rows(first.stdout), _rows(second.stdout)]
    assert all(parts) and {r["qid"] for r in parts[0]}.isdisjoint(r["qid"] for r in parts[1])
    _assert_same_rows(_hits(parts[0] + parts[1]), whole_hits)
    # A shard's metrics average its own 4 judged queries; the other slice's are not "missing".
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["queries"] == 4 and metrics["queries_missing_from_run"] == 0


def test_index_shards_merge_to_an_index_that_searches_like_the_whole(tmp_path, docs, tiny_st, queries,
                                                                    whole_hits):
    # `index --shard` builds a partial index of every N-th document; the merged folder is the
    # unsharded index, so searching it gives the whole index's hits.
    for k in range(2):
        r = run_irtk("index", str(docs), "-o", str(tmp_path / f"s{k}"), "--encoder", "text",
                     "--model", tiny_st, "--shard", f"{k}/2", "-q")
        assert r.returncode == 0, r.stderr
    r = run_irtk("index", "--merge", str(tmp_path / "s0"), "--merge", str(tmp_path / "s1"),
                 "-o", str(tmp_path / "merged"), "-q")
    assert r.returncode == 0, r.stderr
    r = run_irtk("retrieve", queries, "-i", str(tmp_path / "merged"), "-k", "5", "--format", "jsonl", "-q")
    assert r.returncode == 0, r.stderr
    _assert_same_rows(_hits(_rows(r.stdout)), whole_hits)


def test_research_shards_concatenate_to_the_whole(tmp_path, index, tiny_st, thresholds):
    topics = [("copy", "How do I copy files?", "copying a whole directory tree"),
              ("stats", "How do I summarise numbers?", "the median of data"),
              ("temp", "Where do scratch files go?", "creating a temporary directory"),
              ("glob", "How do I list matching files?", "matching file names with a pattern"),
              ("spread", "How spread out is my data?", "the sample variance")]
    requests = write_jsonl(tmp_path / "requests.jsonl", [
        {"id": rid, "query": q, "intents": [f"I want the report to cover {what}."]} for rid, q, what in topics])
    args = ["research", str(requests), "--index", index, "--embedder", tiny_st, "--thresholds", thresholds,
            "--clarify", "none", "--writer", "extractive", "--repeats", "2", "--bootstrap", "0", "-q"]
    whole = run_irtk(*args, "--format", "jsonl")
    assert whole.returncode == 0, whole.stderr

    def order(rows: list[dict]) -> list[dict]:
        return sorted(rows, key=lambda r: (r["id"], r["seed"]))

    _assert_same_rows(order(_sharded(args, 2)), order(_rows(whole.stdout)))


def test_entropy_audit_shards_concatenate_to_the_whole(tmp_path, tiny_llama):
    rows = write_jsonl(tmp_path / "rows.jsonl", [
        {"id": f"r{i}", "prompt": f"Question {i}: what colour is the sky?",
         "completion": f"It is {'blue grey red dark'.split()[i % 4]} at {i} o'clock.", "advantage": i - 2.5}
        for i in range(6)])
    args = ["entropy-audit", str(rows), "--model", tiny_llama, "-q"]
    whole = run_irtk(*args, "--format", "jsonl")
    assert whole.returncode == 0, whole.stderr

    def order(out: list[dict]) -> list[dict]:
        return sorted(out, key=lambda r: (r["id"], r["turn"] or 0))

    _assert_same_rows(order(_sharded(args, 2)), order(_rows(whole.stdout)))
    # GRPO groups and the one verification step need every record: a slice is refused.
    r = run_irtk(*args, "--group-by", "id", "--shard", "0/2")
    assert r.returncode == 2 and b"--group-by needs every record" in r.stderr
