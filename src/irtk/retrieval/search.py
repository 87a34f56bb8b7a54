"""Top-k search over an index folder, hits with deterministic ties, TREC runs, evaluation.

Ties are broken by docid (ascending) after the score, as pyserini does. faiss may cut a run of
equal scores anywhere at the k-th place, so the search widens until the k-th score is strictly
above the last one fetched (or the whole index was fetched) before ties are ordered.

TREC run files carry scores with 9 significant digits, enough to give back every float32 score
exactly: rounding to 6 decimals (pyserini's habit) would create ties that trec_eval then orders
by docid, so a written run would score differently from the search that wrote it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from irtk.errors import InputError, UsageError
from irtk.io import RecordReader, RecordWriter, Shard, make_provenance, resolve_format
from irtk.records import HIT, QUERY
from irtk.retrieval import metrics as M
from irtk.retrieval.config import RetrieveConfig
from irtk.retrieval.encoders import compatible, encoder_from_config
from irtk.retrieval.images import decode_image
from irtk.retrieval.index import LoadedIndex, load_index

TREC_EXTENSIONS = (".trec", ".run", ".txt")


def apply_search_params(index: Any, params: str | None) -> None:
    """faiss ParameterSpace settings, e.g. ``nprobe=32`` or ``efSearch=128,nprobe=16``."""
    if not params:
        return
    import faiss

    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as e:
        raise UsageError(f"--search-params {params!r}: {str(e).strip().splitlines()[-1]}") from None


def default_search_params(index: Any, k: int) -> str | None:
    """faiss's defaults (nprobe=1, efSearch=16) trade too much recall away for a retrieval
    toolkit: probe 32 lists and keep at least max(64, k) HNSW candidates unless told otherwise."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return f"nprobe={min(ivf.nlist, 32)}"
    if "HNSW" in type(index).__name__:
        return f"efSearch={max(64, k)}"
    return None


