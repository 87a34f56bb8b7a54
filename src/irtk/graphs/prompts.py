"""Every prompt `irtk expand` sends, in one place, readable, each asking for JSON.

Graph building follows the IntentRL appendix: intent extraction (detailed query -> fuzzy query +
shallow "I want ..." intents; rubric -> deep intents), a base graph from the shallow intents with
parallel start nodes, then expansion with the deep intents. Rendering role-plays the clarifying
agent and the user along a fixed path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from irtk.generation import Conversation

GRAPH_SCHEMA = """{
  "root_node": "<the simplified query>",
  "start_node_ids": ["q1", "q2"],
  "nodes": {
    "q1": {"id": "q1", "text": "<one clarification question>",
           "options": [{"text": "<option>", "intent": "I want ...", "next_node_id": ["q3"]},
                       {"text": "<option>", "intent": "I want ...", "next_node_id": []}]}
  }
}"""

EXTRACT_SYSTEM = "You turn detailed research requests into vague ones and list what was removed. Reply with JSON only."

EXTRACT_USER = """Here is a detailed research request:

{query}

Rewrite it as the short, fuzzy request a user would type first: drop the explicit constraints
(scope, region, period, audience, format, focus). Then list every dropped constraint as a
sentence that starts with "I want".

Reply with JSON only, exactly in this form:
{{"simple_query": "<fuzzy request>", "missing_intent": ["I want ...", "I want ..."]}}"""

DEEP_SYSTEM = "You decide which report criteria depend on the user's taste rather than on research. Reply with JSON only."

DEEP_USER = """Research request: {query}

Grading criteria for the final report:
{rubric}

Keep only the criteria that depend on what this user prefers (focus, depth, angle, audience),
not on facts that searching would find. Rephrase each kept criterion as a sentence that starts
with "I want the report to".

Reply with JSON only, exactly in this form:
{{"deep_intents": ["I want the report to ...", "I want the report to ..."]}}"""

GRAPH_SYSTEM = """You design clarification question graphs for a research assistant.
A node is one short question with {min_options} to {max_options} options. Options only describe
needs a user might really have; never invent facts. An option lists in "next_node_id" the
questions that only make sense once it is chosen. Questions can share follow-ups, so the graph is
a directed acyclic graph. Reply with JSON only."""

BASE_USER = """Vague request: {simple_query}

What the user did not say (shallow intents):
{shallow}

Build the base graph: one start question per shallow intent (the start questions are asked in
parallel, listed in "start_node_ids"), each with {min_options} to {max_options} options, one of
which matches the intent. Give every option an "intent" sentence starting with "I want". Use ids
q1, q2, ... and at most {max_nodes} nodes.

Reply with JSON only, in this form:
{schema}"""

EXPAND_USER = """Vague request: {simple_query}

Base graph:
{graph}

Preferences a good report depends on (deep intents):
{deep}

Expand the graph: keep at least 8 intents that are better asked than searched; add deeper
follow-up questions under the options they refine (put their ids in that option's
"next_node_id"); add options to existing questions where users could differ; merge questions
that ask the same thing. Keep {min_options} to {max_options} options per question, at most
{max_nodes} nodes, no cycles, and every node reachable from a start node.

Reply with the complete expanded graph as JSON only, in the same form."""

RETRY_USER = """That reply cannot be used: {error}
Fix exactly this problem and reply with the complete corrected JSON only."""

AGENT_SYSTEM = """You are a research assistant. Before starting a long research task you ask the
user one short clarification question per turn, offering the given options. Ask only the
question you are told to ask, in your own words, and list its options. Do not answer it."""

AGENT_TURN = """The user's request: {simple_query}
Ask this question now: {question}
Options: {options}"""

# Both role-play system prompts are constant, so the backend computes their prefill once per run
# (its prefix cache) and pre-fills only each trajectory's own turn text.
USER_SYSTEM = """You play a user who asked a research assistant for a report.
Answer the assistant's question in one or two sentences, as yourself: give the answer you are
told to give and say what you want. Mention nothing else you want. Do not ask questions back."""

USER_TURN = """Your request: {simple_query}
The assistant asks: {question}

(Your answer: {choice}. What you want: {intent})"""


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {x}" for x in items) if items else "- (none)"


def extract(query: str) -> Conversation:
    return [{"role": "system", "content": EXTRACT_SYSTEM},
            {"role": "user", "content": EXTRACT_USER.format(query=query)}]


def deep(query: str, rubric: Sequence[str]) -> Conversation:
    return [{"role": "system", "content": DEEP_SYSTEM},
            {"role": "user", "content": DEEP_USER.format(query=query, rubric=_bullets(rubric))}]


def _graph_system(limits: object) -> str:
    return GRAPH_SYSTEM.format(min_options=limits.min_options, max_options=limits.max_options)


def base_graph(simple_query: str, shallow: Sequence[str], limits: object) -> Conversation:
    user = BASE_USER.format(simple_query=simple_query, shallow=_bullets(shallow), schema=GRAPH_SCHEMA,
                            min_options=limits.min_options, max_options=limits.max_options,
                            max_nodes=limits.max_nodes)
    return [{"role": "system", "content": _graph_system(limits)}, {"role": "user", "content": user}]


def expand_graph(simple_query: str, graph: Mapping, deep_intents: Sequence[str], limits: object) -> Conversation:
    user = EXPAND_USER.format(simple_query=simple_query, graph=json.dumps(graph, ensure_ascii=False),
                              deep=_bullets(deep_intents), min_options=limits.min_options,
                              max_options=limits.max_options, max_nodes=limits.max_nodes)
    return [{"role": "system", "content": _graph_system(limits)}, {"role": "user", "content": user}]


def retry(conversation: Conversation, reply: str, error: str) -> Conversation:
    """The conversation continued with the bad reply and the validation error fed back."""
    return [*conversation, {"role": "assistant", "content": reply},
            {"role": "user", "content": RETRY_USER.format(error=error)}]


def agent_turn(simple_query: str, question: str, options: Sequence[str]) -> str:
    return AGENT_TURN.format(simple_query=simple_query, question=question, options="; ".join(options))


def user_turn(simple_query: str, question: str, choice: str, intent: str) -> str:
    # Only this turn's intent: a user who volunteers the rest would leak later answers into the
    # dialogue, and the hindsight targets would no longer match what was said.
    return USER_TURN.format(simple_query=simple_query, question=question, choice=choice, intent=intent)
