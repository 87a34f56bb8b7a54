"""Trajectories through a C-DAG: the paper's depth-first traversal with a stack of visitable nodes.

Traversal order (this is the contract every id and test relies on):

1. The stack starts as the start nodes, the first listed on top
   (``start_node_ids = [a, b]`` → ``a`` is asked first).
2. Each turn pops the top node and asks it. The *target set* of that turn is the whole stack
   before the pop, top first: every node that could sensibly be asked now (Stage I's hindsight
   targets; the popped node is the first of them).
3. The path branches over the popped node's options, in option order: one path per option.
4. The chosen option's ``next_node_id`` children are pushed so that its first child is on top,
   skipping any child already asked on this path or already waiting on the stack (a shared
   child is asked once per path, where it was first unlocked).
5. A path ends when the stack is empty.

Paths are numbered in that depth-first order (option 0 before option 1 at every branch); path
``k`` of a seed gets the id ``<seed_id>/<k>``, whatever ``max_paths`` sampling kept, so the same
simulated user keeps the same id across runs. Every node on the stack is asked later on the same
path, so the user's choice there — and hence the target intents — are known in hindsight.

Paths are counted with memoisation over the traversal state (stack, asked set) and sampled by
unranking random path numbers, so ``max_paths`` never enumerates an exponential path set.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

State = tuple[tuple[str, ...], frozenset[str]]


@dataclass(frozen=True)
class Visit:
    """One turn of a path: the node asked, the option chosen, the stack before the pop (top first)."""

    node_id: str
    choice_index: int
    stack: tuple[str, ...]


def option_intent(node: Mapping, index: int) -> str:
    """The latent intent of a user who picks option ``index`` of ``node``.

    The option's own ``intent`` ("I want ...") when the graph has one, else a deterministic
    phrasing from the question and the option text.
    """
    option = node["options"][index]
    intent = option.get("intent")
    if isinstance(intent, str) and intent.strip():
        return intent.strip()
    question = str(node["text"]).strip()
    return f"I want: {str(option['text']).strip().rstrip('.')} (asked: {question})"


class Traversal:
    """Count, enumerate and sample the paths of one valid C-DAG."""

    def __init__(self, graph: Mapping) -> None:
        self.graph = graph
        self.nodes = graph["nodes"]
        self._counts: dict[State, int] = {}

    def initial(self) -> State:
        return tuple(reversed(self.graph["start_node_ids"])), frozenset()

    def step(self, state: State, choice: int) -> State:
        """The state after popping the top node and choosing option ``choice``."""
        stack, asked = state
        top, rest = stack[-1], stack[:-1]
        asked = asked | {top}
        waiting = set(rest)
        fresh: list[str] = []
        for child in self.nodes[top]["options"][choice].get("next_node_id") or []:
            if child not in asked and child not in waiting and child not in fresh:
                fresh.append(child)
        return rest + tuple(reversed(fresh)), asked

    def count(self, state: State | None = None) -> int:
        """Number of complete paths from ``state`` (default: from the start)."""
        state = self.initial() if state is None else state
        known = self._counts.get(state)
        if known is not None:
            return known
        stack, _ = state
        if not stack:
            total = 1
        else:
            options = self.nodes[stack[-1]]["options"]
            total = sum(self.count(self.step(state, i)) for i in range(len(options)))
        self._counts[state] = total
        return total

    def path(self, rank: int) -> list[Visit]:
        """Path number ``rank`` (0-based) in depth-first order."""
        total = self.count()
        if not 0 <= rank < total:
            raise IndexError(f"path {rank} out of range (graph has {total})")
        state, visits = self.initial(), []
        while state[0]:
            stack = state[0]
            options = self.nodes[stack[-1]]["options"]
            for choice in range(len(options)):
                nxt = self.step(state, choice)
                n = self.count(nxt)
                if rank < n:
                    visits.append(Visit(stack[-1], choice, tuple(reversed(stack))))
                    state = nxt
                    break
                rank -= n
        return visits

    def walk(self) -> Iterator[list[Visit]]:
        """Every path in depth-first order (rank 0, 1, ...), without counting or unranking."""
        trail: list[Visit] = []

        def go(state: State) -> Iterator[list[Visit]]:
            stack = state[0]
            if not stack:
                yield list(trail)
                return
            for choice in range(len(self.nodes[stack[-1]]["options"])):
                trail.append(Visit(stack[-1], choice, tuple(reversed(stack))))
                yield from go(self.step(state, choice))
                trail.pop()

        yield from go(self.initial())

    def paths(self, max_paths: int | None = None, seed: int | str = 0) -> Iterator[tuple[int, list[Visit]]]:
        """(rank, path) for the paths to emit: all of them in order, or a seeded sample of ranks."""
        ranks = self.ranks(max_paths, seed)
        if len(ranks) == self.count():
            yield from enumerate(self.walk())
        else:
            for rank in ranks:
                yield rank, self.path(rank)

    def ranks(self, max_paths: int | None = None, seed: int | str = 0) -> list[int]:
        """Path numbers to emit: all of them, or ``max_paths`` drawn uniformly (seeded), sorted."""
        total = self.count()
        if not max_paths or total <= max_paths:
            return list(range(total))
        return sorted(random.Random(str(seed)).sample(range(total), max_paths))


def steps_of(graph: Mapping, visits: list[Visit]) -> list[dict]:
    """STEP records for a path: question, options, choice, intent and hindsight targets."""
    nodes = graph["nodes"]
    chosen = {v.node_id: option_intent(nodes[v.node_id], v.choice_index) for v in visits}
    steps = []
    for turn, v in enumerate(visits, 1):
        node = nodes[v.node_id]
        steps.append({
            "turn": turn,
            "node_id": v.node_id,
            "question": str(node["text"]),
            "options": [str(o["text"]) for o in node["options"]],
            "choice": str(node["options"][v.choice_index]["text"]),
            "choice_index": v.choice_index,
            "intent": chosen[v.node_id],
            "target_node_ids": list(v.stack),
            "target_intents": [chosen[n] for n in v.stack],
        })
    return steps
