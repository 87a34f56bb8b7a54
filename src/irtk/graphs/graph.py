"""The intent refinement graph (C-DAG): loading, validation, statistics and merging.

Graphs are plain dicts in the IntentRL appendix layout, exactly as they appear in JSONL::

    {"root_node": "<simplified query>",
     "start_node_ids": ["q1", "q2"],
     "nodes": {"q1": {"id": "q1", "text": "<question>",
                      "options": [{"text": "<option>", "next_node_id": ["q3"]}]}}}

An option may also carry ``intent`` ("I want ...") and a node ``kind`` (shallow/deep); both are
optional. ``validate_graph`` checks everything the traversal relies on and raises ``GraphError``
naming the offending place (``nodes.q3.options[1].next_node_id``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from irtk.errors import InputError

DEFAULT_MAX_NODES = 20
DEFAULT_MIN_OPTIONS = 2
DEFAULT_MAX_OPTIONS = 3


class GraphError(InputError):
    """A C-DAG that breaks the schema or a structural rule (the field names the place)."""


@dataclass(frozen=True)
class GraphLimits:
    """Structural limits a graph must respect (the paper: <= 20 nodes, 2-3 options per node)."""

    max_nodes: int = DEFAULT_MAX_NODES
    min_options: int = DEFAULT_MIN_OPTIONS
    max_options: int = DEFAULT_MAX_OPTIONS


def _fail(message: str, where: str) -> GraphError:
    return GraphError(message, field=where)


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def normalize_graph(graph: Any) -> dict:
    """Bring a near-miss graph (typical of LLM output) into the appendix layout.

    Accepts ``nodes`` as a list of node objects, a bare string in ``next_node_id`` and a missing
    ``next_node_id`` or node ``id``. Everything else is left for ``validate_graph`` to judge.
    Returns a new dict; the input is not changed.
    """
    if not isinstance(graph, Mapping):
        return graph
    out = copy.deepcopy(dict(graph))
    nodes = out.get("nodes")
    if isinstance(nodes, list) and all(isinstance(n, Mapping) and _nonempty_str(n.get("id")) for n in nodes):
        out["nodes"] = {n["id"]: dict(n) for n in nodes}
    if isinstance(out.get("start_node_ids"), str):
        out["start_node_ids"] = [out["start_node_ids"]]
    if isinstance(out.get("nodes"), Mapping):
        for key, node in out["nodes"].items():
            if not isinstance(node, dict):
                continue
            node.setdefault("id", key)
            for option in node.get("options") or []:
                if not isinstance(option, dict):
                    continue
                nxt = option.get("next_node_id")
                if nxt is None:
                    option["next_node_id"] = []
                elif isinstance(nxt, str):
                    option["next_node_id"] = [nxt] if nxt.strip() else []
    return out


def validate_graph(graph: Any, limits: GraphLimits = GraphLimits()) -> dict:
    """Check a C-DAG and return it; raise GraphError naming the first problem found.

    Checks, in order: the schema (types and required fields), that node keys match node ids,
    the node limit, option counts, that every start id and every ``next_node_id`` names an
    existing node, acyclicity (the cycle is named) and that every node is reachable from a
    start node.
    """
    if not isinstance(graph, Mapping):
        raise _fail(f"expected an object, got {type(graph).__name__}", "graph")
    if not _nonempty_str(graph.get("root_node")):
        raise _fail("missing or empty root_node (the simplified query)", "graph.root_node")
    starts = graph.get("start_node_ids")
    if not isinstance(starts, list) or not starts:
        raise _fail("expected a non-empty list of start node ids", "graph.start_node_ids")
    nodes = graph.get("nodes")
    if not isinstance(nodes, Mapping) or not nodes:
        raise _fail("expected a non-empty object of nodes keyed by id", "graph.nodes")
    if len(nodes) > limits.max_nodes:
        raise _fail(f"{len(nodes)} nodes, more than the limit of {limits.max_nodes}", "graph.nodes")
    for i, sid in enumerate(starts):
        if not _nonempty_str(sid):
            raise _fail("expected a node id (string)", f"graph.start_node_ids[{i}]")
        if sid not in nodes:
            raise _fail(f"start node {sid!r} does not exist", f"graph.start_node_ids[{i}]")
    if len(set(starts)) != len(starts):
        raise _fail("a start node is listed twice", "graph.start_node_ids")
    for key, node in nodes.items():
        _check_node(key, node, nodes, limits)
    cycle = find_cycle(graph)
    if cycle:
        raise _fail("cycle " + " -> ".join(cycle) + " (a C-DAG must be acyclic)", "graph.nodes")
    unreachable = sorted(set(nodes) - reachable(graph))
    if unreachable:
        raise _fail(f"node(s) {', '.join(unreachable)} not reachable from any start node", "graph.nodes")
    return graph


def _check_node(key: str, node: Any, nodes: Mapping, limits: GraphLimits) -> None:
    where = f"graph.nodes.{key}"
    if not isinstance(node, Mapping):
        raise _fail(f"expected a node object, got {type(node).__name__}", where)
    if "id" in node and node["id"] != key:
        raise _fail(f"node id {node['id']!r} differs from its key {key!r}", f"{where}.id")
    if not _nonempty_str(node.get("text")):
        raise _fail("missing or empty question text", f"{where}.text")
    options = node.get("options")
    if not isinstance(options, list):
        raise _fail("expected a list of options", f"{where}.options")
    if not limits.min_options <= len(options) <= limits.max_options:
        raise _fail(f"{len(options)} option(s); a question needs {limits.min_options} to "
                    f"{limits.max_options}", f"{where}.options")
    seen: set[str] = set()
    for j, option in enumerate(options):
        at = f"{where}.options[{j}]"
        if not isinstance(option, Mapping):
            raise _fail(f"expected an option object, got {type(option).__name__}", at)
        text = option.get("text")
        if not _nonempty_str(text):
            raise _fail("missing or empty option text", f"{at}.text")
        if text.strip().lower() in seen:
            raise _fail(f"option {text!r} appears twice in this question", f"{at}.text")
        seen.add(text.strip().lower())
        if option.get("intent") is not None and not isinstance(option["intent"], str):
            raise _fail("expected a string", f"{at}.intent")
        nxt = option.get("next_node_id", [])
        if not isinstance(nxt, list):
            raise _fail(f"expected a list of node ids, got {type(nxt).__name__}", f"{at}.next_node_id")
        for k, target in enumerate(nxt):
            if not _nonempty_str(target):
                raise _fail("expected a node id (string)", f"{at}.next_node_id[{k}]")
            if target not in nodes:
                raise _fail(f"node {target!r} does not exist", f"{at}.next_node_id[{k}]")
            if target == key:
                raise _fail("a question cannot unlock itself", f"{at}.next_node_id[{k}]")


def children(node: Mapping) -> list[str]:
    """Every node id any option of ``node`` unlocks, first occurrence order."""
    out: dict[str, None] = {}
    for option in node.get("options") or []:
        for target in option.get("next_node_id") or []:
            out.setdefault(target, None)
    return list(out)


def find_cycle(graph: Mapping) -> list[str] | None:
    """A cycle as a list of ids (first id repeated at the end), or None. Iterative DFS."""
    nodes = graph["nodes"]
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(nodes, white)
    for root in nodes:
        if colour[root] != white:
            continue
        trail: list[str] = [root]
        stack = [iter(children(nodes[root]))]
        colour[root] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[trail.pop()] = black
                stack.pop()
                continue
            if nxt not in colour:
                continue  # dangling ids are reported by validate_graph, not here
            if colour[nxt] == grey:
                return trail[trail.index(nxt):] + [nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                trail.append(nxt)
                stack.append(iter(children(nodes[nxt])))
    return None


def reachable(graph: Mapping) -> set[str]:
    """Ids reachable from the start nodes."""
    nodes = graph["nodes"]
    seen: set[str] = set()
    todo = [s for s in graph["start_node_ids"] if s in nodes]
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        todo.extend(c for c in children(nodes[nid]) if c in nodes and c not in seen)
    return seen


def depth(graph: Mapping) -> int:
    """Nodes on the longest chain from a start node (a valid, acyclic graph)."""
    nodes = graph["nodes"]
    memo: dict[str, int] = {}

    def longest(nid: str) -> int:
        if nid not in memo:
            memo[nid] = 1 + max((longest(c) for c in children(nodes[nid])), default=0)
        return memo[nid]

    return max((longest(s) for s in graph["start_node_ids"]), default=0)


def shared_children(graph: Mapping) -> list[str]:
    """Nodes unlocked from more than one parent node (what makes a C-DAG more than a tree)."""
    parents: dict[str, set[str]] = {}
    for nid, node in graph["nodes"].items():
        for c in children(node):
            parents.setdefault(c, set()).add(nid)
    return sorted(c for c, ps in parents.items() if len(ps) > 1)


# --- merging overlapping nodes ---------------------------------------------------------------------


def merge_similar(graph: Mapping, vectors: Any, threshold: float) -> tuple[dict, list[tuple[str, str]]]:
    """Merge questions whose embeddings are at least ``threshold`` cosine-similar.

    ``vectors`` holds one L2-normalised row per node, in ``graph["nodes"]`` order. Pairs are
    merged most similar first (ties: node order), the later node folded into the earlier one:
    references to it are redirected, its start-node slot taken by the survivor. A merge that
    would create a cycle is skipped (the two questions depend on each other, so they are not
    duplicates). Returns the new graph and the ``(kept, dropped)`` pairs.
    """
    import numpy as np

    ids = list(graph["nodes"])
    if len(ids) < 2:
        return copy.deepcopy(dict(graph)), []
    sims = np.asarray(vectors, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
    pairs = [(float(sims[i, j]), i, j) for i in range(len(ids)) for j in range(i + 1, len(ids))
             if sims[i, j] >= threshold]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    current = copy.deepcopy(dict(graph))
    alias: dict[str, str] = {}
    merged: list[tuple[str, str]] = []
    for _, i, j in pairs:
        keep, drop = _root(alias, ids[i]), _root(alias, ids[j])
        if keep == drop:
            continue
        trial = fold_node(current, keep, drop)
        if find_cycle(trial) is None:
            current = trial
            alias[drop] = keep
            merged.append((keep, drop))
    return current, merged


def _root(alias: Mapping[str, str], nid: str) -> str:
    while nid in alias:
        nid = alias[nid]
    return nid


def fold_node(graph: Mapping, keep: str, drop: str) -> dict:
    """A copy of ``graph`` with node ``drop`` removed and every reference to it sent to ``keep``."""
    out = copy.deepcopy(dict(graph))
    nodes = out["nodes"]
    del nodes[drop]
    for node in nodes.values():
        for option in node.get("options") or []:
            redirected: dict[str, None] = {}
            for target in option.get("next_node_id") or []:
                target = keep if target == drop else target
                if target != node.get("id"):
                    redirected.setdefault(target, None)
            option["next_node_id"] = list(redirected)
    starts: dict[str, None] = {}
    for sid in out["start_node_ids"]:
        starts.setdefault(keep if sid == drop else sid, None)
    out["start_node_ids"] = list(starts)
    return out


def node_texts(graph: Mapping) -> Sequence[str]:
    """Question texts in node order (what ``merge_similar`` embeds)."""
    return [str(node.get("text", "")) for node in graph["nodes"].values()]
