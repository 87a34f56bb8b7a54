"""LLM graph building: JSON parsing, validate-and-retry with the error fed back, rejection.

The scripted backend below replays fixed replies through the real backend interface so each
retry path is exercised exactly; the tiny random model (garbage output) and the real SmolLM2
are exercised through the CLI in test_expand_cli.py.
"""

from __future__ import annotations

import json

import pytest

from irtk.generation import Generation, SamplingParams
from irtk.graphs.build import (
    PREFILL,
    BuildSettings,
    ReplyError,
    ask_json,
    build_graphs,
    parse_extraction,
    parse_json_object,
)
from irtk.graphs.graph import GraphLimits, validate_graph
from tests.graphs.cdags import HEAT, copy_of


class Scripted:
    """Answers each chat call from a queue of replies; records every conversation it saw.

    Like a real backend it continues a trailing assistant message (the prefill): a canned reply
    that starts with the prefill comes back without it. ``seen`` holds the conversations without
    the prefill, ``prefills`` the prefills.
    """

    name, model = "scripted", "scripted"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict]] = []
        self.prefills: list[str] = []
        self.calls = 0

    def chat(self, conversations, params):
        self.calls += 1
        out = []
        for conv in conversations:
            prefill = conv[-1]["content"] if conv[-1]["role"] == "assistant" else ""
            self.seen.append(conv[:-1] if prefill else conv)
            self.prefills.append(prefill)
            reply = self.replies.pop(0)
            text = reply[len(prefill):] if reply.startswith(prefill) else reply
            out.append(Generation(text=text, prompt_tokens=1, completion_tokens=1))
        return out


SETTINGS = BuildSettings(retries=1, merge_threshold=1.0, params=SamplingParams(max_tokens=32))
EXTRACTED = json.dumps({"simple_query": "heat pumps?", "missing_intent": ["I want a cold climate"]})


def test_parse_json_object_tolerates_fences_and_chatter():
    assert parse_json_object('Sure! ```json\n{"a": 1}\n``` done') == {"a": 1}
    assert parse_json_object('Here: {"a": {"b": [1, 2]}} and more {') == {"a": {"b": [1, 2]}}
    assert parse_json_object('{broken {"a": 2}') == {"a": 2}
    with pytest.raises(ReplyError, match="no '\\{' found"):
        parse_json_object("no json here")
    with pytest.raises(ReplyError, match="not a JSON object"):
        parse_json_object('{"a": 1')


def test_parse_extraction_checks_fields():
    assert parse_extraction(EXTRACTED) == ("heat pumps?", ["I want a cold climate"])
    with pytest.raises(ReplyError, match='"simple_query"'):
        parse_extraction('{"missing_intent": ["I want x"]}')
    with pytest.raises(ReplyError, match='"missing_intent" must be a list of strings'):
        parse_extraction('{"simple_query": "q", "missing_intent": "I want x"}')
    with pytest.raises(ReplyError, match='must not be empty'):
        parse_extraction('{"simple_query": "q", "missing_intent": []}')
    # A small model echoing the prompt's template is told so (seen with the embedded SmolLM2).
    with pytest.raises(ReplyError, match='"missing_intent" copies the placeholder \'I want ...\''):
        parse_extraction('{"simple_query": "q", "missing_intent": ["I want ...", "I want ..."]}')
    with pytest.raises(ReplyError, match='"simple_query" copies the placeholder'):
        parse_extraction('{"simple_query": "<fuzzy request>", "missing_intent": ["I want x"]}')


def test_ask_json_retries_with_the_error_fed_back():
    backend = Scripted("garbage", '{"x": 1}', '{"y": 2}')

    def parse(text):
        obj = parse_json_object(text)
        if "y" not in obj:
            raise ReplyError('"y" is missing')
        return obj

    answers = ask_json(backend, [[{"role": "user", "content": "go"}]], [parse], SamplingParams(), retries=2)
    assert answers[0].value == {"y": 2} and answers[0].error is None and answers[0].calls == 3
    retry = backend.seen[1]
    assert retry[-2] == {"role": "assistant", "content": "garbage"}
    assert "not a JSON object" in retry[-1]["content"]
    assert '"y" is missing' in backend.seen[2][-1]["content"]


def test_ask_json_prefill_is_continued_and_parsed_whole():
    backend = Scripted('{"simple_query": "oops', '{"simple_query": "q", "missing_intent": ["I want x"]}')
    prefill = '{"simple_query": "'
    answers = ask_json(backend, [[{"role": "user", "content": "go"}]], [parse_extraction], SamplingParams(),
                       retries=1, prefill=prefill)
    assert answers[0].value == ("q", ["I want x"]) and answers[0].calls == 2
    assert backend.prefills == [prefill, prefill]  # every attempt, the retry too, starts the reply
    # The bad reply goes back whole (prefill included), with the parse error.
    assert backend.seen[1][-2] == {"role": "assistant", "content": '{"simple_query": "oops'}
    assert "not a JSON object" in backend.seen[1][-1]["content"]