def search_vectors(loaded: LoadedIndex, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Top-k (doc_id, score) per query vector, ties broken by doc_id."""
    n = loaded.index.ntotal
    k = min(k, n)
    if k <= 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    fetch = min(n, k + 16)
    pending = np.arange(len(queries))
    results: list[list[tuple[str, float]] | None] = [None] * len(queries)
    while len(pending):
        scores, labels = loaded.index.search(queries[pending], fetch)
        again = []
        for row, qi in enumerate(pending):
            valid = labels[row] >= 0
            s, lab = scores[row][valid], labels[row][valid]
            # Widen while the k-th score equals the last one fetched: more ties may lie beyond.
            if fetch < n and len(s) > k and s[k - 1] == s[-1]:
                again.append(qi)
                continue
            hits = sorted(((loaded.doc_id(int(x)), float(v)) for x, v in zip(lab, s, strict=True)),
                          key=lambda h: (-h[1], h[0]))
            results[qi] = hits[:k]
        pending = np.asarray(again, dtype=np.int64)
        fetch = min(n, fetch * 4)
    return results  # type: ignore[return-value]


def read_queries(source: str | Path | None, *, batch_size: int, uses_images: bool,
                 shard: Shard | None = None) -> Iterator[list[dict]]:
    """Validated query rows in batches (``qid``, ``query``, optional ``image`` decoded); with
    ``shard``, only that slice of the queries."""
    reader = RecordReader(source, record_type=QUERY, batch_size=batch_size, shard=shard)
    base_dir = None if reader.path is None else reader.path.parent
    seen: set[str] = set()
    record = 0
    for rows in reader.batches():
        for row in rows:
            record += 1
            if row["qid"] in seen:
                raise InputError(f"duplicate qid {row['qid']!r}", source=reader.name, row=record,
                                 field="qid", unit="record")
            seen.add(row["qid"])
            if row.get("image") is not None and uses_images:
                try:
                    row["_image"] = decode_image(row["image"], base_dir=base_dir)
                except InputError as e:
                    raise e.located(source=reader.name, row=record, field="image", unit="record") from None
        yield rows


class _TrecWriter:
    """TREC run lines (``qid Q0 docid rank score tag``), atomically to a file or to stdout."""

    def __init__(self, output: Path | None, tag: str) -> None:
        self.output = output
        self.tag = tag
        if output is not None:
            if not output.parent.exists():
                raise UsageError(f"{output}: folder {output.parent} does not exist")
            self._tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
            self._fh = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115
        else:
            self._tmp = None
            self._fh = sys.stdout

    def __enter__(self) -> _TrecWriter:
        return self

    def write_rows(self, rows: Iterable[dict]) -> None:
        self._fh.write("".join(f"{r['qid']} Q0 {r['docid']} {r['rank']} {r['score']:.9g} {self.tag}\n"
                               for r in rows))
        self._fh.flush()

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if self._tmp is None:
            return
        self._fh.close()
        if exc_type is None:
            os.replace(self._tmp, self.output)
        else:
            self._tmp.unlink(missing_ok=True)


def output_format(fmt: str | None, output: Path | None) -> str:
    if fmt is None and output is not None and output.suffix.lower() in TREC_EXTENSIONS:
        return "trec"
    return resolve_format(fmt, output, extra=("trec",))


def retrieve(queries: str | Path | None, index_dir: str | Path, cfg: RetrieveConfig | None = None, *,
             output: Path | None = None, fmt: str | None = None, encoder: Any = None,
             encoder_factory: Callable[[dict], Any] | None = None, qrels: str | Path | None = None,
             progress: Callable[[int], None] | None = None, shard: Shard | None = None) -> dict | None:
    """Search every query (or ``shard``'s slice of them); write hits (JSONL/Parquet rows or a TREC
    run); return metrics when ``qrels`` is given. ``encoder`` overrides the index's own encoder
    and must match it; ``cfg`` holds k, the tag, faiss settings and the metric semantics. A
    shard's metrics cover its own queries: the other slices' judged queries are not counted as
    missing (evaluate the concatenated hits with ``evaluate_run`` for the whole)."""
    cfg = cfg or RetrieveConfig()
    k, batch_size = cfg.k, cfg.batch_size
    fmt = output_format(fmt, output)
    judgements = M.read_qrels(qrels) if qrels is not None else None
    loaded = load_index(index_dir, mmap=cfg.mmap)
    built = loaded.encoder_config
    if encoder is None:
        encoder = (encoder_factory or encoder_from_config)(built)
    reason = compatible(built, encoder.config())
    if reason:
        raise InputError(f"index was built with an incompatible encoder: {reason}",
                         source=str(index_dir))
    search_params = cfg.search_params or default_search_params(loaded.index, k)
    apply_search_params(loaded.index, search_params)
    prov = make_provenance("retrieve", index=str(index_dir), encoder=built, k=k,
                           factory=loaded.meta.get("factory"), search_params=search_params,
                           shard=str(shard) if shard else None)
    run: dict[str, dict[str, float]] = {}
    writer: Any = (_TrecWriter(output, cfg.tag) if fmt == "trec"
                   else RecordWriter(output, fmt=fmt, record_type=HIT, provenance=prov))
    with writer:
        for rows in read_queries(queries, batch_size=batch_size, uses_images=encoder.uses_images,
                                 shard=shard):
            vecs = encoder.encode_queries([r["query"] for r in rows], [r.get("_image") for r in rows],
                                          batch_size=batch_size)
            hits = search_vectors(loaded, vecs, k)
            out = []
            for row, ranked_hits in zip(rows, hits, strict=True):
                for rank, (docid, score) in enumerate(ranked_hits, 1):
                    out.append({"qid": row["qid"], "docid": docid, "rank": rank, "score": score})
                if judgements is not None:
                    run[row["qid"]] = {d: s for d, s in ranked_hits}
            writer.write_rows(out)
            if progress:
                progress(len(rows))
    if judgements is None:
        return None
    if shard is not None:
        judgements = {q: j for q, j in judgements.items() if q in run}
        if not judgements:
            raise InputError(f"no judged query in shard {shard}", source=str(qrels))
    return M.evaluate(run, judgements, ties=cfg.ties, gain=cfg.gain, average=cfg.average)


def read_run(path: str | Path) -> M.Run:
    """A run from a TREC run file or from hit records (JSONL/Parquet from ``irtk retrieve``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such run file", source=str(path))
    with open(p, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PAR1") or head.lstrip().startswith(b"{"):
        return M.run_from_hits(RecordReader(p, record_type=HIT).rows())
    return M.read_trec_run(p)


def evaluate_run(run_path: str | Path, qrels: str | Path, cfg: RetrieveConfig | None = None) -> dict:
    """Metrics of an existing run against qrels; no index or encoder involved."""
    cfg = cfg or RetrieveConfig()
    return M.evaluate(read_run(run_path), M.read_qrels(qrels), ties=cfg.ties, gain=cfg.gain,
                      average=cfg.average)
