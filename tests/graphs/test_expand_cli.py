"""`irtk expand` end to end through the real CLI: output rows, stats, rejects, bad input, models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from irtk.io import read_rows
from tests.conftest import irtk_cmd, run_irtk
from tests.graphs.cdags import APPENDIX_JSON, HEAT, SHARED, copy_of


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def seeds(tmp_path) -> str:
    return write_jsonl(tmp_path / "seeds.jsonl", [
        {"id": "heat", "query": "Heat pumps for a Norwegian homeowner", "graph": HEAT, "topic": "energy",
         "rubric": ["Compares running costs"]},
        {"id": "shared", "query": "Something with a shared child", "graph": SHARED, "topic": "test",
         "intents": {"shallow": ["I want A"], "deep": []}},
    ])


def ok(result) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stderr.decode()


def rows_of(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def test_expand_emits_one_row_per_path_with_stats(seeds):
    r = run_irtk("expand", seeds)
    err = ok(r)
    rows = rows_of(r.stdout)
    assert [row["id"] for row in rows] == [f"heat/{k}" for k in range(8)] + [f"shared/{k}" for k in range(7)]
    first = rows[0]
    assert first["seed_id"] == "heat" and first["query"] == "Heat pumps for a Norwegian homeowner"
    assert first["simple_query"] == "Tell me about heat pumps"  # the graph's root when the seed has none
    assert first["graph"] == HEAT
    assert first["topic"] == "energy" and first["rubric"] == ["Compares running costs"]  # passed through
    assert [s["node_id"] for s in first["path"]] == ["q1", "q3", "q2"]
    assert first["path"][0]["target_node_ids"] == ["q1", "q2"]
    assert first["intents"] == [s["intent"] for s in first["path"]]
    assert len(first["dialogue"]) == 6 and first["render"] == "template"
    assert rows[8]["seed_intents"] == {"shallow": ["I want A"], "deep": []}
    assert "2 seeds -> 2 graphs (2 given, 0 built, 0 failed) -> 15 trajectories, 44 turns" in err
    assert "graph depth avg 2.0 max 2; paths per graph avg 7.5 max 8" in err


def test_template_output_is_byte_for_byte_deterministic(seeds):
    a, b = run_irtk("expand", seeds), run_irtk("expand", seeds)
    ok(a)
    assert a.stdout == b.stdout


def test_parquet_output_round_trips_with_provenance(seeds, tmp_path):
    out = tmp_path / "t.parquet"
    ok(run_irtk("expand", seeds, "-o", str(out)))
    rows = read_rows(out)
    assert len(rows) == 15 and rows[0]["graph"]["nodes"]["q3"]["text"] == "Which climate?"
    assert rows[0]["path"][1]["target_intents"] == rows_of(run_irtk("expand", seeds).stdout)[0]["path"][1][
        "target_intents"]
    prov = json.loads(pq.read_schema(out).metadata[b"irtk.provenance"])
    assert prov["stage"] == "expand" and prov["render"] == "template"


def test_pipe_into_show(seeds, tmp_path):
    bin_dir = os.path.dirname(irtk_cmd()[0])
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f"irtk expand {seeds} | irtk show --head 1"],
                          capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    shown = json.loads(done.stdout)
    assert shown["id"] == "heat/0" and len(shown["path"]) == 3


def test_max_paths_samples_with_the_seed(seeds):
    a = rows_of(run_irtk("expand", seeds, "--max-paths", "3", "--seed", "5").stdout)
    b = rows_of(run_irtk("expand", seeds, "--max-paths", "3", "--seed", "5").stdout)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    heat = [r["id"] for r in a if r["seed_id"] == "heat"]
    assert len(heat) == 3 and len(a) == 6
    ks = [int(i.split("/")[1]) for i in heat]
    assert ks == sorted(ks) and all(0 <= k < 8 for k in ks)
    full = {r["id"]: r for r in rows_of(run_irtk("expand", seeds).stdout)}
    assert all(r["path"] == full[r["id"]]["path"] for r in a)  # an id names the same path either way


def test_report_and_draw(seeds, tmp_path):
    report, pictures = tmp_path / "stats.json", tmp_path / "pics"
    ok(run_irtk("expand", seeds, "--report", str(report), "--draw", str(pictures), "-o", str(tmp_path / "t.jsonl")))
    stats = json.loads(report.read_text())
    assert stats["seeds"] == 2 and stats["graphs"] == 2 and stats["graphs_failed"] == 0
    assert stats["trajectories"] == 15 and stats["turns"] == 44
    assert stats["depth_avg"] == 2.0 and stats["depth_max"] == 2
    assert stats["paths_per_graph_avg"] == 7.5 and stats["paths_per_graph_max"] == 8
    names = {p.name for p in pictures.iterdir()}
    assert {"heat.mmd", "heat.dot", "shared.mmd", "shared.dot"} <= names
    if shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed: .svg/.png not checked")
    assert {"heat.svg", "heat.png", "shared.svg", "shared.png"} <= names


def test_appendix_layout_graph_passes_through_unchanged(tmp_path):
    graph = json.loads(APPENDIX_JSON)
    seeds = write_jsonl(tmp_path / "s.jsonl", [{"id": "ai-jobs", "query": "AI and jobs", "graph": graph}])
    rows = rows_of(run_irtk("expand", seeds).stdout)
    assert len(rows) == 14 and all(r["graph"] == graph for r in rows)
    parquet = tmp_path / "s.parquet"
    ok(run_irtk("show", seeds, "-o", str(parquet)))
    from_parquet = rows_of(run_irtk("expand", str(parquet)).stdout)
    assert [r["path"] for r in from_parquet] == [r["path"] for r in rows]


def test_invalid_graphs_are_rejected_and_the_batch_goes_on(tmp_path):
    cyclic = copy_of(HEAT)
    cyclic["nodes"]["q3"]["options"][0]["next_node_id"] = ["q1"]
    seeds = write_jsonl(tmp_path / "s.jsonl", [
        {"id": "bad", "query": "q", "graph": cyclic},
        {"id": "no-graph", "query": "q"},
        {"id": "good", "query": "q", "graph": SHARED},
    ])
    rejects = tmp_path / "rejects.jsonl"
    r = run_irtk("expand", seeds, "--no-build", "--rejects", str(rejects))
    err = ok(r)
    assert {row["seed_id"] for row in rows_of(r.stdout)} == {"good"}
    got = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert got == [
        {"id": "bad", "stage": "graph", "reason": "graph.nodes: cycle q1 -> q3 -> q1 (a C-DAG must be acyclic)"},
        {"id": "no-graph", "stage": "graph", "reason": "the seed has no graph and building is off (--no-build)"},
    ]
    assert "seed 'bad' rejected at graph: graph.nodes: cycle q1 -> q3 -> q1" in err
    assert "3 seeds -> 1 graphs (1 given, 0 built, 2 failed)" in err
    # -q drops the statistics, never the rejects: a dropped seed is always said.
    quiet = ok(run_irtk("expand", seeds, "--no-build", "-q"))
    assert "seed 'no-graph' rejected at graph" in quiet and "seeds ->" not in quiet


def test_all_rejected_fails_without_output(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "query": "q"}])
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    r = run_irtk("expand", seeds, "--no-build", "-o", str(out), "--rejects", str(rejects))
    assert r.returncode == 1
    assert "error: no trajectories: all 1 seed(s) were rejected" in r.stderr.decode()
    assert not out.exists()
    assert json.loads(rejects.read_text())["id"] == "a"


def test_node_limit_option(seeds):
    r = run_irtk("expand", seeds, "--max-nodes", "2")
    assert r.returncode == 1
    assert "graph.nodes: 3 nodes, more than the limit of 2" in r.stderr.decode()


BAD_RECORDS = [
    ([{"id": "a", "query": "q", "graph": HEAT}, {"id": "b"}], "s.jsonl: line 2: field 'query': missing required field"),
    ([{"id": "a", "query": 5}], "s.jsonl: line 1: field 'query': expected string, got integer"),
    ([{"id": 7, "query": "q"}], "s.jsonl: line 1: field 'id': expected string, got integer"),
    ([{"id": "a", "query": "q", "graph": {"root_node": "r", "start_node_ids": ["q1"], "nodes": "q1"}}],
     "s.jsonl: line 1: field 'graph.nodes': expected object keyed by id, got string"),
    ([{"id": "a", "query": "q", "graph": {"root_node": "r", "start_node_ids": "q1", "nodes": {}}}],
     "s.jsonl: line 1: field 'graph.start_node_ids': expected array, got string"),
    ([{"id": "a", "query": "q", "rubric": "be good"}], "s.jsonl: line 1: field 'rubric': expected array, got string"),
    (['{"id": "a", "query": "q", "graph": {"root_node"'], "s.jsonl: line 1: truncated JSON"),
    (['["a", "b"]'], "s.jsonl: line 1: expected a JSON object, got list"),
    ([""], "s.jsonl: empty input: no records"),
]


@pytest.mark.parametrize("lines,message", BAD_RECORDS)
def test_bad_seed_records_give_one_clear_line_and_no_output(tmp_path, lines, message):
    seeds = write_jsonl(tmp_path / "s.jsonl", lines)
    out = tmp_path / "out.jsonl"
    r = run_irtk("expand", seeds, "-o", str(out), "--no-build")
    err = r.stderr.decode()
    assert r.returncode == 1
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_truncated_parquet_is_an_input_error(seeds, tmp_path):
    full = tmp_path / "s.parquet"
    ok(run_irtk("show", seeds, "-o", str(full)))
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    r = run_irtk("expand", str(cut))
    assert r.returncode == 1 and "cut.parquet: not a readable Parquet file" in r.stderr.decode()


def test_stdin_input_and_usage_errors(seeds):
    with open(seeds, "rb") as fh:
        r = run_irtk("expand", input=fh.read())
    assert len(rows_of(r.stdout)) == 15
    bad = run_irtk("expand", seeds, "--render", "poetry")
    assert bad.returncode == 2 and "--render must be one of template, llm" in bad.stderr.decode()
    bad = run_irtk("expand", seeds, "--min-options", "3", "--max-options", "2")
    assert bad.returncode == 2


# --- with models -----------------------------------------------------------------------------------------


def test_garbage_model_output_is_retried_then_rejected(tmp_path, tiny_llama):
    seeds = write_jsonl(tmp_path / "s.jsonl", [
        {"id": "needs-graph", "query": "Write a report on urban heat islands for city planners."},
        {"id": "has-graph", "query": "q", "graph": SHARED},
    ])
    rejects, report = tmp_path / "rej.jsonl", tmp_path / "stats.json"
    r = run_irtk("expand", seeds, "--model", tiny_llama, "--retries", "1", "--max-tokens", "12",
                 "--rejects", str(rejects), "--report", str(report))
    err = ok(r)
    assert {row["seed_id"] for row in rows_of(r.stdout)} == {"has-graph"}
    [rej] = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert rej["id"] == "needs-graph" and rej["stage"] == "extract"
    assert rej["reason"].startswith("graph building failed after 2 attempt(s): the reply is not a JSON object")
    assert "seed 'needs-graph' rejected at extract" in err
    stats = json.loads(report.read_text())
    assert stats["graphs_failed"] == 1 and stats["llm_calls"] == 2 and stats["rejects"] == [rej]


def test_llm_rendering_with_a_tiny_model(tmp_path, tiny_llama):
    seeds = write_jsonl(tmp_path / "s.jsonl", [{"id": "heat", "query": "q", "graph": HEAT}])
    r = run_irtk("expand", seeds, "--render", "llm", "--model", tiny_llama, "--render-max-tokens", "8",
                 "--max-paths", "3")
    ok(r)
    rows = rows_of(r.stdout)
    assert len(rows) == 3
    for row in rows:
        assert row["render"] == f"llm:hf:{tiny_llama}"
        assert [m["role"] for m in row["dialogue"]] == ["assistant", "user"] * len(row["path"])
        assert all(isinstance(m["content"], str) and m["content"] for m in row["dialogue"])


@pytest.mark.slow
def test_graph_building_on_the_embedded_smollm2(tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [{
        "id": "housing", "query": "Write a detailed report on how remote work changed housing prices in "
                                  "mid-sized US cities since 2020, for city council members.",
        "rubric": ["Separates rents from purchase prices", "Suggests policy options"]}])
    rejects, out = tmp_path / "rej.jsonl", tmp_path / "t.jsonl"
    r = run_irtk("expand", seeds, "--retries", "0", "--max-tokens", "48", "--rejects", str(rejects),
                 "-o", str(out))
    err = r.stderr.decode()
    if r.returncode == 0:  # the model managed a valid graph: it must yield real trajectories
        rows = read_rows(out)
        assert rows and all(r["seed_id"] == "housing" and r["path"] for r in rows)
        assert not rejects.read_text().strip()
    else:  # it did not: the reject names the seed, the stage and the reason, and nothing is written
        assert r.returncode == 1 and "no trajectories: all 1 seed(s) were rejected" in err
        [rej] = [json.loads(line) for line in rejects.read_text().splitlines()]
        assert rej["id"] == "housing" and rej["stage"] in {"extract", "deep", "base", "expand"}
        assert rej["reason"].startswith("graph building failed after 1 attempt(s): ")
        assert f"seed 'housing' rejected at {rej['stage']}" in err
        assert not out.exists()