def test_ask_json_batches_across_conversations():
    backend = Scripted('{"a": 1}', "bad", '{"a": 3}')
    answers = ask_json(backend, [[{"role": "user", "content": str(i)}] for i in range(2)],
                       [parse_json_object] * 2, SamplingParams(), retries=1)
    assert backend.calls == 2  # one call for both, then one retry call for the failure only
    assert [a.value for a in answers] == [{"a": 1}, {"a": 3}]


def test_build_succeeds_after_an_invalid_graph_is_corrected():
    cyclic = copy_of(HEAT)
    cyclic["nodes"]["q3"]["options"][0]["next_node_id"] = ["q1"]
    expanded = copy_of(HEAT)
    backend = Scripted(EXTRACTED, json.dumps(HEAT), json.dumps(cyclic), json.dumps(expanded))
    [result] = build_graphs([{"id": "s", "query": "Heat pumps for a cold climate"}], backend, SETTINGS)
    assert result.error is None and result.graph == expanded
    assert result.simple_query == "heat pumps?" and result.shallow == ["I want a cold climate"]
    assert result.attempts == 4
    assert backend.prefills == [PREFILL["extract"], PREFILL["base"], PREFILL["base"], PREFILL["expand"]]
    feedback = backend.seen[-1][-1]["content"]
    assert "graph.nodes: cycle q1 -> q3 -> q1" in feedback
    validate_graph(result.graph)


def test_seed_fields_are_used_as_given():
    seed = {"id": "s", "query": "q", "simple_query": "mine",
            "intents": {"shallow": ["I want A"], "deep": ["I want the report to B"]}}
    backend = Scripted(json.dumps(HEAT), json.dumps(HEAT))
    [result] = build_graphs([seed], backend, SETTINGS)
    assert result.error is None and result.simple_query == "mine"
    assert backend.calls == 2  # no extraction, no deep-intent call: base + expand only
    assert "I want A" in backend.seen[0][-1]["content"]
    assert "I want the report to B" in backend.seen[1][-1]["content"]


def test_rubric_becomes_deep_intents():
    seed = {"id": "s", "query": "q", "rubric": ["Compares costs", "Readable for a homeowner"]}
    deep = json.dumps({"deep_intents": ["I want the report to be readable for a homeowner"]})
    backend = Scripted(EXTRACTED, deep, json.dumps(HEAT), json.dumps(HEAT))
    [result] = build_graphs([seed], backend, SETTINGS)
    assert result.deep == ["I want the report to be readable for a homeowner"]
    assert "Compares costs" in backend.seen[1][-1]["content"]


@pytest.mark.parametrize("replies,stage,reason", [
    (["not json", "still not json"], "extract", "not a JSON object"),
    ([EXTRACTED, "{}", '{"root_node": "r", "start_node_ids": [], "nodes": {}}'], "base",
     "graph.start_node_ids: expected a non-empty list"),
    ([EXTRACTED, json.dumps(HEAT), "[]", '{"nodes": 1}'], "expand", "graph.start_node_ids"),
])
def test_failures_after_retries_are_reported_with_stage_and_reason(replies, stage, reason):
    backend = Scripted(*replies)
    [result] = build_graphs([{"id": "s", "query": "q"}], backend, SETTINGS)
    assert result.graph is None
    assert result.stage == stage
    assert reason in result.error
    assert not backend.replies  # every retry was spent


def test_node_limit_is_enforced_on_built_graphs():
    settings = BuildSettings(limits=GraphLimits(max_nodes=2), retries=0, merge_threshold=1.0)
    [result] = build_graphs([{"id": "s", "query": "q"}], Scripted(EXTRACTED, json.dumps(HEAT)), settings)
    assert result.stage == "base" and "3 nodes, more than the limit of 2" in result.error


def test_merging_uses_the_embedding_function():
    twin = copy_of(HEAT)
    twin["nodes"]["q2"]["text"] = "Which kind of heat pump?"  # same question as q1
    twin["nodes"]["q2"]["options"] = [{"text": "Air", "next_node_id": []}, {"text": "Ground", "next_node_id": []}]
    settings = BuildSettings(retries=0, merge_threshold=0.95)

    def embed_fn(texts):
        import numpy as np

        table = {"Which kind of heat pump?": [1.0, 0.0], "Which climate?": [0.0, 1.0]}
        return np.array([table[t] for t in texts], dtype=np.float32)

    [result] = build_graphs([{"id": "s", "query": "q"}], Scripted(EXTRACTED, json.dumps(twin), json.dumps(twin)),
                            settings, embed_fn)
    assert result.error is None
    assert ("q1", "q2") in result.merged
    assert list(result.graph["nodes"]) == ["q1", "q3"] and result.graph["start_node_ids"] == ["q1"]
