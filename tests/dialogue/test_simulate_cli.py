"""`irtk simulate` through the real CLI: bad input, resume after a kill, the baseline ordering on
the example seeds, and the brief's pipeline on the embedded models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from irtk.io import read_rows
from tests.conftest import ROOT, irtk_cmd, run_irtk

from .simulate_fixtures import ASIA_USER, EUROPE_USER, jsonl

SEEDS = ROOT / "examples" / "seeds.jsonl"


def one_error_line(result) -> str:
    err = result.stderr.decode().strip()
    assert result.returncode == 1, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("lines, expected", [
    ([EUROPE_USER, {**ASIA_USER, "intents": []}], "line 2: field 'intents': no latent intents"),
    ([{k: v for k, v in EUROPE_USER.items() if k != "intents"}],
     "line 1: field 'intents': missing required field"),
    ([{**EUROPE_USER, "graph": {"root_node": "r", "start_node_ids": [], "nodes": {}}}],
     "line 1: field 'graph.nodes': empty graph"),
    ([{**EUROPE_USER, "intents": [1, 2]}], "line 1: field 'intents[0]': expected string, got integer"),
    ([json.dumps(EUROPE_USER), json.dumps(ASIA_USER)[:200]], "line 2: truncated JSON"),
    (["[1, 2]"], "line 1: expected a JSON object"),
])
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path, lines, expected):
    src = tmp_path / "traj.jsonl"
    src.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    out = tmp_path / "dialogs.parquet"
    r = run_irtk("simulate", str(src), "--policy", "oracle", "--summary", "template", "-o", str(out))
    err = one_error_line(r)
    assert str(src) in err and expected in err
    assert not out.exists()
    assert not any(p.name.startswith(".dialogs.parquet") for p in tmp_path.iterdir())


def test_empty_input_and_usage_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = run_irtk("simulate", str(empty), "--policy", "oracle")
    assert "empty input" in one_error_line(r)
    r = run_irtk("simulate", "--policy", "oracle", "--resume", input=jsonl([EUROPE_USER]))
    assert r.returncode == 2 and b"--resume needs -o" in r.stderr
    r = run_irtk("simulate", "--policy", "clever", input=jsonl([EUROPE_USER]))
    assert r.returncode == 2 and b"--policy must be one of" in r.stderr
    # Parquet input that was cut short.
    good = tmp_path / "t.parquet"
    assert run_irtk("show", "-o", str(good), input=jsonl([EUROPE_USER])).returncode == 0
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "cut.parquet" in one_error_line(run_irtk("simulate", str(cut), "--policy", "oracle"))


@pytest.fixture(scope="module")
def example_trajectories(tmp_path_factory) -> str:
    """`irtk expand examples/seeds.jsonl --render template` (hand-made graphs only, 2 paths each)."""
    out = tmp_path_factory.mktemp("expand") / "traj.jsonl"
    r = run_irtk("expand", str(SEEDS), "--render", "template", "--no-build", "--max-paths", "2",
                 "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()
    return str(out)


@pytest.mark.slow
def test_baseline_ordering_on_the_examples(example_trajectories, tmp_path):
    """With the same question budget, the trajectory's own questions cover more of the user's
    intents than random graph questions, which cover more than asking nothing."""
    recall = {}
    for policy in ("oracle", "random", "none"):
        report = tmp_path / f"{policy}.json"
        r = run_irtk("simulate", example_trajectories, "--policy", policy, "--summary", "template",
                     "--max-turns", "3", "--report", str(report), "-o", str(tmp_path / f"{policy}.parquet"))
        assert r.returncode == 0, r.stderr.decode()
        assert "intent recall" in r.stderr.decode()  # the metrics table on stderr
        metrics = json.loads(report.read_text())["metrics"]
        recall[policy] = metrics["recall"]
    assert recall["oracle"]["mean"] > recall["random"]["mean"] > recall["none"]["mean"] == 0.0
    # Not a coin flip: the intervals do not overlap.
    assert recall["oracle"]["ci_low"] > recall["random"]["ci_high"]
    assert recall["random"]["ci_low"] > 0.0


def _wait_for_lines(path, n, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    raise AssertionError("no checkpoint lines appeared")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_resume_after_a_killed_run_writes_each_dialogue_once(example_trajectories, tmp_path, suffix):
    out = tmp_path / f"dialogs.{suffix}"
    args = ["simulate", example_trajectories, "--policy", "oracle", "--summary", "template",
            "--batch-size", "1", "-o", str(out)]
    total = len(read_rows(example_trajectories))
    proc = subprocess.Popen([*irtk_cmd(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecar = tmp_path / f".dialogs.{suffix}.partial.jsonl"
    try:
        _wait_for_lines(sidecar, 3, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not out.exists()  # the killed run never replaced the output
    done_before = sidecar.read_bytes().count(b"\n")
    assert 3 <= done_before < total
    r = run_irtk(*args, "--resume")
    assert r.returncode == 0, r.stderr.decode()
    assert f"resuming: {done_before}" in r.stderr.decode() or "resuming:" in r.stderr.decode()
    rows = read_rows(out)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) == total
    assert not sidecar.exists()
    assert not list(tmp_path.glob(f".dialogs.{suffix}.*.tmp"))  # the killed writer's temp is cleaned
    # Resuming a finished output simulates nothing new.
    r = run_irtk(*args, "--resume", "--report", str(tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["new_dialogues"] == 0 and report["dialogues"] == total
    assert len(read_rows(out)) == total


@pytest.mark.slow
def test_the_brief_pipeline_with_defaults_writes_parquet(tmp_path, smollm2_path):
    """`irtk expand examples/seeds.jsonl | irtk simulate > dialogs.parquet`, default options,
    bounded by --limit/--max-turns (and the expand side stopped once simulate is done)."""
    out = tmp_path / "dialogs.parquet"
    expand = subprocess.Popen([*irtk_cmd(), "expand", str(SEEDS)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    with open(out, "wb") as fh:
        simulate = subprocess.Popen([*irtk_cmd(), "simulate", "--limit", "2", "--max-turns", "1"],
                                    stdin=expand.stdout, stdout=fh, stderr=subprocess.PIPE)
        expand.stdout.close()
        _, err = simulate.communicate(timeout=900)
    expand.kill()
    expand.wait()
    assert simulate.returncode == 0, err.decode()
    assert "intent precision" in err.decode()
    table = pq.read_table(out)
    assert table.num_rows == 2
    for name in ("id", "policy", "turns", "matched_intents", "precision", "recall", "f1", "quality",
                 "summary", "tokens_in", "graph", "path", "intents"):
        assert name in table.column_names
    rows = read_rows(out)
    assert all(r["policy"] == "model" and len(r["turns"]) == 1 and r["summary"] for r in rows)
    # A first question has nothing to repeat: the gate answers it, calls it irrelevant, or (it
    # only restates the request) a restatement.
    assert all(r["tokens_in"] > 0 and r["turns"][0]["verdict"] in ("answered", "restates", "irrelevant")
               for r in rows)
    shown = run_irtk("show", str(out), "--head", "1")
    assert shown.returncode == 0 and b'"turns"' in shown.stdout
