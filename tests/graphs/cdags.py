"""Small C-DAGs whose paths and target sets are worked out by hand in the tests."""

from __future__ import annotations

import copy


def opt(text: str, *nxt: str, intent: str | None = None) -> dict:
    o = {"text": text, "next_node_id": list(nxt)}
    if intent is not None:
        o["intent"] = intent
    return o


def node(nid: str, text: str, *options: dict) -> dict:
    return {"id": nid, "text": text, "options": list(options)}


def graph(root: str, starts: list[str], *nodes: dict) -> dict:
    return {"root_node": root, "start_node_ids": starts, "nodes": {n["id"]: n for n in nodes}}


# Parallel start nodes q1, q2; q3 shared by both options of q1.
HEAT = graph(
    "Tell me about heat pumps", ["q1", "q2"],
    node("q1", "Which kind of heat pump?", opt("Air-source", "q3"), opt("Ground-source", "q3")),
    node("q2", "Who is the report for?",
         opt("Homeowner", intent="I want the report written for a homeowner"), opt("Installer")),
    node("q3", "Which climate?", opt("Cold"), opt("Mild")),
)

# c is shared by two different parents (a and b) that can both be asked on one path.
SHARED = graph(
    "root", ["a", "b"],
    node("a", "A?", opt("a0", "c"), opt("a1")),
    node("b", "B?", opt("b0", "c"), opt("b1")),
    node("c", "C?", opt("c0"), opt("c1")),
)

# The start node b is also unlocked by a0 while it is already waiting on the stack.
WAITING = graph(
    "root", ["a", "b"],
    node("a", "A?", opt("a0", "b"), opt("a1")),
    node("b", "B?", opt("b0"), opt("b1")),
)

# The IntentRL appendix layout, verbatim in shape (no optional fields at all).
APPENDIX_JSON = """{"root_node": "I want to research the impact of AI on jobs",
 "start_node_ids": ["q1", "q2"],
 "nodes": {
  "q1": {"id": "q1", "text": "Which industries should the research focus on?",
         "options": [{"text": "Manufacturing", "next_node_id": ["q3"]},
                     {"text": "Finance and services", "next_node_id": ["q3", "q4"]},
                     {"text": "All industries", "next_node_id": []}]},
  "q2": {"id": "q2", "text": "Which region should the research cover?",
         "options": [{"text": "United States", "next_node_id": []},
                     {"text": "Europe", "next_node_id": []}]},
  "q3": {"id": "q3", "text": "Which time horizon matters most to you?",
         "options": [{"text": "The next five years", "next_node_id": []},
                     {"text": "The next twenty years", "next_node_id": []}]},
  "q4": {"id": "q4", "text": "Should the report cover job creation or only job losses?",
         "options": [{"text": "Both", "next_node_id": []},
                     {"text": "Only job losses", "next_node_id": []}]}}}"""


def copy_of(g: dict) -> dict:
    return copy.deepcopy(g)
