"""Building C-DAGs with an LLM: intent extraction, base graph, deep expansion, validate-and-retry.

Every step runs for all seeds of a batch at once (one ``backend.chat`` call per step and retry
round). A reply that is not JSON, or not a valid graph, is sent back to the model with the exact
problem (``nodes.q3.options[1].next_node_id: node 'q9' does not exist``) up to ``retries``
times; a seed that still fails is returned with the stage and reason, never dropped silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from irtk.config import default_of
from irtk.errors import InputError
from irtk.generation import Conversation, SamplingParams
from irtk.graphs import prompts
from irtk.graphs.config import ExpandConfig
from irtk.graphs.graph import (
    GraphLimits,
    merge_similar,
    node_texts,
    normalize_graph,
    validate_graph,
)

# An intent list fits in far fewer tokens than a graph; a model that rambles stops sooner.
INTENT_MAX_TOKENS = 256

# Each reply is started for the model (an assistant prefill the backend continues): a model that
# would open with chatter, or with prose instead of JSON, continues an object already open.
PREFILL = {
    "extract": '{"simple_query": "',
    "deep": '{"deep_intents": [',
    "base": '{"root_node": "',
    "expand": '{"root_node": "',
}


class ReplyError(ValueError):
    """An LLM reply that cannot be used; the message is fed back to the model."""


def _default_params() -> SamplingParams:
    return SamplingParams(max_tokens=default_of(ExpandConfig, "max_tokens"),
                          temperature=default_of(ExpandConfig, "temperature"))


@dataclass
class BuildSettings:
    """What graph building needs of an expand run's settings (defaults: ExpandConfig's)."""

    limits: GraphLimits = field(default_factory=GraphLimits)
    retries: int = default_of(ExpandConfig, "retries")
    merge_threshold: float = default_of(ExpandConfig, "merge_threshold")  # cosine: two questions are one
    embedder: str = default_of(ExpandConfig, "embedder")
    params: SamplingParams = field(default_factory=_default_params)


@dataclass
class BuildResult:
    """What graph building made of one seed; ``error`` set (and ``graph`` None) when it failed."""

    simple_query: str | None = None
    shallow: list[str] = field(default_factory=list)
    deep: list[str] = field(default_factory=list)
    graph: dict | None = None
    stage: str | None = None  # extract | deep | base | expand — where it failed
    error: str | None = None
    attempts: int = 0  # LLM calls spent on this seed
    merged: list[tuple[str, str]] = field(default_factory=list)


# --- parsing replies ---------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json_object(text: str) -> dict:
    """The first JSON object in a reply (code fences and chatter around it are tolerated)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    last_error = "no '{' found"
    for chunk in candidates:
        start = chunk.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError as e:
                last_error = f"{e.msg}: character {e.pos - start + 1}"
                start = chunk.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = chunk.find("{", start + 1)
    raise ReplyError(f"the reply is not a JSON object ({last_error})")


# The placeholders the prompts show; a small model may copy them instead of writing its own text.
PLACEHOLDERS = frozenset({"I want ...", "I want the report to ...", "<fuzzy request>"})


