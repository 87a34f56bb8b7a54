"""C-DAG validation (one clear message per failure), statistics and merging."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irtk.graphs.graph import (
    GraphError,
    GraphLimits,
    depth,
    find_cycle,
    fold_node,
    merge_similar,
    normalize_graph,
    shared_children,
    validate_graph,
)
from tests.graphs.cdags import APPENDIX_JSON, HEAT, SHARED, copy_of, graph, node, opt


def test_valid_graphs_pass_and_are_returned_unchanged():
    for g in (HEAT, SHARED, json.loads(APPENDIX_JSON)):
        before = copy_of(g)
        assert validate_graph(g) is g
        assert g == before


def test_appendix_layout_loads_unchanged():
    g = json.loads(APPENDIX_JSON)
    assert validate_graph(g) == json.loads(APPENDIX_JSON)
    assert depth(g) == 2
    assert shared_children(g) == []


def test_depth_and_shared_children():
    assert depth(HEAT) == 2
    assert shared_children(HEAT) == []  # q3 has two parent options but one parent node
    assert shared_children(SHARED) == ["c"]
    chain = graph("r", ["a"], node("a", "A?", opt("x", "b"), opt("y")), node("b", "B?", opt("x", "c"), opt("y")),
                  node("c", "C?", opt("x"), opt("y")))
    assert depth(chain) == 3


def broken(edit):
    g = copy_of(HEAT)
    edit(g)
    return g


CASES = [
    (lambda g: g.clear() or g.update({"x": 1}), "graph.root_node", "missing or empty root_node"),
    (lambda g: g.update(start_node_ids=[]), "graph.start_node_ids", "non-empty list"),
    (lambda g: g.update(start_node_ids="q1"), "graph.start_node_ids", "non-empty list"),
    (lambda g: g.update(start_node_ids=["q9"]), "graph.start_node_ids[0]", "'q9' does not exist"),
    (lambda g: g.update(start_node_ids=["q1", "q1"]), "graph.start_node_ids", "listed twice"),
    (lambda g: g.update(nodes={}), "graph.nodes", "non-empty object"),
    (lambda g: g.update(nodes=[1, 2]), "graph.nodes", "non-empty object"),
    (lambda g: g["nodes"]["q3"].update(id="q4"), "graph.nodes.q3.id", "differs from its key"),
    (lambda g: g["nodes"]["q3"].update(text=""), "graph.nodes.q3.text", "empty question"),
    (lambda g: g["nodes"]["q3"].update(text=7), "graph.nodes.q3.text", "empty question"),
    (lambda g: g["nodes"]["q3"].update(options="Cold"), "graph.nodes.q3.options", "list of options"),
    (lambda g: g["nodes"]["q3"]["options"].pop(), "graph.nodes.q3.options", "1 option(s)"),
    (lambda g: g["nodes"]["q3"]["options"].extend([opt("x"), opt("y")]), "graph.nodes.q3.options",
     "4 option(s)"),
    (lambda g: g["nodes"]["q3"]["options"].__setitem__(0, "Cold"), "graph.nodes.q3.options[0]",
     "option object"),
    (lambda g: g["nodes"]["q3"]["options"][1].update(text=" "), "graph.nodes.q3.options[1].text",
     "empty option"),
    (lambda g: g["nodes"]["q3"]["options"][1].update(text="cold"), "graph.nodes.q3.options[1].text",
     "appears twice"),
    (lambda g: g["nodes"]["q3"]["options"][1].update(intent=3), "graph.nodes.q3.options[1].intent",
     "expected a string"),
    (lambda g: g["nodes"]["q1"]["options"][1].update(next_node_id="q3"),
     "graph.nodes.q1.options[1].next_node_id", "list of node ids"),
    (lambda g: g["nodes"]["q1"]["options"][1].update(next_node_id=["q3", "q7"]),
     "graph.nodes.q1.options[1].next_node_id[1]", "'q7' does not exist"),
    (lambda g: g["nodes"]["q3"]["options"][0].update(next_node_id=["q3"]),
     "graph.nodes.q3.options[0].next_node_id[0]", "cannot unlock itself"),
    (lambda g: g["nodes"]["q3"]["options"][0].update(next_node_id=["q1"]), "graph.nodes",
     "cycle q1 -> q3 -> q1"),
    (lambda g: g["nodes"].update(q9=node("q9", "Lonely?", opt("x"), opt("y"))), "graph.nodes",
     "q9 not reachable"),
]


@pytest.mark.parametrize("edit,field,message", CASES)
def test_each_validation_failure_names_its_place(edit, field, message):
    with pytest.raises(GraphError) as info:
        validate_graph(broken(edit))
    assert info.value.field == field
    assert message in info.value.message
    assert str(info.value).startswith(f"field '{field}': ")


def test_not_an_object():
    with pytest.raises(GraphError, match="expected an object, got list"):
        validate_graph([HEAT])


def test_limits_are_configurable():
    with pytest.raises(GraphError, match="3 nodes, more than the limit of 2"):
        validate_graph(HEAT, GraphLimits(max_nodes=2))
    with pytest.raises(GraphError, match="2 option"):
        validate_graph(HEAT, GraphLimits(min_options=3, max_options=4))
    validate_graph(HEAT, GraphLimits(max_nodes=3))


def test_find_cycle_on_longer_cycle():
    g = graph("r", ["a"], node("a", "A?", opt("x", "b"), opt("y")), node("b", "B?", opt("x", "c"), opt("y")),
              node("c", "C?", opt("x", "a"), opt("y")))
    assert find_cycle(g) == ["a", "b", "c", "a"]
    assert find_cycle(HEAT) is None


def test_normalize_fixes_near_misses_only():
    raw = {"root_node": "r", "start_node_ids": "a",
           "nodes": [{"id": "a", "text": "A?", "options": [{"text": "x", "next_node_id": "b"}, {"text": "y"}]},
                     {"id": "b", "text": "B?", "options": [{"text": "x", "next_node_id": []},
                                                           {"text": "y", "next_node_id": ""}]}]}
    g = normalize_graph(raw)
    assert g["start_node_ids"] == ["a"]
    assert g["nodes"]["a"]["options"][0]["next_node_id"] == ["b"]
    assert g["nodes"]["a"]["options"][1]["next_node_id"] == []
    assert g["nodes"]["b"]["options"][1]["next_node_id"] == []
    validate_graph(g)
    assert isinstance(raw["nodes"], list)  # the input is left alone
    assert normalize_graph("not a graph") == "not a graph"


def test_fold_node_redirects_and_dedups():
    g = graph("r", ["a", "b"], node("a", "A?", opt("x", "c", "d"), opt("y")),
              node("b", "B?", opt("x", "d"), opt("y")), node("c", "C?", opt("x"), opt("y")),
              node("d", "D?", opt("x"), opt("y")))
    out = fold_node(g, "c", "d")
    assert "d" not in out["nodes"]
    assert out["nodes"]["a"]["options"][0]["next_node_id"] == ["c"]
    assert out["nodes"]["b"]["options"][0]["next_node_id"] == ["c"]
    assert "d" in g["nodes"]  # the input is left alone
    validate_graph(out)


def test_merge_similar_merges_duplicates_and_skips_cycle_making_pairs():
    g = graph("r", ["a", "b"], node("a", "Which region?", opt("x", "c"), opt("y")),
              node("b", "Which area?", opt("x"), opt("y")), node("c", "Which year?", opt("x"), opt("y")))
    vectors = np.array([[1.0, 0.0, 0.0], [0.999, 0.0447, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    merged, pairs = merge_similar(g, vectors, 0.95)
    assert pairs == [("a", "b")]
    assert merged["start_node_ids"] == ["a"]
    assert list(merged["nodes"]) == ["a", "c"]
    validate_graph(merged)
    # a parent and its near-duplicate follow-up: the follow-up goes, with the self-reference.
    same = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    kept, pairs = merge_similar(g, same, 0.95)
    assert pairs == [("a", "c")] and kept["nodes"]["a"]["options"][0]["next_node_id"] == []
    validate_graph(kept)
    # a -> x -> c: folding c into a would make x unlock a again, a cycle; such pairs are skipped.
    chain = graph("r", ["a"], node("a", "A?", opt("x", "x"), opt("y")), node("x", "X?", opt("x", "c"), opt("y")),
                  node("c", "C?", opt("x"), opt("y")))
    kept, pairs = merge_similar(chain, same, 0.95)
    assert pairs == [] and kept == chain
