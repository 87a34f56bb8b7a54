"""faiss index folders: build (whole or one shard), train-only, merge shards, load (memory-mapped).

An index folder holds::

    index.faiss       the faiss index (inner product on L2-normalised vectors = cosine)
    index.ivfdata     inverted lists of an on-disk merged IVF index (only after a merge)
    docids.parquet    label (what faiss returns), position (row in the whole input), doc_id
    encoder.json      the encoder's config: retrieve rebuilds the encoder from it
    index.json        factory, dimension, size, shard, training fingerprint
    provenance.json   who built it: irtk version, command line, encoder, time

Folders are built under a temporary name next to the target and renamed when complete, so a
failed build leaves nothing behind. Shard K/N takes every N-th document (``--shard``); IVF/PQ
shards must start from one trained index (``--train-only`` then ``--trained``) so their
inverted lists can be merged on disk with ``faiss.contrib.ondisk.merge_ondisk``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irtk.errors import InputError, UsageError
from irtk.io import RecordReader, Shard, make_provenance
from irtk.records import DOCUMENT
from irtk.retrieval.config import IndexConfig
from irtk.retrieval.encoders import compatible
from irtk.retrieval.images import decode_image
from irtk.retrieval.staging import StagedFolder

INDEX_FILE = "index.faiss"
IVFDATA_FILE = "index.ivfdata"
DOCIDS_FILE = "docids.parquet"
ENCODER_FILE = "encoder.json"
META_FILE = "index.json"
PROVENANCE_FILE = "provenance.json"
FORMAT_VERSION = 1
# faiss wants ≥ 39 training points per centroid; cap the sample for very large inputs.
DEFAULT_TRAIN_PER_LIST = 64
MAX_TRAIN = 262_144


# --- documents ------------------------------------------------------------------------------------


@dataclass
class DocBatch:
    positions: list[int]
    doc_ids: list[str]
    texts: list[str | None]
    images: list[Any]


def document_batches(source: str | Path | None, *, batch_size: int, shard: Shard | None,
                     uses_images: bool, warn: Callable[[str], None] | None = None) -> Iterator[DocBatch]:
    """Validated documents in batches, images decoded; errors name the record and field."""
    reader = RecordReader(source, record_type=DOCUMENT, batch_size=batch_size, shard=shard)
    base_dir = None if reader.path is None else reader.path.parent
    seen: dict[str, int] = {}
    local = 0
    warned = False
    for rows in reader.batches():
        batch = DocBatch([], [], [], [])
        for row in rows:
            position = local if shard is None else local * shard.count + shard.index
            local += 1
            record = position + 1

            def fail(message: str, field: str, record: int = record) -> InputError:
                return InputError(message, source=reader.name, row=record, field=field, unit="record")

            doc_id = row["doc_id"]
            if not doc_id.strip():
                raise fail("empty doc_id", "doc_id")
            if doc_id in seen:
                raise fail(f"duplicate doc_id {doc_id!r} (first at record {seen[doc_id]})", "doc_id")
            seen[doc_id] = record
            text = row.get("text")
            image = row.get("image")
            if image is not None and uses_images:
                try:
                    image = decode_image(image, base_dir=base_dir)
                except InputError as e:
                    raise fail(e.message, "image") from None
            elif image is not None:
                if not warned and warn is not None:
                    warn("this encoder reads text only: document images are ignored")
                    warned = True
                image = None
            if not text and image is None:
                raise fail("document has no text" + (" and no image" if uses_images else
                           " (and this encoder ignores images)"), "text")
            batch.positions.append(position)
            batch.doc_ids.append(doc_id)
            batch.texts.append(text)
            batch.images.append(image)
        yield batch


# --- folders --------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_docids(path: Path, labels: np.ndarray, positions: np.ndarray, doc_ids: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"label": pa.array(labels, pa.int64()),
                      "position": pa.array(positions, pa.int64()),
                      "doc_id": pa.array(doc_ids, pa.string())})
    pq.write_table(table, path, compression="zstd")


def _read_json(folder: Path, name: str) -> dict:
    path = folder / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"not an irtk index folder (no {name})", source=str(folder)) from None
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable {name}: {e}", source=str(folder)) from None


def _fingerprint(index: Any) -> str:
    import faiss

    return hashlib.sha256(faiss.serialize_index(index).tobytes()).hexdigest()[:16]


def is_ivf(index: Any) -> bool:
    import faiss

    return faiss.try_extract_index_ivf(index) is not None


def _new_index(factory: str, dim: int) -> Any:
    import faiss

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else str(e)
        raise UsageError(f"--factory {factory!r}: faiss cannot build it: {first}") from None


def _train(index: Any, vectors: np.ndarray, factory: str) -> None:
    try:
        index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    except RuntimeError as e:
        raise UsageError(f"--factory {factory!r}: training on {len(vectors)} vectors failed "
                         f"(too few for this many lists/centroids?): {str(e).strip()}") from None


def default_train_size(index: Any) -> int:
    ivf = None
    try:
        import faiss

        ivf = faiss.try_extract_index_ivf(index)
    except ImportError:
        pass
    lists = ivf.nlist if ivf is not None else 256
    return min(MAX_TRAIN, max(10_000, DEFAULT_TRAIN_PER_LIST * lists))


# --- build ----------------------------------------------------------------------------------------


def build_index(source: str | Path | None, output: str | Path, encoder: Any, *,
                factory: str = "Flat", batch_size: int = 64, shard: Shard | None = None,
                train_size: int | None = None, trained: str | Path | None = None, seed: int = 0,
                force: bool = False, progress: Callable[[int], None] | None = None,
                warn: Callable[[str], None] | None = None, argv_fields: dict | None = None) -> dict:
    """Encode documents and write an index folder; returns its ``index.json`` summary."""
    import faiss

    enc_cfg = encoder.config()
    trained_from = None
    if trained is not None:
        base = load_index(trained)
        reason = compatible(base.encoder_config, enc_cfg)
        if reason:
            raise InputError(f"trained index was built with another encoder: {reason}", source=str(trained))
        template = faiss.clone_index(base.index)
        template.reset()
        trained_from = base.meta.get("trained_fingerprint") or _fingerprint(template)
        factory = base.meta["factory"]
    else:
        template = _new_index(factory, encoder.dim)
    if template.d != encoder.dim:
        raise InputError(f"index dimension {template.d} != encoder dimension {encoder.dim}",
                         source=str(trained))
    if shard is not None and not template.is_trained:
        raise UsageError(f"--factory {factory} needs training: shards must share one trained index. "
                         "Run `irtk index DOCS --train-only -o TRAINED` once, then each shard with "
                         "--trained TRAINED")
    with StagedFolder(Path(output), force) as tmp:
        vec_file = tmp / "vectors.f32"
        positions: list[int] = []
        doc_ids: list[str] = []
        with open(vec_file, "wb") as fh:
            for batch in document_batches(source, batch_size=batch_size, shard=shard,
                                          uses_images=encoder.uses_images, warn=warn):
                vecs = encoder.encode_documents(batch.texts, batch.images, batch_size=batch_size)
                fh.write(np.ascontiguousarray(vecs, dtype=np.float32).tobytes())
                positions.extend(batch.positions)
                doc_ids.extend(batch.doc_ids)
                if progress:
                    progress(len(batch.doc_ids))
        if not doc_ids:
            raise InputError("no documents in this shard" if shard else "no documents", source=str(source))
        n = len(doc_ids)
        vectors = np.memmap(vec_file, dtype=np.float32, mode="r", shape=(n, encoder.dim))
        index = template
        if not index.is_trained:
            size = min(n, train_size or default_train_size(index))
            sample = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
            _train(index, vectors[sample], factory)
            trained_from = _fingerprint(index)
        ivf = is_ivf(index)
        pos = np.asarray(positions, dtype=np.int64)
        chunk = 65_536
        for i in range(0, n, chunk):
            block = np.ascontiguousarray(vectors[i:i + chunk])
            if ivf:  # labels are global positions, so shards' inverted lists merge unchanged
                index.add_with_ids(block, pos[i:i + chunk])
            else:
                index.add(block)
        del vectors
        vec_file.unlink()
        labels = pos if ivf else np.arange(n, dtype=np.int64)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        _write_docids(tmp / DOCIDS_FILE, labels, pos, doc_ids)
        meta = {"format": FORMAT_VERSION, "factory": factory, "dim": int(index.d),
                "count": n, "ivf": ivf, "shard": str(shard) if shard else None,
                "trained_fingerprint": trained_from, "metric": "inner_product"}
        _write_json(tmp / META_FILE, meta)
        _write_json(tmp / ENCODER_FILE, enc_cfg)
        _write_json(tmp / PROVENANCE_FILE, make_provenance(
            "index", encoder=enc_cfg, factory=factory, shard=meta["shard"], count=n, seed=seed,
            source=str(source) if source else "<stdin>", **(argv_fields or {})))
    return meta


def train_only(source: str | Path | None, output: str | Path, encoder: Any, *, factory: str,
               train_size: int | None = None, batch_size: int = 64, seed: int = 0,
               force: bool = False, warn: Callable[[str], None] | None = None) -> dict:
    """Train an empty IVF/PQ index on a seeded random sample of the documents (reservoir
    sampling: one pass, memory bounded by the sample) for shards to start from."""
    import faiss

    index = _new_index(factory, encoder.dim)
    if index.is_trained:
        raise UsageError(f"--factory {factory} needs no training: build shards directly")
    size = train_size or default_train_size(index)
    rng = np.random.default_rng(seed)
    reservoir: list[tuple[list, Any]] = []
    seen = 0
    for batch in document_batches(source, batch_size=batch_size, shard=None,
                                  uses_images=encoder.uses_images, warn=warn):
        for j in range(len(batch.doc_ids)):
            item = (batch.texts[j], batch.images[j])
            if len(reservoir) < size:
                reservoir.append(item)
            else:
                r = int(rng.integers(0, seen + 1))
                if r < size:
                    reservoir[r] = item
            seen += 1
    vecs = encoder.encode_documents([t for t, _ in reservoir], [im for _, im in reservoir],
                                    batch_size=batch_size)
    _train(index, vecs, factory)
    with StagedFolder(Path(output), force) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        _write_docids(tmp / DOCIDS_FILE, np.zeros(0, np.int64), np.zeros(0, np.int64), [])
        meta = {"format": FORMAT_VERSION, "factory": factory, "dim": int(index.d), "count": 0,
                "ivf": is_ivf(index), "shard": None, "trained_fingerprint": _fingerprint(index),
                "trained_on": len(vecs), "metric": "inner_product"}
        _write_json(tmp / META_FILE, meta)
        _write_json(tmp / ENCODER_FILE, encoder.config())
        _write_json(tmp / PROVENANCE_FILE, make_provenance(
            "index", encoder=encoder.config(), factory=factory, train_only=True, seed=seed,
            trained_on=len(vecs)))
    return meta


def index_documents(source: str | Path | None, output: str | Path, cfg: IndexConfig, *,
                    only_train: bool = False, shard: Shard | None = None,
                    trained: str | Path | None = None, force: bool = False,
                    progress: Callable[[int], None] | None = None,
                    warn: Callable[[str], None] | None = None) -> dict:
    """``irtk index`` as one call: make ``cfg``'s encoder, then build the index folder (or, with
    ``only_train``, an empty trained IVF/PQ index for shards to start from)."""
    from irtk.retrieval.encoders import get_encoder

    encoder = get_encoder(cfg.encoder, cfg.model, device=cfg.device)
    if only_train:
        return train_only(source, output, encoder, factory=cfg.factory, train_size=cfg.train_size,
                          batch_size=cfg.batch_size, seed=cfg.seed, force=force, warn=warn)
    return build_index(source, output, encoder, factory=cfg.factory, batch_size=cfg.batch_size,
                       shard=shard, train_size=cfg.train_size, trained=trained, seed=cfg.seed,
                       force=force, progress=progress, warn=warn)


# --- merge ----------------------------------------------------------------------------------------


def merge_indexes(shards: list[str | Path], output: str | Path, *, force: bool = False) -> dict:
    """Combine shard folders into one index. IVF shards' inverted lists are merged on disk
    (``merge_ondisk``: the result's lists stay in ``index.ivfdata`` and are memory-mapped);
    other indexes are rebuilt from their stored vectors in input order, so a merged Flat index
    equals a single build."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq
    from faiss.contrib.ondisk import merge_ondisk

    if len(shards) < 2:
        raise UsageError("--merge needs at least two shard folders")
    folders = [Path(s) for s in shards]
    metas = [_read_json(f, META_FILE) for f in folders]
    encs = [_read_json(f, ENCODER_FILE) for f in folders]
    for f, meta, enc in zip(folders[1:], metas[1:], encs[1:], strict=True):
        reason = compatible(encs[0], enc)
        if reason:
            raise InputError(f"built with another encoder than {folders[0]}: {reason}", source=str(f))
        if meta["factory"] != metas[0]["factory"]:
            raise InputError(f"factory {meta['factory']!r} != {metas[0]['factory']!r} of {folders[0]}",
                             source=str(f))
        if meta.get("trained_fingerprint") != metas[0].get("trained_fingerprint"):
            raise InputError(f"trained separately from {folders[0]}: build shards with --trained "
                             "from one `--train-only` index", source=str(f))
    tables = [pq.read_table(f / DOCIDS_FILE) for f in folders]
    table = pa.concat_tables(tables)
    ids = table.column("doc_id").to_pylist()
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(d for d in ids if d in seen or seen.add(d))
        raise InputError(f"doc_id {dup!r} appears in more than one shard", source=str(output))
    positions = table.column("position").to_numpy()
    if len(np.unique(positions)) != len(positions):
        raise InputError("shards overlap (the same input position twice): were they built "
                         "with different --shard counts, or is a shard listed twice?", source=str(output))
    order = np.argsort(positions, kind="stable")
    meta = {**metas[0], "count": int(len(ids)), "shard": None,
            "merged_from": [str(f) for f in folders]}
    with StagedFolder(Path(output), force) as tmp:
        if metas[0]["ivf"]:
            trained = faiss.read_index(str(folders[0] / INDEX_FILE))
            trained.reset()
            merge_ondisk(trained, [str(f / INDEX_FILE) for f in folders], str(tmp / IVFDATA_FILE))
            faiss.write_index(trained, str(tmp / INDEX_FILE))
            labels = positions[order]
        else:
            vectors = np.concatenate([_all_vectors(f) for f in folders])[order]
            merged = faiss.clone_index(faiss.read_index(str(folders[0] / INDEX_FILE)))
            merged.reset()
            merged.add(vectors)
            faiss.write_index(merged, str(tmp / INDEX_FILE))
            labels = np.arange(len(ids), dtype=np.int64)
        _write_docids(tmp / DOCIDS_FILE, labels, positions[order], [ids[i] for i in order])
        _write_json(tmp / META_FILE, meta)
        _write_json(tmp / ENCODER_FILE, encs[0])
        _write_json(tmp / PROVENANCE_FILE, make_provenance(
            "index", merge=[str(f) for f in folders], encoder=encs[0], factory=meta["factory"],
            count=meta["count"]))
    return meta


def _all_vectors(folder: Path) -> np.ndarray:
    import faiss

    index = faiss.read_index(str(folder / INDEX_FILE))
    try:
        return index.reconstruct_n(0, index.ntotal)
    except RuntimeError as e:
        raise InputError(f"cannot read vectors back from this index type for merging: {e}",
                         source=str(folder)) from None


# --- load -----------------------------------------------------------------------------------------


@dataclass
class LoadedIndex:
    folder: Path
    index: Any
    meta: dict
    encoder_config: dict
    labels: np.ndarray  # sorted faiss labels
    doc_ids: np.ndarray  # doc_id per sorted label
    mmapped: bool

    def doc_id(self, label: int) -> str:
        i = int(np.searchsorted(self.labels, label))
        if i >= len(self.labels) or self.labels[i] != label:
            raise InputError(f"faiss returned label {label}, missing from {DOCIDS_FILE}",
                             source=str(self.folder))
        return str(self.doc_ids[i])


def available_memory(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """Bytes of memory available to a new process: Linux's MemAvailable (free plus reclaimable
    cache), else free pages from ``os.sysconf``; None where neither exists. Read without psutil,
    which a plain install does not have."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def load_index(folder: str | Path, *, mmap: bool | None = None) -> LoadedIndex:
    """Open an index folder. ``mmap=None`` memory-maps when the index file is over half the
    available memory; on-disk IVF lists (after a merge) are always mapped, never read."""
    import faiss
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such index folder", source=str(folder))
    meta = _read_json(folder, META_FILE)
    enc = _read_json(folder, ENCODER_FILE)
    if meta.get("format") != FORMAT_VERSION:
        raise InputError(f"index format {meta.get('format')!r} is not {FORMAT_VERSION}", source=str(folder))
    path = folder / INDEX_FILE
    if not path.is_file():
        raise InputError(f"not an irtk index folder (no {INDEX_FILE})", source=str(folder))
    if mmap is None:
        avail = available_memory()
        mmap = avail is not None and path.stat().st_size > avail // 2
    flags = 0
    if (folder / IVFDATA_FILE).exists():
        flags |= faiss.IO_FLAG_ONDISK_SAME_DIR
    if mmap:
        flags |= faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as e:
        raise InputError(f"unreadable faiss index: {str(e).strip().splitlines()[-1]}", source=str(path)) from None
    if index.d != meta.get("dim") or index.d != enc.get("dim"):
        raise InputError(f"index dimension {index.d} disagrees with index.json/encoder.json "
                         f"({meta.get('dim')}/{enc.get('dim')})", source=str(folder))
    table = pq.read_table(folder / DOCIDS_FILE)
    labels = table.column("label").to_numpy()
    doc_ids = np.asarray(table.column("doc_id").to_pylist(), dtype=object)
    if len(labels) != index.ntotal:
        raise InputError(f"{DOCIDS_FILE} has {len(labels)} rows for {index.ntotal} vectors",
                         source=str(folder))
    order = np.argsort(labels, kind="stable")
    return LoadedIndex(folder, index, meta, enc, labels[order], doc_ids[order], bool(mmap))
