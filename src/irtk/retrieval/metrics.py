"""Ranking metrics over a run and qrels: MRR@10, NDCG@10 (binary gain), Recall@5/20/100, Hit@1.

Definitions (CIEA / UniVL-DR evaluation, pytrec_eval semantics for recall):

- A document is relevant when its qrels grade is > 0; the run is ranked by score (descending),
  ties broken by docid (ascending, the order ``irtk retrieve`` writes).
- Averages are over the queries that have at least one relevant document in the qrels. Such a
  query missing from the run scores 0 on every metric; run queries without relevant documents
  are skipped (and counted, so a mismatch between run and qrels is visible).
- MRR@10: 1/rank of the first relevant document within the top 10, else 0.
- NDCG@10: DCG with gain 1 for a relevant document at rank r discounted by log2(r + 1), divided
  by the DCG of an ideal ranking of min(R, 10) relevant documents.
- Recall@k: relevant documents within the top k over all R relevant documents of the query.
- Hit@1: 1 if the top document is relevant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from irtk.errors import InputError

METRICS = ("MRR@10", "NDCG@10", "Recall@5", "Recall@20", "Recall@100", "Hit@1")

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


def _read_lines(path: str | Path, what: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"no such {what} file", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what}: {e}", source=str(path)) from None


def read_qrels(path: str | Path) -> Qrels:
    """TREC qrels (``qid iter docid grade``) or WebQA/UniVL-DR qrels (``qid docid grade``)."""
    name = str(path)
    lines = _read_lines(path, "qrels")
    qrels: Qrels = {}
    width = None
    for line_no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (3, 4):
            raise InputError(f"expected 4 columns (qid iter docid grade) or 3 (qid docid grade), "
                             f"got {len(parts)}", source=name, row=line_no, unit="line")
        if width is None:
            width = len(parts)
        elif len(parts) != width:
            raise InputError(f"{len(parts)} columns after {width}-column lines",
                             source=name, row=line_no, unit="line")
        qid, docid, grade = (parts[0], parts[2], parts[3]) if width == 4 else parts
        try:
            value = int(float(grade))
        except ValueError:
            raise InputError(f"relevance grade {grade!r} is not a number", source=name,
                             row=line_no, field="grade", unit="line") from None
        qrels.setdefault(qid, {})[docid] = value
    if not qrels:
        raise InputError("empty qrels: no judgements", source=name)
    return qrels


def read_trec_run(path: str | Path) -> Run:
    """A TREC run file: ``qid Q0 docid rank score tag`` (rank is ignored, as trec_eval does)."""
    name = str(path)
    lines = _read_lines(path, "run")
    run: Run = {}
    for line_no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise InputError(f"expected 6 columns (qid Q0 docid rank score tag), got {len(parts)}",
                             source=name, row=line_no, unit="line")
        try:
            score = float(parts[4])
        except ValueError:
            raise InputError(f"score {parts[4]!r} is not a number", source=name, row=line_no,
                             field="score", unit="line") from None
        run.setdefault(parts[0], {})[parts[2]] = score
    if not run:
        raise InputError("empty run: no results", source=name)
    return run


def run_from_hits(hits: Iterable[Mapping]) -> Run:
    """A run from hit records (``qid, docid, score``)."""
    run: Run = {}
    for h in hits:
        run.setdefault(str(h["qid"]), {})[str(h["docid"])] = float(h["score"])
    return run


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Docids by score descending, ties by docid ascending."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def query_metrics(ranking: list[str], relevant: set[str]) -> dict[str, float]:
    """Every metric of one query's ranking (``relevant`` must be non-empty)."""
    flags = [d in relevant for d in ranking]
    rr = next((1.0 / (i + 1) for i, f in enumerate(flags[:10]) if f), 0.0)
    dcg = sum(1.0 / math.log2(i + 2) for i, f in enumerate(flags[:10]) if f)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    out = {"MRR@10": rr, "NDCG@10": dcg / idcg}
    for k in (5, 20, 100):
        out[f"Recall@{k}"] = sum(flags[:k]) / len(relevant)
    out["Hit@1"] = 1.0 if flags[:1] == [True] else 0.0
    return out


def evaluate(run: Run, qrels: Qrels) -> dict:
    """Mean metrics over judged queries, plus how many queries were judged/unjudged/missing."""
    judged = {q: {d for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
    judged = {q: rel for q, rel in judged.items() if rel}
    if not judged:
        raise InputError("qrels have no relevant (grade > 0) documents")
    totals = dict.fromkeys(METRICS, 0.0)
    missing = 0
    for qid, relevant in judged.items():
        if qid not in run:
            missing += 1
            continue
        for name, value in query_metrics(ranked(run[qid]), relevant).items():
            totals[name] += value
    n = len(judged)
    result: dict = {name: totals[name] / n for name in METRICS}
    result["queries"] = n
    result["queries_missing_from_run"] = missing
    result["run_queries_without_qrels"] = sum(1 for q in run if q not in judged)
    return result
