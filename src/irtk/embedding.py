"""Sentence embeddings (sentence-transformers), shared by the simulator, rewards, graph merging
and text retrieval. Models resolve through the registry; the default is ``minilm-l6``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from irtk.errors import ModelError
from irtk.models import DEFAULT_EMBEDDER


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = DEFAULT_EMBEDDER, device: str | None = None) -> Any:
    """A ``SentenceTransformer`` for a registry name, local path or hub id (cached per process)."""
    from sentence_transformers import SentenceTransformer

    from irtk.device import pick_device
    from irtk.models import resolve

    path = resolve(name)
    try:
        return SentenceTransformer(path, device=pick_device(device))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load embedder {name!r} from {path}: {e}") from None


def embed(texts: Sequence[str], model: str | Any = DEFAULT_EMBEDDER, batch_size: int = 64) -> Any:
    """L2-normalised float32 embeddings, one row per text (cosine similarity = dot product)."""
    import numpy as np

    encoder = load_embedder(model) if isinstance(model, str) else model
    if not texts:
        dim = encoder.get_sentence_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    vectors = encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype(np.float32, copy=False)
