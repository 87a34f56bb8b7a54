"""Ranking metrics over a run and qrels, with trec_eval's semantics: MRR@10, NDCG@10,
Recall@5/20/100, Hit@1.

What trec_eval (9.x, and pytrec_eval) does, and so what this module does by default:

- Ordering: a run is ranked by score descending, equal scores by docid *descending* (trec_eval
  ignores the run file's rank column). ``ties="docid"`` orders equal scores ascending instead,
  the order ``irtk retrieve`` writes ranks in.
- Relevance: a document is relevant when its grade is ≥ 1 (trec_eval's default level).
- MRR@10: 1/rank of the first relevant document within the top 10, else 0 (trec_eval's
  ``recip_rank`` on the top 10).
- NDCG@10 (``ndcg_cut.10``): gain = the grade (graded qrels count, e.g. grade 3 ranked second
  gains 3/log2(3)), discount log2(rank + 1), divided by the DCG of the ideal ordering of all the
  query's judged grades, cut at 10. ``gain="binary"`` gives every relevant document gain 1, the
  CIEA paper's definition (identical on binary qrels such as WebQA's).
- Recall@k (``recall.k``): relevant documents in the top k over all relevant documents.
- Hit@1 (``P.1``): 1 if the top document is relevant.
- A query that is judged but has no relevant document scores 0 on every metric and counts.
- Averaging: over the judged queries that appear in the run (trec_eval's default);
  ``average="all"`` averages over every judged query, those missing from the run scoring 0
  (``trec_eval -c``).
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


def ranked(scores: Mapping[str, float], ties: str = "trec_eval") -> list[str]:
    """Docids by score descending; equal scores by docid descending (``trec_eval``) or
    ascending (``docid``)."""
    by_docid = sorted(scores.items(), key=lambda kv: kv[0], reverse=ties == "trec_eval")
    return [d for d, _ in sorted(by_docid, key=lambda kv: -kv[1])]  # stable: keeps docid order


def query_metrics(ranking: list[str], grades: Mapping[str, int], gain: str = "graded") -> dict[str, float]:
    """Every metric of one query's ranking against its judged ``grades`` (docid → grade)."""
    relevant = {d: g for d, g in grades.items() if g >= 1}
    if not relevant:
        return dict.fromkeys(METRICS, 0.0)

    def value(g: int) -> float:
        return float(g) if gain == "graded" else 1.0

    flags = [d in relevant for d in ranking]
    rr = next((1.0 / (i + 1) for i, f in enumerate(flags[:10]) if f), 0.0)
    dcg = sum(value(relevant[d]) / math.log2(i + 2) for i, d in enumerate(ranking[:10]) if d in relevant)
    ideal = sorted((value(g) for g in relevant.values()), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    out = {"MRR@10": rr, "NDCG@10": dcg / idcg}
    for k in (5, 20, 100):
        out[f"Recall@{k}"] = sum(flags[:k]) / len(relevant)
    out["Hit@1"] = 1.0 if flags[:1] == [True] else 0.0
    return out


def evaluate(run: Run, qrels: Qrels, *, ties: str = "trec_eval", gain: str = "graded",
             average: str = "run") -> dict:
    """Mean metrics (see the module docstring for the semantics), how many queries were averaged,
    judged queries missing from the run, run queries without judgements, and the settings."""
    if not any(g >= 1 for docs in qrels.values() for g in docs.values()):
        raise InputError("qrels have no relevant (grade >= 1) documents")
    missing = [q for q in qrels if q not in run]
    averaged = list(qrels) if average == "all" else [q for q in qrels if q in run]
    totals = dict.fromkeys(METRICS, 0.0)
    for qid in averaged:
        if qid in run:
            for name, v in query_metrics(ranked(run[qid], ties), qrels[qid], gain).items():
                totals[name] += v
    n = len(averaged)
    result: dict = {name: totals[name] / n if n else 0.0 for name in METRICS}
    result["queries"] = n
    result["queries_missing_from_run"] = len(missing)
    result["run_queries_without_qrels"] = sum(1 for q in run if q not in qrels)
    result["semantics"] = {"ties": ties, "gain": gain, "average": average}
    return result
