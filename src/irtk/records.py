"""Record types and their pyarrow schemas: the one place that says what each stage reads and writes.

Records travel between stages as Python dicts (JSONL on pipes) and as typed Arrow tables
(Parquet on disk). Nested data are Arrow lists/structs, never JSON strings. A field may carry a
*codec* in its Arrow metadata when the JSON layout and the Arrow layout differ: the C-DAG's
``nodes`` is a JSON object keyed by node id (the IntentRL appendix layout, so graphs written by
others load as they are) but an Arrow list of node structs (Arrow maps cannot hold structs
usefully). ``encode_row``/``decode_row`` convert between the two; ``io`` applies them.

Unknown input columns are not described here and pass through every stage untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from irtk.errors import InputError

CODEC_KEY = b"irtk.codec"
KEYED_LIST = b"keyed_list:id"


def _keyed(name: str, item: pa.DataType, nullable: bool = True) -> pa.Field:
    """A list of structs that is a JSON object keyed by the struct's ``id`` outside Arrow."""
    return pa.field(name, pa.list_(item), nullable=nullable, metadata={CODEC_KEY: KEYED_LIST})


# --- the C-DAG (IntentRL appendix layout) ------------------------------------------------------

OPTION = pa.struct(
    [
        pa.field("text", pa.string()),
        pa.field("next_node_id", pa.list_(pa.string())),
        # Optional: the latent intent a user choosing this option holds ("I want ...").
        pa.field("intent", pa.string()),
    ]
)
NODE = pa.struct(
    [
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("options", pa.list_(OPTION)),
        # Optional: "shallow" or "deep" — where the node's intents came from.
        pa.field("kind", pa.string()),
    ]
)
GRAPH = pa.struct(
    [
        pa.field("root_node", pa.string()),
        pa.field("start_node_ids", pa.list_(pa.string())),
        _keyed("nodes", NODE),
    ]
)

INTENTS = pa.struct([pa.field("shallow", pa.list_(pa.string())), pa.field("deep", pa.list_(pa.string()))])

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

STEP = pa.struct(
    [
        pa.field("turn", pa.int32()),
        pa.field("node_id", pa.string()),
        pa.field("question", pa.string()),
        pa.field("options", pa.list_(pa.string())),
        pa.field("choice", pa.string()),
        pa.field("choice_index", pa.int32()),
        pa.field("intent", pa.string()),
        # Hindsight targets (Stage I): nodes visitable on the traversal stack at this turn.
        pa.field("target_node_ids", pa.list_(pa.string())),
        pa.field("target_intents", pa.list_(pa.string())),
    ]
)

