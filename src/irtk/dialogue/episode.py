"""One clarification dialogue in progress: the trajectory it simulates and the turns so far."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from irtk.dialogue.gate import ANSWERED, STOP
from irtk.graphs.render import template_question


def node_question(graph: Mapping, node_id: str) -> str:
    """A graph node asked as the expert dialogues ask it: the question, then its options."""
    node = graph["nodes"][node_id]
    return template_question({"question": str(node["text"]),
                              "options": [str(o["text"]) for o in node.get("options") or []]})


@dataclass
class Episode:
    """A trajectory being simulated: its user's intents and graph, and the turns played."""

    row: dict
    turns: list[dict] = field(default_factory=list)
    asked_nodes: list[str] = field(default_factory=list)
    done: bool = False
    stopped_early: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    summary: str = ""

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def query(self) -> str:
        """The fuzzy request the user starts from (the simplified query)."""
        return str(self.row.get("simple_query") or self.row.get("query") or "")

    @property
    def intents(self) -> list[str]:
        return [str(i) for i in self.row.get("intents") or []]

    @property
    def graph(self) -> Mapping:
        return self.row.get("graph") or {"nodes": {}}

    @property
    def path(self) -> list[Mapping]:
        return list(self.row.get("path") or [])

    def asked(self) -> list[dict]:
        """Turns with a question (an explicit stop is a turn without one)."""
        return [t for t in self.turns if t["verdict"] != STOP]

    def questions(self) -> list[str]:
        return [t["question"] for t in self.asked()]

    def exchanges(self) -> list[tuple[str, str]]:
        return [(t["question"], t["answer"]) for t in self.asked()]

    def kept_exchanges(self) -> list[tuple[str, str]]:
        """What the summary agent keeps: exchanges the user did not reject."""
        return [(t["question"], t["answer"]) for t in self.asked() if t["verdict"] == ANSWERED]

    def matched(self) -> list[str]:
        return [t["matched_intent"] for t in self.asked() if t.get("matched_intent")]

    def target_intents(self, turn: int) -> list[str]:
        """The step's hindsight targets for ``turn`` when the trajectory has them, else the
        intents not matched yet."""
        path = self.path
        if 0 < turn <= len(path):
            targets = path[turn - 1].get("target_intents")
            if targets:
                return [str(t) for t in targets]
        matched = set(self.matched())
        return [i for i in self.intents if i not in matched]
