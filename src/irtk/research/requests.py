"""Research requests: validation, and the simulated user a request stands for.

A request is ``{"id", "query"}``, optionally with the user's latent ``intents`` (a list of
"I want ..." strings, or a seed's ``{"shallow": [...], "deep": [...]}``) and a C-DAG ``graph``
(the IntentRL appendix layout) for evaluation. ``irtk expand`` trajectories are requests too:
their fuzzy ``simple_query`` is what the user asks, and their ``path`` is the user.

A request with a graph but no path is a family of users: for each seed one path through the
graph is drawn (``graphs.traversal``, seeded by seed and id), and that path's chosen options are
the user's latent intents — so ``--repeats`` evaluates other users of the same request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from irtk.errors import InputError
from irtk.graphs.graph import GraphError, normalize_graph, validate_graph
from irtk.graphs.traversal import Traversal, steps_of
from irtk.records import TRAJECTORY, RecordType


def request_text(row: Mapping) -> str:
    """What the user asks: the fuzzy ``simple_query`` of a trajectory, else ``query``."""
    return str(row.get("simple_query") or row.get("query") or "").strip()


def intent_list(value: object) -> list[str] | None:
    """Latent intents as a flat list: a list of strings, or a seed's shallow + deep lists."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = [*(value.get("shallow") or []), *(value.get("deep") or [])]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of intent strings or {shallow: [...], deep: [...]}")
    return [v.strip() for v in value if v.strip()]


@dataclass(frozen=True)
class RequestType(RecordType):
    """A research request: ``id`` and a non-empty ``query``; intents and graph when given must be
    well formed."""

    def validate(self, row: Mapping, *, source: str | None = None, row_no: int | None = None) -> None:
        super().validate(row, source=source, row_no=row_no)

        def fail(message: str, field: str) -> InputError:
            return InputError(message, source=source, row=row_no, field=field)

        if row.get("query") is None and row.get("simple_query") is None:
            raise fail("missing required field for a request record", "query")
        if not request_text(row):
            raise fail("empty query: nothing to research", "query")
        try:
            intent_list(row.get("intents"))
        except ValueError as e:
            raise fail(str(e), "intents") from None
        graph = row.get("graph")
        if graph is not None:
            try:
                validate_graph(normalize_graph(graph))
            except GraphError as e:
                raise fail(e.message, e.field or "graph") from None


REQUEST = RequestType(
    "request",
    TRAJECTORY.schema,  # trajectories are requests; only id and a query are needed
    frozenset({"id"}),
    "a research request for `irtk research` (id, query, optional intents / graph)",
)


def user_row(row: Mapping, seed: int) -> dict:
    """The request as a dialogue row for ``Episode``: its intents, and a path through its graph
    when it has a graph but no path (one user per seed)."""
    out = dict(row)
    out["simple_query"] = request_text(row)
    intents = intent_list(row.get("intents"))
    graph = row.get("graph")
    if graph is not None and not row.get("path"):
        graph = normalize_graph(graph)
        _, visits = next(Traversal(graph).paths(1, seed=f"{seed}:{row['id']}"))
        out["graph"] = graph
        out["path"] = steps_of(graph, visits)
        if intents is None:
            intents = [s["intent"] for s in out["path"]]
    out["intents"] = intents or []
    return out
