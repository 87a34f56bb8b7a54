"""Depth-first traversal: path counts, order, hindsight target sets and seeded sampling,
on graphs worked out by hand (see the docstring of irtk.graphs.traversal for the order)."""

from __future__ import annotations

import json

from irtk.graphs.traversal import Traversal, option_intent, steps_of
from tests.graphs.cdags import APPENDIX_JSON, HEAT, SHARED, WAITING, graph, node, opt


def walk(g: dict, rank: int) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(v.node_id, v.choice_index, v.stack) for v in Traversal(g).path(rank)]


def choices(g: dict) -> list[list[str]]:
    t = Traversal(g)
    return [[g["nodes"][v.node_id]["options"][v.choice_index]["text"] for v in t.path(r)]
            for r in range(t.count())]


def test_parallel_starts_and_shared_option_child():
    # q1 (2 options, both unlock q3) x q3 (2) x q2 (2) = 8 paths; q1 first, then the child q3,
    # then the second start node q2.
    assert Traversal(HEAT).count() == 8
    assert choices(HEAT) == [
        ["Air-source", "Cold", "Homeowner"], ["Air-source", "Cold", "Installer"],
        ["Air-source", "Mild", "Homeowner"], ["Air-source", "Mild", "Installer"],
        ["Ground-source", "Cold", "Homeowner"], ["Ground-source", "Cold", "Installer"],
        ["Ground-source", "Mild", "Homeowner"], ["Ground-source", "Mild", "Installer"],
    ]
    # The target set is the stack before the pop, top first.
    assert walk(HEAT, 0) == [("q1", 0, ("q1", "q2")), ("q3", 0, ("q3", "q2")), ("q2", 0, ("q2",))]


def test_child_shared_by_two_parents_is_asked_once_per_path():
    # a0 unlocks c: then c (2) and b (2; b0's c is already asked) -> 4 paths.
    # a1 unlocks nothing: b0 unlocks c (2 paths), b1 ends (1 path) -> 3 paths. Total 7.
    assert Traversal(SHARED).count() == 7
    assert choices(SHARED) == [
        ["a0", "c0", "b0"], ["a0", "c0", "b1"], ["a0", "c1", "b0"], ["a0", "c1", "b1"],
        ["a1", "b0", "c0"], ["a1", "b0", "c1"], ["a1", "b1"],
    ]
    assert walk(SHARED, 0) == [("a", 0, ("a", "b")), ("c", 0, ("c", "b")), ("b", 0, ("b",))]
    assert walk(SHARED, 4) == [("a", 1, ("a", "b")), ("b", 0, ("b",)), ("c", 0, ("c",))]
    assert walk(SHARED, 6) == [("a", 1, ("a", "b")), ("b", 1, ("b",))]


def test_child_already_waiting_is_not_pushed_twice():
    # a0 unlocks b, which is already on the stack: b stays where it is, asked once.
    assert Traversal(WAITING).count() == 4
    assert walk(WAITING, 0) == [("a", 0, ("a", "b")), ("b", 0, ("b",))]


def test_first_child_of_an_option_is_asked_first():
    g = graph("r", ["a", "z"], node("a", "A?", opt("x", "b", "c"), opt("y")), node("b", "B?", opt("1"), opt("2")),
              node("c", "C?", opt("1"), opt("2")), node("z", "Z?", opt("1"), opt("2")))
    assert walk(g, 0) == [("a", 0, ("a", "z")), ("b", 0, ("b", "c", "z")), ("c", 0, ("c", "z")),
                          ("z", 0, ("z",))]
    assert Traversal(g).count() == 2 * 2 * 2 + 2  # a0: b, c, z (8); a1: z (2)


def test_appendix_graph_counts():
    g = json.loads(APPENDIX_JSON)
    # q1=Manufacturing -> q3 (2) x q2 (2) = 4; Finance -> q3 (2) x q4 (2) x q2 (2) = 8; All -> q2 (2) = 2
    assert Traversal(g).count() == 14


def test_steps_carry_hindsight_target_intents():
    steps = steps_of(HEAT, Traversal(HEAT).path(0))
    assert [s["turn"] for s in steps] == [1, 2, 3]
    first = steps[0]
    assert first["question"] == "Which kind of heat pump?"
    assert first["options"] == ["Air-source", "Ground-source"]
    assert first["choice"] == "Air-source" and first["choice_index"] == 0
    assert first["target_node_ids"] == ["q1", "q2"]
    homeowner = "I want the report written for a homeowner"  # the option's own intent field
    air = "I want: Air-source (asked: Which kind of heat pump?)"  # phrased from question + option
    cold = "I want: Cold (asked: Which climate?)"
    assert first["intent"] == air
    # q2 is answered only at turn 3, but its choice is known in hindsight at turn 1.
    assert first["target_intents"] == [air, homeowner]
    assert steps[1]["target_intents"] == [cold, homeowner]
    assert steps[2]["target_intents"] == [homeowner]


def test_option_intent_prefers_the_graph_field():
    n = node("q", "Which?", opt("A", intent="  I want A  "), opt("B", intent=""))
    assert option_intent(n, 0) == "I want A"
    assert option_intent(n, 1) == "I want: B (asked: Which?)"


def test_every_path_is_distinct_and_complete():
    t = Traversal(SHARED)
    paths = [tuple((v.node_id, v.choice_index) for v in t.path(r)) for r in range(t.count())]
    assert len(set(paths)) == len(paths)
    for p in paths:
        asked = [n for n, _ in p]
        assert len(asked) == len(set(asked))


def test_sampling_is_seeded_sorted_and_bounded():
    t = Traversal(HEAT)
    assert t.ranks() == list(range(8))
    assert t.ranks(max_paths=10) == list(range(8))
    a, b = t.ranks(max_paths=3, seed="0:s1"), t.ranks(max_paths=3, seed="0:s1")
    assert a == b and a == sorted(a) and len(set(a)) == 3
    assert all(0 <= r < 8 for r in a)
    assert len({tuple(t.ranks(max_paths=3, seed=f"{s}:s1")) for s in range(20)}) > 1


def test_exponential_graphs_are_counted_and_sampled_without_enumeration():
    # 40 independent yes/no questions: 2**40 paths, counted through memoised states.
    nodes = [node(f"n{i}", f"Question {i}?", opt("yes"), opt("no")) for i in range(40)]
    g = graph("r", [n["id"] for n in nodes], *nodes)
    t = Traversal(g)
    assert t.count() == 2 ** 40
    last = t.path(2 ** 40 - 1)
    assert [v.choice_index for v in last] == [1] * 40
    picked = t.ranks(max_paths=5, seed=1)
    assert len(picked) == 5 and picked == sorted(picked)
    assert [v.node_id for v in t.path(picked[0])] == [f"n{i}" for i in range(40)]


def test_walk_and_unranking_agree():
    for g in (HEAT, SHARED, WAITING, json.loads(APPENDIX_JSON)):
        t = Traversal(g)
        walked = list(t.walk())
        assert walked == [t.path(r) for r in range(t.count())]
        assert [p for _, p in t.paths()] == walked
        sampled = list(t.paths(max_paths=2, seed=3))
        assert [r for r, _ in sampled] == t.ranks(max_paths=2, seed=3)
        assert all(p == walked[r] for r, p in sampled)
