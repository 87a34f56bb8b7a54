"""Clarifier policies: a model, and the baselines of the comparison tables.

- ``model``  any backend/model/checkpoint, prompted as the paper describes its agent; with
  ``allow_stop`` it may answer STOP when it knows enough (beyond the paper, which always asks T);
- ``oracle`` asks the trajectory's own next graph question, an upper bound;
- ``random`` asks a random not-yet-asked question of the trajectory's graph;
- ``none``   asks nothing (no clarification).

Every policy answers one turn for all live dialogues at once, so a model policy makes one
backend call per step. ``ask(episodes, turn)`` takes one turn number for all of them or one per
episode (dialogues in a continuous batch are at different turns).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from irtk.dialogue import prompts
from irtk.dialogue.episode import Episode, node_question
from irtk.errors import UsageError
from irtk.generation import SamplingParams
from irtk.graphs.render import template_question
from irtk.registry import Registry

# Every factory takes the same keyword arguments (``backend``, ``params``, ``allow_stop``,
# ``seed``) and uses what it needs, so ``--policy module:attr`` plugs in a policy of one's own.
POLICIES = Registry("policy", "--policy", {
    "model": "irtk.dialogue.policies:ModelPolicy.create",
    "oracle": "irtk.dialogue.policies:OraclePolicy.create",
    "random": "irtk.dialogue.policies:RandomPolicy.create",
    "none": "irtk.dialogue.policies:NoPolicy.create",
})


@dataclass(frozen=True)
class Ask:
    """A policy's move: a question, an explicit stop (``stop``), or nothing left to ask (text None)."""

    text: str | None
    node_id: str | None = None
    stop: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


def turn_numbers(episodes: Sequence[Episode], turn: int | Sequence[int]) -> list[int]:
    """One turn number per episode: ``turn`` itself for each when it is a single number."""
    return [turn] * len(episodes) if isinstance(turn, int) else list(turn)


class NoPolicy:
    name = "none"

    @classmethod
    def create(cls, **_: Any) -> NoPolicy:
        return cls()

    def ask(self, episodes: Sequence[Episode], turn: int | Sequence[int]) -> list[Ask]:
        return [Ask(None) for _ in episodes]


class OraclePolicy:
    """The trajectory's next question: the upper bound a clarifier could reach on this user."""

    name = "oracle"

    @classmethod
    def create(cls, **_: Any) -> OraclePolicy:
        return cls()

    def ask(self, episodes: Sequence[Episode], turn: int | Sequence[int]) -> list[Ask]:
        moves = []
        for e, t in zip(episodes, turn_numbers(episodes, turn), strict=True):
            path = e.path
            if t > len(path):
                moves.append(Ask(None))
                continue
            step = path[t - 1]
            node_id = step.get("node_id")
            if step.get("question") and step.get("options") is not None:
                text = template_question(step)
            elif node_id in e.graph.get("nodes", {}):
                text = node_question(e.graph, node_id)
            else:
                text = str(step.get("question") or "")
            moves.append(Ask(text, node_id=node_id))
        return moves


class RandomPolicy:
    """A uniformly random unasked node of the graph; seeded per dialogue id, so reproducible."""

    name = "random"

    @classmethod
    def create(cls, *, seed: int = 0, **_: Any) -> RandomPolicy:
        return cls(seed)

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}

    def ask(self, episodes: Sequence[Episode], turn: int | Sequence[int]) -> list[Ask]:
        moves = []
        for e in episodes:
            rng = self._rngs.setdefault(e.id, random.Random(f"{self.seed}:{e.id}"))
            left = sorted(n for n in e.graph.get("nodes", {}) if n not in set(e.asked_nodes))
            if not left:
                moves.append(Ask(None))
                continue
            node_id = rng.choice(left)
            moves.append(Ask(node_question(e.graph, node_id), node_id=node_id))
        return moves

    def forget(self, episodes: Sequence[Episode]) -> None:
        for e in episodes:
            self._rngs.pop(e.id, None)


_LABEL = re.compile(r"^\s*(?:\*\*)?question\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)


def clean_question(text: str) -> str:
    """The agent's turn without surrounding blank space and a leading 'Question:' label."""
    return _LABEL.sub("", text.strip(), count=1).strip()


def is_stop(text: str) -> bool:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.strip(" .!*\"'`").upper() == prompts.STOP_WORD


class ModelPolicy:
    """An LLM clarifier behind any generation backend."""

    name = "model"

    def __init__(self, backend: Any, params: SamplingParams, *, allow_stop: bool = False) -> None:
        self.backend = backend
        # Generation ends with the question-and-options block, not at max_tokens.
        self.params = replace(params, stop=tuple(dict.fromkeys((*params.stop, *prompts.QUESTION_END))))
        self.allow_stop = allow_stop
        self.system = prompts.CLARIFIER_SYSTEM + (prompts.STOP_RULE if allow_stop else "")

    @classmethod
    def create(cls, *, backend: Any = None, params: SamplingParams | None = None,
               allow_stop: bool = False, **_: Any) -> ModelPolicy:
        if backend is None:
            raise UsageError("--policy model needs a generation backend")
        return cls(backend, params or SamplingParams(), allow_stop=allow_stop)

    def conversation(self, episode: Episode) -> list[dict]:
        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": prompts.CLARIFIER_REQUEST.format(query=episode.query)}]
        for question, answer in episode.exchanges():
            messages.append({"role": "assistant", "content": question})
            messages.append({"role": "user", "content": answer})
        return messages

    def ask(self, episodes: Sequence[Episode], turn: int | Sequence[int]) -> list[Ask]:
        # A different seed per turn: the same seed every turn would replay the same random draws.
        first = min(turn_numbers(episodes, turn), default=1)
        params = self.params if self.params.seed is None else replace(self.params, seed=self.params.seed + first)
        return self.moves(self.backend.chat([self.conversation(e) for e in episodes], params))

    def forget(self, episodes: Sequence[Episode]) -> None:
        """Ended ``episodes`` will ask nothing more: a backend that keeps their conversations'
        key/values for a next turn (``HFBackend.forget``) drops them."""
        forget = getattr(self.backend, "forget", None)
        if forget is not None:
            for e in episodes:
                forget(self.conversation(e))

    def open_stream(self) -> Any | None:
        """The backend's stream of turns (``HFBackend.open_stream``: each dialogue's next question
        decoded as soon as its last turn ends), or None where the backend has none."""
        open_stream = getattr(self.backend, "open_stream", None)
        return open_stream(self.params) if open_stream is not None else None

    def moves(self, generations: Sequence[Any]) -> list[Ask]:
        """The policy's moves from its turns' generations."""
        moves = []
        for g in generations:
            text = clean_question(g.text)
            stop = self.allow_stop and is_stop(text)
            moves.append(Ask(text, stop=stop, prompt_tokens=g.prompt_tokens,
                             completion_tokens=g.completion_tokens))
        return moves


def make_policy(name: str, *, backend: Any = None, params: SamplingParams | None = None,
                allow_stop: bool = False, seed: int = 0) -> Any:
    """A policy by registry name or ``module:attr``; ``model`` needs a backend."""
    return POLICIES.create(name, backend=backend, params=params, allow_stop=allow_stop, seed=seed)
