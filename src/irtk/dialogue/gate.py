"""The simulated user's gate, shared by the user simulator and the rewards.

Three checks, each with its own threshold (``Thresholds``):

- *redundant*: it asks again what an earlier question asked — the path gate compares the graph
  nodes the questions ask (below), else the question's cosine to an earlier question exceeds
  ``tau_rep``;
- *restates*: its cosine to the user's request exceeds ``tau_req`` — merely restating the request
  is its own check, because a question that names the request's topic is close to the request
  without repeating anything (the paper folds the request into the history under one threshold);
- *irrelevant*: it asks about nothing the user wants. Otherwise it is *answered*, about one intent.

Relevance is decided one of two ways (``mode``):

- ``embedding`` (the paper's gate): irrelevant when the best cosine to the latent intents is below
  ``tau_rel``; answered about the most similar intent (ties go to the earlier intent);
- ``path`` (the default; beyond the paper): a user who knows its own path through the C-DAG.
  The question is matched to the graph's nodes (a match is a cosine above ``tau_rep`` to the node's
  question, with or without its options: the same "is this the same question" test as
  redundancy); a node on the user's path is answered about the intent the user chose there, a
  node on a branch the user did not take is irrelevant, and a question that matches no node
  falls back to the embedding test. Off-branch questions are close to the user's intents in
  embedding space ("Which Asian country?" vs "I want the report to cover Europe"), so the
  embedding gate cannot tell them apart; the graph can. The same user also knows which of its
  questions were already asked: a question that matches a node is redundant exactly when an
  earlier question matched that node; two different questions of one graph are never repeats of
  each other however alike their wording, and the cosine test remains for questions that match
  no node.

Thresholds are calibrated per embedder from C-DAGs (``irtk calibrate``, ``irtk.dialogue.calibrate``)
and shipped for ``minilm-l6`` and ``mpnet-base-v2`` in ``irtk/dialogue/thresholds/``; any other
embedder needs its own file (``--thresholds``) or explicit values.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from irtk.errors import InputError, UsageError
from irtk.graphs.render import template_question
from irtk.models import DEFAULT_EMBEDDER

ANSWERED, REDUNDANT, RESTATES, IRRELEVANT, STOP = "answered", "redundant", "restates", "irrelevant", "stop"
GATE_MODES = ("path", "embedding")

# Hub ids of the registry's embedders share their calibrated thresholds.
_ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "minilm-l6",
            "sentence-transformers/all-mpnet-base-v2": "mpnet-base-v2"}


@dataclass(frozen=True)
class Thresholds:
    """The gate's three cosine thresholds, and where they came from."""

    tau_rel: float  # irrelevant below this best cosine to the intents
    tau_rep: float  # redundant above this cosine to an earlier question (and the node match)
    tau_req: float  # restates the request above this cosine to it
    embedder: str | None = None
    source: str = ""
    calibration: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("tau_rel", "tau_rep", "tau_req"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
                raise UsageError(f"{name} is a cosine similarity in [-1, 1], got {value!r}")

    @classmethod
    def load(cls, path: str | Path) -> Thresholds:
        """Thresholds from a JSON file written by ``irtk calibrate``."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise UsageError(f"--thresholds {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise InputError(f"not JSON: {e}", source=str(path)) from None
        for name in ("tau_rel", "tau_rep", "tau_req"):
            if name not in data:
                raise InputError("missing threshold", source=str(path), field=name)
        return cls(float(data["tau_rel"]), float(data["tau_rep"]), float(data["tau_req"]),
                   embedder=data.get("embedder"), source=str(path),
                   calibration=data.get("calibration") or {})

    @classmethod
    def packaged(cls, embedder: str) -> Thresholds | None:
        """The shipped thresholds for a registry embedder (or its hub id), else None."""
        name = _ALIASES.get(embedder, embedder)
        if "/" in name or ":" in name or name.startswith("."):
            return None
        ref = resources.files("irtk.dialogue") / "thresholds" / f"{name}.json"
        if not ref.is_file():
            return None
        with resources.as_file(ref) as path:
            return replace(cls.load(path), source=f"packaged ({name})")

    @classmethod
    def for_embedder(cls, embedder: str) -> Thresholds:
        """The shipped thresholds of ``embedder``; a usage error naming the fix when none ship."""
        found = cls.packaged(embedder)
        if found is None:
            raise UsageError(
                f"no calibrated gate thresholds for embedder {embedder!r}: run "
                f"'irtk calibrate TRAJECTORIES --embedder {embedder} -o thresholds.json' and pass "
                "--thresholds thresholds.json (or give --tau-rel, --tau-rep and --tau-req)")
        return found

    def to_json(self) -> dict:
        out = asdict(self)
        out["calibration"] = dict(self.calibration)
        return out


# The IntentRL paper's values, set for all-mpnet-base-v2; the request was part of the history,
# under the repetition threshold.
PAPER_THRESHOLDS = Thresholds(tau_rel=0.8, tau_rep=0.92, tau_req=0.92, embedder="mpnet-base-v2",
                              source="IntentRL paper")
DEFAULT_THRESHOLDS = Thresholds.for_embedder(DEFAULT_EMBEDDER)
DEFAULT_TAU_REP = DEFAULT_THRESHOLDS.tau_rep
DEFAULT_TAU_REL = DEFAULT_THRESHOLDS.tau_rel
DEFAULT_TAU_REQ = DEFAULT_THRESHOLDS.tau_req


@dataclass(frozen=True)
class Verdict:
    """What the gate made of one question."""

    verdict: str  # answered | redundant | restates | irrelevant
    matched_intent: str | None  # the intent answered about
    similarity: float  # best cosine to the intents (0.0 when there are none)
    history_similarity: float  # best cosine to an earlier question (0.0 when there is none)
    request_similarity: float = 0.0  # cosine to the user's request (0.0 without one)
    node_id: str | None = None  # the graph node the question matched (path gate)
    on_path: bool | None = None  # whether that node is on the user's path (None: no node matched)

    @property
    def repeats(self) -> bool:
        return self.verdict == REDUNDANT


def node_forms(node: Mapping) -> list[str]:
    """A node's question as asked (with its options) and bare: what a question is matched to."""
    text = str(node.get("text") or "")
    options = [str(o.get("text") or "") for o in node.get("options") or []]
    return [template_question({"question": text, "options": options}), text] if options else [text]


class EmbeddingGate:
    """The gate's cosine tests with one embedding cache.

    ``embedder`` is a registry name, a path, a hub id, or an object with sentence-transformers'
    ``encode``. ``thresholds`` default to the embedder's shipped ones (minilm-l6's for an
    object); ``tau_*`` override single values. ``mode`` is ``path`` or ``embedding`` (module
    docstring). The model loads on first use, so building a gate is free.
    """

    def __init__(self, embedder: str | Any = DEFAULT_EMBEDDER, *, thresholds: Thresholds | None = None,
                 tau_rep: float | None = None, tau_rel: float | None = None, tau_req: float | None = None,
                 mode: str = "path") -> None:
        if mode not in GATE_MODES:
            raise UsageError(f"--gate must be one of {', '.join(GATE_MODES)}, got {mode!r}")
        explicit = {k: v for k, v in (("tau_rep", tau_rep), ("tau_rel", tau_rel), ("tau_req", tau_req))
                    if v is not None}
        if thresholds is None and len(explicit) < 3:
            thresholds = Thresholds.for_embedder(embedder) if isinstance(embedder, str) else DEFAULT_THRESHOLDS
        if explicit:
            base = thresholds or Thresholds(**explicit)
            thresholds = replace(base, **explicit, source=(base.source + " with overrides").strip())
        self.thresholds: Thresholds = thresholds  # type: ignore[assignment]
        self.tau_rep = self.thresholds.tau_rep
        self.tau_rel = self.thresholds.tau_rel
        self.tau_req = self.thresholds.tau_req
        self.mode = mode
        self.embedder = embedder
        self._model: Any = None if isinstance(embedder, str) else embedder
        self._cache: dict[str, np.ndarray] = {}

    def configured(self, *, thresholds: Thresholds | None = None, mode: str | None = None) -> EmbeddingGate:
        """This gate with other thresholds or mode, sharing the model and the embedding cache."""
        other = copy.copy(self)
        if thresholds is not None:
            other.thresholds = thresholds
            other.tau_rep, other.tau_rel, other.tau_req = thresholds.tau_rep, thresholds.tau_rel, thresholds.tau_req
        if mode is not None:
            if mode not in GATE_MODES:
                raise UsageError(f"--gate must be one of {', '.join(GATE_MODES)}, got {mode!r}")
            other.mode = mode
        return other

    @property
    def model(self) -> Any:
        if self._model is None:
            from irtk.embedding import load_embedder

            self._model = load_embedder(self.embedder)
        return self._model

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embed every text not seen yet in one batched call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if not missing:
            return
        from irtk.embedding import embed

        for text, vector in zip(missing, embed(missing, self.model), strict=True):
            self._cache[text] = vector
        if len(self._cache) > 200_000:  # a long-running trainer must not grow without bound
            self._cache = dict(list(self._cache.items())[-100_000:])

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        self.prefetch(texts)
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def best(self, text: str, others: Sequence[str]) -> tuple[float, int]:
        """Highest cosine of ``text`` to ``others`` and its index (first on ties); (0.0, -1) if none."""
        if not others:
            return 0.0, -1
        sims = self.vectors(list(others)) @ self.vectors([text])[0]
        index = int(np.argmax(sims))  # argmax returns the first maximum: a stable tie-break
        return float(sims[index]), index

    def match_node(self, question: str, graph: Mapping | None) -> tuple[str | None, float]:
        """The graph node whose question ``question`` asks (cosine above tau_rep to the node as
        asked or bare; the best node, first id on ties), else None; and that best cosine."""
        nodes = (graph or {}).get("nodes") or {}
        if not nodes:
            return None, 0.0
        owners, forms = [], []
        for node_id in sorted(nodes):
            for text in node_forms(nodes[node_id]):
                owners.append(node_id)
                forms.append(text)
        sim, index = self.best(question, forms)
        return (owners[index] if sim > self.tau_rep else None), max(sim, 0.0)

    def texts_for(self, question: str, history: Sequence[str], intents: Sequence[str],
                  request: str | None = None, graph: Mapping | None = None) -> list[str]:
        """Every text ``judge`` embeds for these arguments (to prefetch a batch at once)."""
        nodes = (graph or {}).get("nodes") or {} if self.mode == "path" else {}
        return [question, *history, *intents, *([request] if request else []),
                *(t for n in nodes.values() for t in node_forms(n))]

    def relevance(self, question: str, intents: Sequence[str], *, graph: Mapping | None = None,
                  path: Sequence[Mapping] | None = None) -> Verdict:
        """The relevance test alone: answered (about which intent) or irrelevant."""
        rel, index = self.best(question, intents)
        if self.mode == "path" and graph and path:
            node_id, _ = self.match_node(question, graph)
            if node_id is not None:
                step = next((s for s in path if s.get("node_id") == node_id), None)
                if step is None:
                    return Verdict(IRRELEVANT, None, rel, 0.0, 0.0, node_id, False)
                intent = step.get("intent")
                if intent in intents:
                    return Verdict(ANSWERED, str(intent), rel, 0.0, 0.0, node_id, True)
                # A path step whose intent is not among the user's: trust the intents instead.
        if not intents or rel < self.tau_rel:
            return Verdict(IRRELEVANT, None, rel, 0.0, 0.0)
        return Verdict(ANSWERED, intents[index], rel, 0.0, 0.0)

    def redundancy(self, question: str, history: Sequence[str], graph: Mapping | None = None) -> tuple[bool, float]:
        """Whether ``question`` asks again what an earlier question asked, and its best cosine
        to them. Path gate with a graph: a question that matches a node repeats exactly when an
        earlier question matched the same node, and is compared by cosine only with earlier
        questions that matched no node; otherwise (and always for the embedding gate) it
        repeats when its cosine to an earlier question exceeds ``tau_rep``."""
        sim, _ = self.best(question, history)
        if self.mode == "path" and graph and history:
            node_id, _ = self.match_node(question, graph)
            if node_id is not None:
                earlier = [self.match_node(h, graph)[0] for h in history]
                if node_id in earlier:
                    return True, sim
                loose = [h for h, n in zip(history, earlier, strict=True) if n is None]
                return self.best(question, loose)[0] > self.tau_rep, sim
        return bool(history) and sim > self.tau_rep, sim

    def judge(self, question: str, history: Sequence[str], intents: Sequence[str],
              request: str | None = None, *, graph: Mapping | None = None,
              path: Sequence[Mapping] | None = None) -> Verdict:
        """The verdict for ``question`` given the earlier questions, the latent intents, the
        user's request and (path gate) the user's graph and path: redundant, then restates,
        then irrelevant, else answered."""
        redundant, rep = self.redundancy(question, history, graph)
        req, _ = self.best(question, [request] if request else [])
        relevance = replace(self.relevance(question, intents, graph=graph, path=path),
                            history_similarity=rep, request_similarity=req)
        if redundant:
            return replace(relevance, verdict=REDUNDANT, matched_intent=None)
        if request and req > self.tau_req:
            return replace(relevance, verdict=RESTATES, matched_intent=None)
        return relevance