TURN = pa.struct(
    [
        pa.field("turn", pa.int32()),
        pa.field("question", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("verdict", pa.string()),  # answered | redundant | irrelevant | stop
        pa.field("matched_intent", pa.string()),
        pa.field("similarity", pa.float64()),
        pa.field("target_intents", pa.list_(pa.string())),
        pa.field("content", pa.float64()),
        pa.field("format", pa.float64()),
        pa.field("penalty", pa.float64()),
        pa.field("reward", pa.float64()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
    ]
)


@dataclass(frozen=True)
class RecordType:
    """A named record layout: the Arrow schema of its known fields and which are required."""

    name: str
    schema: pa.Schema
    required: frozenset[str] = field(default_factory=frozenset)
    doc: str = ""

    def validate(self, row: Mapping, *, source: str | None = None, row_no: int | None = None) -> None:
        """Raise InputError naming source, row and field if ``row`` does not fit this type."""
        if not isinstance(row, Mapping):
            raise InputError(f"expected an object, got {_kind(row)}", source=source, row=row_no)
        for name in self.required:
            if row.get(name) is None:
                raise InputError(f"missing required field for a {self.name} record",
                                 source=source, row=row_no, field=name)
        for f in self.schema:
            if f.name in row:
                problem = check_value(row[f.name], f)
                if problem is not None:
                    path, msg = problem
                    raise InputError(msg, source=source, row=row_no, field=path)


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema(list(fields))


SEED = RecordType(
    "seed",
    _schema(
        pa.field("id", pa.string()),
        pa.field("query", pa.string()),
        pa.field("simple_query", pa.string()),
        pa.field("intents", INTENTS),
        pa.field("rubric", pa.list_(pa.string())),
        pa.field("graph", GRAPH),
    ),
    frozenset({"id", "query"}),
    "a seed research task for `irtk expand`",
)

TRAJECTORY = RecordType(
    "trajectory",
    _schema(
        pa.field("id", pa.string()),
        pa.field("seed_id", pa.string()),
        pa.field("query", pa.string()),
        pa.field("simple_query", pa.string()),
        pa.field("graph", GRAPH),
        pa.field("path", pa.list_(STEP)),
        pa.field("intents", pa.list_(pa.string())),
        pa.field("dialogue", pa.list_(MESSAGE)),
        pa.field("render", pa.string()),
        # The seed's own (or the LLM-extracted) shallow/deep intents and rubric, kept for reference.
        pa.field("seed_intents", INTENTS),
        pa.field("rubric", pa.list_(pa.string())),
    ),
    frozenset({"id", "simple_query", "intents"}),
    "one simulated user's path through a C-DAG (`irtk expand` output)",
)

DIALOGUE = RecordType(
    "dialogue",
    _schema(
        pa.field("id", pa.string()),
        pa.field("policy", pa.string()),
        pa.field("turns", pa.list_(TURN)),
        pa.field("matched_intents", pa.list_(pa.string())),
        pa.field("precision", pa.float64()),
        pa.field("recall", pa.float64()),
        pa.field("f1", pa.float64()),
        pa.field("quality", pa.float64()),
        pa.field("redundant", pa.int32()),
        pa.field("restates", pa.int32()),
        pa.field("irrelevant", pa.int32()),
        pa.field("turns_used", pa.int32()),
        pa.field("stopped_early", pa.bool_()),
        pa.field("summary", pa.string()),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
    ),
    frozenset({"id", "turns"}),
    "a simulated clarification dialogue with verdicts, rewards and metrics (`irtk simulate`)",
)

DOCUMENT = RecordType(
    "document",
    # ``image`` is a path, raw bytes or base64 text; its Arrow type follows the input.
    _schema(pa.field("doc_id", pa.string()), pa.field("text", pa.string())),
    frozenset({"doc_id"}),
    "a retrieval document (`irtk index` input)",
)

QUERY = RecordType(
    "query",
    _schema(pa.field("qid", pa.string()), pa.field("query", pa.string())),
    frozenset({"qid", "query"}),
    "a retrieval query (`irtk retrieve` input)",
)

HIT = RecordType(
    "hit",
    _schema(
        pa.field("qid", pa.string()),
        pa.field("docid", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("score", pa.float32()),
    ),
    frozenset({"qid", "docid", "rank", "score"}),
    "one retrieved document for one query (`irtk retrieve` output)",
)

EVIDENCE = pa.struct(
    [
        pa.field("docid", pa.string()),
        pa.field("score", pa.float64()),  # best score over the sub-queries that found it
        pa.field("text", pa.string()),
        pa.field("subqueries", pa.list_(pa.int32())),  # indexes into ``subqueries``
        pa.field("subquery_scores", pa.list_(pa.float64())),
    ]
)

REPORT = RecordType(
    "report",
    _schema(
        pa.field("id", pa.string()),
        pa.field("request", pa.string()),
        pa.field("clarify", pa.string()),  # interactive | simulate | auto | none
        pa.field("seed", pa.int64()),
        pa.field("turns", pa.list_(TURN)),
        pa.field("assumptions", pa.list_(pa.string())),
        pa.field("brief", pa.struct([pa.field("query", pa.string()), pa.field("points", pa.list_(pa.string()))])),
        pa.field("subqueries", pa.list_(pa.string())),
        pa.field("evidence", pa.list_(EVIDENCE)),
        pa.field("writer", pa.string()),
        pa.field("report", pa.string()),
        pa.field("citations", pa.struct([
            pa.field("total", pa.int64()), pa.field("valid", pa.int64()), pa.field("invalid", pa.int64()),
            pa.field("invalid_ids", pa.list_(pa.string()))])),
        pa.field("coverage", pa.float64()),
        pa.field("covered_intents", pa.list_(pa.string())),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
    ),
    frozenset({"id", "report"}),
    "a cited research report with its clarification dialogue, brief and evidence (`irtk research`)",
)

RECORD_TYPES: dict[str, RecordType] = {
    t.name: t for t in (SEED, TRAJECTORY, DIALOGUE, DOCUMENT, QUERY, HIT, REPORT)
}


# --- value checks -------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _expected(t: pa.DataType, f: pa.Field | None = None) -> str:
    if f is not None and f.metadata and f.metadata.get(CODEC_KEY) == KEYED_LIST:
        return "object keyed by id"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "array"
    if pa.types.is_struct(t):
        return "object"
    return str(t)


def check_value(value: object, f: pa.Field, path: str | None = None) -> tuple[str, str] | None:
    """Check a Python value against an Arrow field; return (field path, message) or None.

    Nulls are accepted anywhere (required fields are checked separately); JSON integers are
    accepted for float fields; booleans are not integers.
    """
    path = path or f.name
    t = f.type
    if value is None:
        return None
    bad = (path, f"expected {_expected(t, f)}, got {_kind(value)}")
    if f.metadata and f.metadata.get(CODEC_KEY) == KEYED_LIST:
        if isinstance(value, Mapping):
            item = pa.field("item", t.value_type)
            for key, sub in value.items():
                problem = check_value(sub, item, f"{path}.{key}")
                if problem:
                    return problem
            return None
        if not isinstance(value, list):  # the Arrow layout (a list) is accepted too
            return bad
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return None if isinstance(value, str) else bad
    if pa.types.is_boolean(t):
        return None if isinstance(value, bool) else bad
    if pa.types.is_integer(t):
        return None if isinstance(value, int) and not isinstance(value, bool) else bad
    if pa.types.is_floating(t):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else bad
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if not isinstance(value, (list, tuple)):
            return bad
        item = pa.field("item", t.value_type)
        for i, sub in enumerate(value):
            problem = check_value(sub, item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if pa.types.is_struct(t):
        if not isinstance(value, Mapping):
            return bad
        for sub_field in t:
            if sub_field.name in value:
                problem = check_value(value[sub_field.name], sub_field, f"{path}.{sub_field.name}")
                if problem:
                    return problem
        return None
    return None


# --- codecs: JSON layout <-> Arrow layout --------------------------------------------------------


def _codec_fields(t: pa.DataType) -> bool:
    """True if a codec is used anywhere inside this type (so rows need converting)."""
    if pa.types.is_struct(t):
        return any((f.metadata or {}).get(CODEC_KEY) or _codec_fields(f.type) for f in t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _codec_fields(t.value_type)
    return False


def _convert(value: object, f: pa.Field, to_arrow: bool) -> object:
    if value is None:
        return None
    t = f.type
    if f.metadata and f.metadata.get(CODEC_KEY) == KEYED_LIST:
        item = pa.field("item", t.value_type)
        if to_arrow and isinstance(value, Mapping):
            out = []
            for key, sub in value.items():
                if sub is None:  # a key without an entry (a struct column that other rows filled)
                    continue
                sub = dict(sub) if isinstance(sub, Mapping) else sub
                if isinstance(sub, dict):
                    sub.setdefault("id", key)
                out.append(_convert(sub, item, True))
            return out
        if not to_arrow and isinstance(value, list):
            return {sub["id"]: _convert(sub, item, False) for sub in value if sub is not None}
        return value
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and isinstance(value, (list, tuple)):
        if not _codec_fields(t.value_type):
            return value
        item = pa.field("item", t.value_type)
        return [_convert(v, item, to_arrow) for v in value]
    if pa.types.is_struct(t) and isinstance(value, Mapping):
        if not _codec_fields(t):
            return value
        out = dict(value)
        for sub in t:
            if sub.name in out:
                out[sub.name] = _convert(out[sub.name], sub, to_arrow)
        return out
    return value


def codec_fields(schema: pa.Schema) -> list[pa.Field]:
    """The top-level fields of ``schema`` whose values need codec conversion."""
    return [
        f for f in schema
        if (f.metadata or {}).get(CODEC_KEY) or _codec_fields(f.type)
    ]


def encode_row(row: dict, fields: Iterable[pa.Field]) -> dict:
    """JSON layout -> Arrow layout for the given codec fields (a shallow copy when changed)."""
    out = row
    for f in fields:
        if row.get(f.name) is not None:
            if out is row:
                out = dict(row)
            out[f.name] = _convert(row[f.name], f, True)
    return out


def decode_row(row: dict, fields: Iterable[pa.Field]) -> dict:
    """Arrow layout -> JSON layout (in place)."""
    for f in fields:
        if row.get(f.name) is not None:
            row[f.name] = _convert(row[f.name], f, False)
    return row


def detect(row: Mapping) -> RecordType | None:
    """The record type, among those with codec fields, that ``row`` is (for untyped JSONL).

    Most specific first (a trajectory has every field a seed requires); a type counts only if
    the row validates against it, so a seed is not mistaken for a trajectory.
    """
    for rt in sorted(RECORD_TYPES.values(), key=lambda t: -len(t.required)):
        fields = codec_fields(rt.schema)
        if not fields or not any(row.get(f.name) is not None for f in fields):
            continue
        try:
            rt.validate(row)
        except InputError:
            continue
        return rt
    return None
