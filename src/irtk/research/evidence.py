"""Evidence for a research brief: sub-queries planned from the brief, searched in an irtk index,
deduplicated, with their doc ids, scores and texts.

The index folder holds vectors and doc ids, not texts, so the texts come from the documents the
index was built from (``--docs``, default the source in the index's ``provenance.json``), read
in one streaming pass per batch that keeps only the documents retrieved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from irtk.errors import InputError
from irtk.io import RecordReader
from irtk.records import DOCUMENT
from irtk.research.clarify import question_stem

# An answer this short ("Europe", "2") means little to a retriever without its question.
SHORT_ANSWER_WORDS = 4


def point_query(point: str, question: str | None) -> str:
    """The search text for one point of the brief: the point itself, with its question's stem
    in front when the point is a short answer to a question."""
    if question and len(point.split()) < SHORT_ANSWER_WORDS:
        return f"{question_stem(question)} {point}".strip()
    return point


def plan(brief_query: str, points: Sequence[tuple[str, str | None]]) -> list[str]:
    """Sub-queries: the brief's query, then one per point ((point, question it answers or None)).
    Duplicates are dropped, order kept."""
    queries = [brief_query.strip(), *(point_query(p, q) for p, q in points)]
    return list(dict.fromkeys(q for q in queries if q))


def gather(hits: Sequence[Sequence[tuple[str, float]]], max_evidence: int) -> list[dict]:
    """Deduplicated evidence from the hits of each sub-query.

    Documents are taken round-robin by rank across sub-queries (every sub-query's best hit before
    any second-best), so no point of the brief loses all its evidence to the cap; each keeps its
    best score and, per sub-query that found it, that sub-query's score. Kept evidence is ordered
    by best score, then doc id.
    """
    found: dict[str, dict] = {}
    for qi, ranked in enumerate(hits):
        for doc_id, score in ranked:
            e = found.setdefault(doc_id, {"docid": doc_id, "score": float(score), "subqueries": [],
                                          "subquery_scores": []})
            e["score"] = max(e["score"], float(score))
            e["subqueries"].append(qi)
            e["subquery_scores"].append(float(score))
    order: list[str] = []
    depth = max((len(r) for r in hits), default=0)
    for rank in range(depth):
        for ranked in hits:
            if rank < len(ranked) and ranked[rank][0] not in order:
                order.append(ranked[rank][0])
    kept = [found[d] for d in order[:max_evidence]]
    return sorted(kept, key=lambda e: (-e["score"], e["docid"]))


class EvidenceIndex:
    """An index folder with its encoder and its documents' texts."""

    def __init__(self, index_dir: str | Path, *, docs: str | Path | None = None, encoder: Any = None,
                 batch_size: int = 64) -> None:
        from irtk.retrieval.encoders import compatible, encoder_from_config
        from irtk.retrieval.index import load_index

        self.folder = Path(index_dir)
        self.loaded = load_index(self.folder)
        built = self.loaded.encoder_config
        self.encoder = encoder if encoder is not None else encoder_from_config(built)
        reason = compatible(built, self.encoder.config())
        if reason:
            raise InputError(f"index was built with an incompatible encoder: {reason}", source=str(self.folder))
        self.docs = Path(docs) if docs is not None else self._recorded_source()
        if not self.docs.is_file():
            raise InputError("documents file not found" + ("" if docs is not None else
                             " (the index's recorded source; pass --docs FILE)"), source=str(self.docs))
        self.batch_size = batch_size
        self._tuned_for: int | None = None

    def _recorded_source(self) -> Path:
        try:
            source = json.loads((self.folder / "provenance.json").read_text()).get("source")
        except (OSError, ValueError):
            source = None
        if not source or source == "<stdin>":
            raise InputError("the index does not record a documents file (built from stdin?): "
                             "pass --docs FILE", source=str(self.folder))
        return Path(source)

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (doc_id, score) per query, ties broken by doc id."""
        from irtk.retrieval.search import apply_search_params, default_search_params, search_vectors

        if not queries:
            return []
        if self._tuned_for != k:
            apply_search_params(self.loaded.index, default_search_params(self.loaded.index, k))
            self._tuned_for = k
        vectors = self.encoder.encode_queries(list(queries), [None] * len(queries), batch_size=self.batch_size)
        return search_vectors(self.loaded, vectors, k)

    def texts(self, doc_ids: set[str]) -> dict[str, str]:
        """The text of each wanted document, in one pass over the documents file."""
        out: dict[str, str] = {}
        reader = RecordReader(self.docs, record_type=DOCUMENT, batch_size=4096)
        for row in reader.rows():
            if row["doc_id"] in doc_ids and row["doc_id"] not in out:
                out[row["doc_id"]] = str(row.get("text") or "")
                if len(out) == len(doc_ids):
                    break
        missing = sorted(doc_ids - set(out))
        if missing:
            raise InputError(f"doc id {missing[0]!r} is in the index but not in the documents file "
                             "(was the index built from another file? pass --docs)", source=str(self.docs))
        return out