def _strings(value: Any, name: str, *, allow_empty: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ReplyError(f'"{name}" must be a list of strings')
    items = [x.strip() for x in value if x.strip()]
    copied = sorted({x for x in items if x in PLACEHOLDERS})
    if copied:
        raise ReplyError(f'"{name}" copies the placeholder {copied[0]!r}: write the actual sentences')
    if not items and not allow_empty:
        raise ReplyError(f'"{name}" must not be empty')
    return items


def parse_extraction(text: str) -> tuple[str, list[str]]:
    obj = parse_json_object(text)
    simple = obj.get("simple_query")
    if not isinstance(simple, str) or not simple.strip():
        raise ReplyError('"simple_query" must be a non-empty string')
    if simple.strip() in PLACEHOLDERS:
        raise ReplyError(f'"simple_query" copies the placeholder {simple.strip()!r}: write the actual request')
    return simple.strip(), _strings(obj.get("missing_intent"), "missing_intent", allow_empty=False)


def parse_deep(text: str) -> list[str]:
    return _strings(parse_json_object(text).get("deep_intents"), "deep_intents", allow_empty=True)


def graph_parser(simple_query: str, settings: BuildSettings, embed_fn: Callable | None) -> Callable[[str], tuple]:
    """A parser for graph replies: JSON -> normalised -> valid -> merged -> valid."""

    def parse(text: str) -> tuple[dict, list]:
        graph = normalize_graph(parse_json_object(text))
        if isinstance(graph, dict) and not graph.get("root_node"):
            graph["root_node"] = simple_query  # the one field we know better than the model
        try:
            validate_graph(graph, settings.limits)
            merged: list = []
            if embed_fn is not None and settings.merge_threshold < 1.0 and len(graph["nodes"]) > 1:
                graph, merged = merge_similar(graph, embed_fn(node_texts(graph)), settings.merge_threshold)
                validate_graph(graph, settings.limits)
        except InputError as e:
            raise ReplyError(f"{e.field}: {e.message}" if e.field else e.message) from None
        return graph, merged

    return parse


# --- batched ask-with-retries ---------------------------------------------------------------------------


@dataclass
class Answer:
    value: Any = None
    error: str | None = None
    calls: int = 0


def ask_json(backend: Any, conversations: Sequence[Conversation], parsers: Sequence[Callable[[str], Any]],
             params: SamplingParams, retries: int, prefill: str = "") -> list[Answer]:
    """Ask every conversation at once; re-ask the failures with their error, ``retries`` times.

    ``prefill`` starts every reply: the model continues it, and the parser sees prefill + reply.
    """
    answers = [Answer() for _ in conversations]
    pending = dict(enumerate(conversations))
    started = [{"role": "assistant", "content": prefill}] if prefill else []
    for attempt in range(retries + 1):
        if not pending:
            break
        order = list(pending)
        replies = backend.chat([[*pending[i], *started] for i in order], params)
        for i, reply in zip(order, replies, strict=True):
            answers[i].calls += 1
            text = prefill + reply.text
            try:
                answers[i].value = parsers[i](text)
            except ReplyError as e:
                answers[i].error = str(e)
                if attempt < retries:
                    pending[i] = prompts.retry(pending[i], text, str(e))
                else:
                    del pending[i]
                continue
            answers[i].error = None
            del pending[i]
    return answers


# --- the pipeline ------------------------------------------------------------------------------------------


def _seed_intents(seed: Mapping) -> tuple[list[str], list[str]]:
    intents = seed.get("intents") or {}
    return list(intents.get("shallow") or []), list(intents.get("deep") or [])


def build_graphs(seeds: Sequence[Mapping], backend: Any, settings: BuildSettings,
                 embed_fn: Callable[[Sequence[str]], Any] | None = None) -> list[BuildResult]:
    """Build a graph for every seed (all lacking one), batched step by step across seeds.

    A seed's own ``simple_query`` and ``intents`` are used as given; only what is missing is
    asked for. Deep intents come from the ``rubric`` when the seed has one and no deep intents.
    """
    results = []
    for seed in seeds:
        shallow, deep = _seed_intents(seed)
        results.append(BuildResult(simple_query=seed.get("simple_query"), shallow=shallow, deep=deep))
    retries, graph_params = settings.retries, settings.params
    intent_params = replace(graph_params, max_tokens=min(graph_params.max_tokens, INTENT_MAX_TOKENS))

    def run(stage: str, idx: list[int], convs: list[Conversation], parsers: list[Callable]) -> list[tuple[int, Any]]:
        if not idx:
            return []
        params = intent_params if stage in ("extract", "deep") else graph_params
        done = []
        answers = ask_json(backend, convs, parsers, params, retries, PREFILL[stage])
        for i, answer in zip(idx, answers, strict=True):
            results[i].attempts += answer.calls
            if answer.error is not None:
                results[i].stage, results[i].error = stage, answer.error
            else:
                done.append((i, answer.value))
        return done

    # 1. detailed query -> fuzzy query + shallow intents (only where either is missing)
    idx = [i for i, r in enumerate(results) if not r.simple_query or not r.shallow]
    for i, (simple, shallow) in run("extract", idx, [prompts.extract(seeds[i]["query"]) for i in idx],
                                    [parse_extraction] * len(idx)):
        results[i].simple_query = results[i].simple_query or simple
        results[i].shallow = results[i].shallow or shallow

    # 2. rubric -> deep intents (only where the seed has a rubric and no deep intents)
    idx = [i for i, r in enumerate(results) if r.error is None and not r.deep and seeds[i].get("rubric")]
    for i, deep in run("deep", idx, [prompts.deep(seeds[i]["query"], seeds[i]["rubric"]) for i in idx],
                       [parse_deep] * len(idx)):
        results[i].deep = deep

    # 3. base graph from the shallow intents
    idx = [i for i, r in enumerate(results) if r.error is None]
    base = run("base", idx,
               [prompts.base_graph(results[i].simple_query, results[i].shallow, settings.limits) for i in idx],
               [graph_parser(results[i].simple_query, settings, embed_fn) for i in idx])
    for i, (graph, merged) in base:
        results[i].graph, results[i].merged = graph, merged

    # 4. expansion with the deep intents
    idx = [i for i, _ in base]
    expanded = run("expand", idx,
                   [prompts.expand_graph(results[i].simple_query, results[i].graph, results[i].deep,
                                         settings.limits) for i in idx],
                   [graph_parser(results[i].simple_query, settings, embed_fn) for i in idx])
    for i, (graph, merged) in expanded:
        results[i].graph, results[i].merged = graph, results[i].merged + merged
    for r in results:
        if r.error is not None:
            r.graph = None
    return results
