"""Record I/O: round trips, sniffing, unknown columns, provenance, atomic output, bad input."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from irtk.errors import InputError, UsageError
from irtk.io import RecordReader, RecordWriter, Shard, make_provenance, read_rows, resolve_format
from irtk.records import SEED, TRAJECTORY

GRAPH = {
    "root_node": "heat pumps",
    "start_node_ids": ["q1", "q2"],
    "nodes": {
        "q1": {"id": "q1", "text": "Which climate?", "options": [
            {"text": "cold", "next_node_id": ["q3"]}, {"text": "mild", "next_node_id": []}]},
        "q2": {"id": "q2", "text": "Which homes?", "options": [
            {"text": "detached", "next_node_id": ["q3"]}, {"text": "flats", "next_node_id": []}]},
        "q3": {"id": "q3", "text": "Retrofit or new build?", "options": [
            {"text": "retrofit", "next_node_id": []}, {"text": "new", "next_node_id": []}]},
    },
}


def seed(i: int, **extra) -> dict:
    return {"id": f"s{i}", "query": f"query {i}", "graph": GRAPH, **extra}


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_parquet_round_trip_keeps_nested_graph_and_unknown_columns(tmp_path):
    rows = [seed(i, note={"free": [1, 2, i]}, tag=f"t{i}") for i in range(5)]
    src = tmp_path / "seeds.jsonl"
    write_jsonl(src, rows)
    out = tmp_path / "seeds.parquet"
    with RecordWriter(out, record_type=SEED, provenance=make_provenance("test", seed=3)) as w:
        for batch in RecordReader(src, record_type=SEED, batch_size=2).batches():
            w.write_rows(batch)
    table = pq.read_table(out)
    # Nested data are Arrow structs/lists, not JSON strings; nodes are a list of node structs.
    assert str(table.schema.field("graph").type).startswith("struct<root_node: string")
    assert table.schema.field("note").type.num_fields == 1
    back = read_rows(out)
    for orig, got in zip(rows, back, strict=True):
        assert got["note"] == orig["note"] and got["tag"] == orig["tag"]
        assert list(got["graph"]["nodes"]) == ["q1", "q2", "q3"]  # the paper's keyed layout again
        assert got["graph"]["nodes"]["q1"]["options"][0]["next_node_id"] == ["q3"]
    prov = RecordReader(out).provenance
    assert prov["stage"] == "test" and prov["seed"] == 3 and "irtk_version" in prov


def test_untyped_rows_of_a_known_type_keep_its_layout(tmp_path):
    """Rows written without a record type (a seed split, a merge) still get the C-DAG's keyed-list
    layout: graphs with different node ids in one file come back with only their own nodes."""
    other = {**GRAPH, "nodes": {"a1": {**GRAPH["nodes"]["q1"], "id": "a1"}}, "start_node_ids": ["a1"]}
    rows = [seed(0), seed(1, graph=other)]
    out = tmp_path / "untyped.parquet"
    with RecordWriter(out) as w:
        w.write_rows(rows)
    back = read_rows(out)
    assert [list(r["graph"]["nodes"]) for r in back] == [["q1", "q2", "q3"], ["a1"]]


def test_parquet_to_jsonl_restores_the_appendix_layout(tmp_path):
    out = tmp_path / "a.parquet"
    with RecordWriter(out, record_type=SEED) as w:
        w.write_rows([seed(1)])
    jl = tmp_path / "a.jsonl"
    with RecordWriter(jl) as w:
        w.write_rows(read_rows(out))
    row = json.loads(jl.read_text())
    assert set(row["graph"]["nodes"]) == {"q1", "q2", "q3"}
    assert row["graph"]["nodes"]["q3"]["text"] == "Retrofit or new build?"


def test_sniffing_ignores_the_extension(tmp_path):
    p = tmp_path / "really-parquet.jsonl"
    with RecordWriter(p, fmt="parquet") as w:
        w.write_rows([{"id": "a"}])
    r = RecordReader(p)
    assert r.format == "parquet" and list(r.rows()) == [{"id": "a"}]


def test_format_resolution(tmp_path):
    assert resolve_format("parquet", None) == "parquet"
    assert resolve_format(None, tmp_path / "x.parquet") == "parquet"
    assert resolve_format(None, tmp_path / "x.jsonl") == "jsonl"
    assert resolve_format(None, tmp_path / "x.txt") == "jsonl"
    with pytest.raises(UsageError):
        resolve_format("csv", None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "s1", "query": "q"}\n{"id": "s2", "query": \n', "line 2: truncated JSON"),
        (b'{"id": "s1", "query": "q"}\n{"id": "s2" "query": "q"}\n', "line 2: invalid JSON"),
        (b'{"id": "s1", "query": "q"}\n[1, 2]\n', "line 2: expected a JSON object"),
        (b'{"id": "s1", "query": "caf\xe9"}\n', "line 1: not valid UTF-8"),
        (b"", "empty input"),
        (b"\n\n  \n", "empty input"),
        (b'{"id": "s1", "query": 7}\n', "line 1: field 'query': expected string, got integer"),
        (b'{"id": "s1"}\n', "line 1: field 'query': missing required field"),
        (b'{"id": "s1", "query": "q", "graph": {"nodes": {"q1": {"options": "x"}}}}\n',
         "field 'graph.nodes.q1.options': expected array, got string"),
    ],
)
def test_bad_jsonl_names_file_line_and_field(tmp_path, content, message):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_rows(p, SEED)
    assert str(e.value).startswith(f"{p}: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_truncated_parquet_and_directories_are_clear_errors(tmp_path):
    p = tmp_path / "t.parquet"
    with RecordWriter(p) as w:
        w.write_rows([{"id": str(i), "x": i} for i in range(100)])
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_rows(p)
    with pytest.raises(InputError, match="is a directory"):
        read_rows(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        read_rows(tmp_path / "missing.jsonl")


def test_wrong_types_in_parquet_rows_are_named(tmp_path):
    p = tmp_path / "w.parquet"
    with RecordWriter(p) as w:
        w.write_rows([{"id": "s1", "query": 5}])
    with pytest.raises(InputError, match=r"row 1: field 'query': expected string, got integer"):
        read_rows(p, SEED)


def test_writer_aborts_leave_no_file(tmp_path):
    out = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), RecordWriter(out) as w:
        w.write_rows([{"id": "a"}] * 10_000)
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_run(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "old"}\n')
    with pytest.raises(RuntimeError), RecordWriter(out) as w:
        w.write_rows([{"id": "new"}])
        raise RuntimeError("boom")
    assert out.read_text() == '{"id": "old"}\n'


def test_mixed_types_in_an_unknown_column_name_the_row(tmp_path):
    rows = [{"id": "a", "x": 1}, {"id": "b", "x": "two"}]
    with pytest.raises(InputError, match="field 'x'"), RecordWriter(tmp_path / "m.parquet", row_group_size=1) as w:
        w.write_rows(rows)
    assert not (tmp_path / "m.parquet").exists()


def test_known_types_win_over_inference_and_required_fields_are_typed(tmp_path):
    out = tmp_path / "t.parquet"
    with RecordWriter(out, record_type=TRAJECTORY) as w:
        w.write_rows([{"id": "a/0", "simple_query": "q", "intents": []}])
    schema = pq.read_schema(out)
    assert schema.field("intents").type.value_type == "string"


def test_empty_output_is_a_valid_typed_parquet_file(tmp_path):
    out = tmp_path / "e.parquet"
    with RecordWriter(out, record_type=SEED):
        pass
    assert pq.read_table(out).num_rows == 0
    assert "id" in pq.read_schema(out).names


def test_shards_partition_the_input(tmp_path):
    src = tmp_path / "s.jsonl"
    write_jsonl(src, [{"id": str(i)} for i in range(10)])
    parts = [[r["id"] for r in RecordReader(src, shard=Shard(k, 3)).rows()] for k in range(3)]
    assert sorted(sum(parts, []), key=int) == [str(i) for i in range(10)]
    assert parts[0] == ["0", "3", "6", "9"]
    assert Shard.parse("1/3") == Shard(1, 3)
    assert Shard.from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4",
                           "SLURM_ARRAY_TASK_COUNT": "4"}) == Shard(1, 4)
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(UsageError):
            Shard.parse(bad)


def test_a_type_change_past_the_first_block_names_its_line(tmp_path, monkeypatch):
    from irtk.show import convert

    p = tmp_path / "drift.jsonl"
    lines = [json.dumps({"id": f"r{i}", "x": i}) for i in range(3000)]
    lines.append(json.dumps({"id": "late", "x": "not a number"}))
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(RecordReader, "BLOCK_SIZE", 4096)  # the bad line lands in a later block
    with pytest.raises(InputError, match=r"drift.jsonl: line 3001: does not fit the columns"):
        convert(p, output=tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_a_keyed_map_with_absent_entries_round_trips(tmp_path):
    """A graph read from a file whose nodes were one struct column (absent nodes read as None)
    writes and reads back as the nodes it has."""
    from irtk.io import RecordWriter, read_rows

    row = seed(0)
    row["graph"] = {**row["graph"], "nodes": {**row["graph"]["nodes"], "q-absent": None}}
    with RecordWriter(tmp_path / "t.parquet") as w:
        w.write_rows([row])
    back = read_rows(tmp_path / "t.parquet")[0]
    assert set(back["graph"]["nodes"]) == set(row["graph"]["nodes"]) - {"q-absent"}
