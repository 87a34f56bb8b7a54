"""Index folders: round trip, sharded build + merge, on-disk IVF merge, mmap, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irtk.errors import InputError, UsageError
from irtk.io import Shard
from irtk.retrieval.index import build_index, load_index, merge_indexes, train_only
from irtk.retrieval.search import retrieve, search_vectors

from .conftest import png_b64, write_jsonl


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _search_all(folder, enc, corpus, k=5, mmap=False):
    rows = _rows(corpus)
    loaded = load_index(folder, mmap=mmap)
    vecs = enc.encode_queries([r["text"] for r in rows])
    return loaded, search_vectors(loaded, vecs, k)


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


def test_round_trip_returns_each_document_for_its_own_text(tmp_path, corpus, clip_encoder):
    out = tmp_path / "idx"
    meta = build_index(corpus, out, clip_encoder)
    assert meta["count"] == 40 and meta["factory"] == "Flat"
    assert sorted(p.name for p in out.iterdir()) == [
        "docids.parquet", "encoder.json", "index.faiss", "index.json", "provenance.json"]
    # Documents with images are text+image sums; query by the text-only documents' own text.
    rows = _rows(corpus)
    text_only = [r for r in rows if "image" not in r]
    loaded = load_index(out)
    hits = search_vectors(loaded, clip_encoder.encode_queries([r["text"] for r in text_only]), 3)
    assert [h[0][0] for h in hits] == [r["doc_id"] for r in text_only]
    assert all(h[0][1] == pytest.approx(1.0, abs=1e-5) for h in hits)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stage"] == "index" and prov["count"] == 40


def test_image_queries_find_their_image_documents(tmp_path, corpus, clip_encoder):
    out = tmp_path / "idx"
    build_index(corpus, out, clip_encoder)
    rows = [r for r in _rows(corpus) if "image" in r]
    from irtk.retrieval.images import decode_image

    vecs = clip_encoder.encode_queries([r["text"] for r in rows], [decode_image(r["image"]) for r in rows])
    hits = search_vectors(load_index(out), vecs, 1)
    assert [h[0][0] for h in hits] == [r["doc_id"] for r in rows]


def test_sharded_build_and_merge_equals_single_build_on_flat(tmp_path, corpus, clip_encoder):
    build_index(corpus, tmp_path / "whole", clip_encoder)
    for k in range(3):
        build_index(corpus, tmp_path / f"s{k}", clip_encoder, shard=Shard(k, 3))
    merge_indexes([tmp_path / f"s{k}" for k in (2, 0, 1)], tmp_path / "merged")
    whole = load_index(tmp_path / "whole")
    merged = load_index(tmp_path / "merged")
    assert merged.meta["count"] == 40
    assert list(merged.doc_ids) == list(whole.doc_ids)
    # Same vectors in the same order (up to float rounding: shards batch documents differently).
    assert np.allclose(whole.index.reconstruct_n(0, 40), merged.index.reconstruct_n(0, 40), atol=1e-6)
    _, a = _search_all(tmp_path / "whole", clip_encoder, corpus)
    _, b = _search_all(tmp_path / "merged", clip_encoder, corpus)
    assert [[d for d, _ in h] for h in a] == [[d for d, _ in h] for h in b]
    assert np.allclose([[s for _, s in h] for h in a], [[s for _, s in h] for h in b], atol=1e-5)


def test_ivf_shards_merge_on_disk(tmp_path, corpus, clip_encoder):
    factory = "IVF4,Flat"
    with pytest.raises(UsageError, match="--train-only"):
        build_index(corpus, tmp_path / "bad", clip_encoder, factory=factory, shard=Shard(0, 2))
    assert not (tmp_path / "bad").exists()
    train_only(corpus, tmp_path / "trained", clip_encoder, factory=factory)
    for k in range(2):
        build_index(corpus, tmp_path / f"s{k}", clip_encoder, shard=Shard(k, 2), trained=tmp_path / "trained")
    merge_indexes([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert (tmp_path / "merged" / "index.ivfdata").is_file()
    loaded = load_index(tmp_path / "merged")
    assert loaded.index.ntotal == 40
    from irtk.retrieval.search import default_search_params

    assert default_search_params(loaded.index, 10) == "nprobe=4"  # min(nlist, 32)
    loaded.index.nprobe = 4  # every list: exact search
    flat = build_index(corpus, tmp_path / "flat", clip_encoder)
    assert flat["count"] == 40
    rows = _rows(corpus)
    vecs = clip_encoder.encode_queries([r["text"] for r in rows])
    got = search_vectors(loaded, vecs, 5)
    want = search_vectors(load_index(tmp_path / "flat"), vecs, 5)
    assert [[d for d, _ in h] for h in got] == [[d for d, _ in h] for h in want]


def test_ivf_shards_trained_separately_refuse_to_merge(tmp_path, corpus, clip_encoder):
    for k in range(2):
        train_only(corpus, tmp_path / f"t{k}", clip_encoder, factory="IVF2,Flat", seed=k,
                   train_size=20 + 10 * k)
        build_index(corpus, tmp_path / f"s{k}", clip_encoder, shard=Shard(k, 2), trained=tmp_path / f"t{k}")
    with pytest.raises(InputError, match="trained separately"):
        merge_indexes([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_overlapping_or_incompatible_shards(tmp_path, corpus, clip_encoder, other_clip):
    from irtk.retrieval.encoders import get_encoder

    build_index(corpus, tmp_path / "s0", clip_encoder, shard=Shard(0, 2))
    with pytest.raises(InputError, match="more than one shard"):
        merge_indexes([tmp_path / "s0", tmp_path / "s0"], tmp_path / "m")
    other = get_encoder("clip", other_clip, device="cpu")
    build_index(corpus, tmp_path / "s1", other, shard=Shard(1, 2))
    with pytest.raises(InputError, match="another encoder"):
        merge_indexes([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_available_memory_without_psutil(tmp_path, monkeypatch):
    from irtk.retrieval import index as lib

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    2048 kB\n")
    assert lib.available_memory(meminfo) == 2048 * 1024
    # No MemAvailable line (not Linux): free pages from os.sysconf, still no psutil.
    monkeypatch.setitem(__import__("sys").modules, "psutil", None)  # import psutil would fail
    assert lib.available_memory(tmp_path / "absent") > 0
    assert lib.available_memory() > 0  # this machine's own /proc/meminfo


def test_large_index_is_memory_mapped_automatically(tmp_path, corpus, clip_encoder, monkeypatch):
    from irtk.retrieval import index as lib

    build_index(corpus, tmp_path / "idx", clip_encoder)
    monkeypatch.setitem(__import__("sys").modules, "psutil", None)  # a plain install has no psutil
    size = (tmp_path / "idx" / "index.faiss").stat().st_size
    monkeypatch.setattr(lib, "available_memory", lambda: 2 * size - 2)  # index > half of it
    assert load_index(tmp_path / "idx").mmapped
    monkeypatch.setattr(lib, "available_memory", lambda: 2 * size + 2)
    assert not load_index(tmp_path / "idx").mmapped


def test_mmap_load_gives_the_same_results(tmp_path, corpus, clip_encoder):
    build_index(corpus, tmp_path / "idx", clip_encoder, factory="HNSW16")
    loaded, a = _search_all(tmp_path / "idx", clip_encoder, corpus, mmap=False)
    mapped, b = _search_all(tmp_path / "idx", clip_encoder, corpus, mmap=True)
    from irtk.retrieval.search import default_search_params

    assert default_search_params(mapped.index, 100) == "efSearch=100"
    assert mapped.mmapped and not loaded.mmapped
    assert a == b


def test_ties_are_broken_by_docid(tmp_path, clip_encoder):
    # Identical texts give identical vectors: every score ties, so docids decide the order.
    rows = [{"doc_id": f"x{i}", "text": "the same words"} for i in (5, 1, 9, 3, 7, 2, 8, 0, 6, 4)]
    rows += [{"doc_id": f"other{i}", "text": f"something else {i}"} for i in range(30)]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    build_index(path, tmp_path / "idx", clip_encoder)
    hits = search_vectors(load_index(tmp_path / "idx"), clip_encoder.encode_queries(["the same words"]), 4)
    assert [d for d, _ in hits[0]] == ["x0", "x1", "x2", "x3"]


def test_retrieve_refuses_an_index_from_another_encoder(tmp_path, corpus, clip_encoder, other_clip):
    from irtk.retrieval.encoders import get_encoder

    build_index(corpus, tmp_path / "idx", clip_encoder)
    queries = write_jsonl(tmp_path / "q.jsonl", [{"qid": "1", "query": "bell foundry"}])
    with pytest.raises(InputError, match="incompatible encoder"):
        retrieve(queries, tmp_path / "idx", encoder=get_encoder("clip", other_clip, device="cpu"),
                 output=tmp_path / "hits.jsonl")
    assert not (tmp_path / "hits.jsonl").exists()


@pytest.mark.parametrize("rows, message", [
    ([{"text": "no id"}], "docs.jsonl: line 1: field 'doc_id': missing required field"),
    ([{"doc_id": "a", "text": "x"}, {"doc_id": "a", "text": "y"}], "record 2: field 'doc_id': duplicate doc_id 'a'"),
    ([{"doc_id": 7, "text": "x"}], "field 'doc_id': expected string, got integer"),
    ([{"doc_id": "a", "text": ["x"]}], "field 'text': expected string, got array"),
    ([{"doc_id": "a"}], "record 1: field 'text': document has no text and no image"),
    ([{"doc_id": "a", "text": "x", "image": "bm90IGFuIGltYWdl"}], "record 1: field 'image': base64 image is not a readable image"),
    ([{"doc_id": "a", "text": "x", "image": "missing/picture.png"}], "field 'image': image file not found"),
    ([{"doc_id": "a", "text": "x", "image": "%%% not base64 %%%"}], "field 'image': not an existing file path and not valid base64"),
])
def test_bad_documents_leave_no_index(tmp_path, clip_encoder, rows, message):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"doc_id": "ok", "text": "fine"}] * 0 + rows)
    with pytest.raises(InputError, match=message):
        build_index(path, tmp_path / "idx", clip_encoder)
    assert not (tmp_path / "idx").exists()
    assert _leftovers(tmp_path) == []


def test_unreadable_image_bytes_and_paths(tmp_path, clip_encoder):
    (tmp_path / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    good = tmp_path / "good.png"
    from irtk.retrieval.images import decode_image

    decode_image(png_b64(3)).save(good)
    path = write_jsonl(tmp_path / "docs.jsonl", [
        {"doc_id": "a", "text": "x", "image": "good.png"},  # relative to the documents' folder
        {"doc_id": "b", "text": "y", "image": "pic.png"},
    ])
    with pytest.raises(InputError, match="record 2: field 'image': file .*pic.png is not a readable image"):
        build_index(path, tmp_path / "idx", clip_encoder)
    assert not (tmp_path / "idx").exists()


def test_empty_and_truncated_input(tmp_path, clip_encoder):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty input"):
        build_index(empty, tmp_path / "idx", clip_encoder)
    truncated = tmp_path / "trunc.jsonl"
    truncated.write_text('{"doc_id": "a", "text": "x"}\n{"doc_id": "b", "te')
    with pytest.raises(InputError, match="line 2: (truncated|invalid) JSON"):
        build_index(truncated, tmp_path / "idx", clip_encoder)
    assert not (tmp_path / "idx").exists() and _leftovers(tmp_path) == []


def test_existing_folder_needs_force(tmp_path, corpus, clip_encoder):
    out = tmp_path / "idx"
    build_index(corpus, out, clip_encoder)
    with pytest.raises(UsageError, match="--force"):
        build_index(corpus, out, clip_encoder)
    build_index(corpus, out, clip_encoder, factory="HNSW8", force=True)
    assert load_index(out).meta["factory"] == "HNSW8"


def test_bad_factory_and_broken_folders(tmp_path, corpus, clip_encoder):
    with pytest.raises(UsageError, match="--factory 'Bogus12'"):
        build_index(corpus, tmp_path / "idx", clip_encoder, factory="Bogus12")
    with pytest.raises(InputError, match="no such index folder"):
        load_index(tmp_path / "nothing")
    build_index(corpus, tmp_path / "idx", clip_encoder)
    (tmp_path / "idx" / "encoder.json").unlink()
    with pytest.raises(InputError, match="no encoder.json"):
        load_index(tmp_path / "idx")
