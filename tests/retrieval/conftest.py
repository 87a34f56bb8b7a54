"""Retrieval fixtures: tiny from-scratch encoders saved as real checkpoints, small corpora."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest


def png_b64(seed: int, size: int = 8) -> str:
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TOPICS = ["granite quarry", "tidal estuary", "violin workshop", "beet harvest", "glacier survey",
          "tram depot", "salt marsh", "bell foundry", "apiary inspection", "lighthouse repair",
          "orchard pruning", "paper mill", "ferry timetable", "kiln firing", "moss census",
          "clock tower", "dune planting", "rope walk", "herring smokehouse", "copper mine"]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """40 documents, half with an image, with distinct texts."""
    out = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    rows = []
    for i in range(40):
        row = {"doc_id": f"d{i:02d}", "text": f"Report {i} on the {TOPICS[i % 20]} near town {i // 20}."}
        if i % 2:
            row["image"] = png_b64(i)
        rows.append(row)
    return write_jsonl(out, rows)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny random open_clip model saved as a real ``clip`` checkpoint folder."""
    from irtk.retrieval.encoders.clip import ClipEncoder

    folder = tmp_path_factory.mktemp("tiny-clip")
    ClipEncoder.create("tiny", seed=0, device="cpu").save(folder)
    return str(folder)


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory) -> str:
    """A second tiny CLIP with other weights (an incompatible encoder)."""
    from irtk.retrieval.encoders.clip import ClipEncoder

    folder = tmp_path_factory.mktemp("other-clip")
    ClipEncoder.create("tiny", seed=1, device="cpu", embed_dim=32).save(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_ciea(tmp_path_factory) -> str:
    """A tiny random CIEA (2-layer BERT, 2-layer ViT) saved as a ``ciea`` checkpoint folder."""
    from irtk.retrieval.encoders.ciea import CieaEncoder

    folder = tmp_path_factory.mktemp("tiny-ciea")
    CieaEncoder.create("tiny", "tiny", seed=0, device="cpu").save(folder)
    return str(folder)


@pytest.fixture(scope="session")
def clip_encoder(tiny_clip):
    from irtk.retrieval.encoders import get_encoder

    return get_encoder("clip", tiny_clip, device="cpu")
