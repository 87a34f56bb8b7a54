"""What every encoder shares: the checkpoint layout, batching to normalised numpy vectors, device
placement and the learned logit scale."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irtk.errors import ModelError

CHECKPOINT_CONFIG = "encoder.json"
WEIGHTS = "model.safetensors"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# CLIP's cap on the logit scale (τ ≥ 0.01), applied to the parameter after each optimiser step.
MAX_LOG_SCALE = math.log(100.0)

# Small from-scratch open_clip towers for tests and the CPU testbed (16 px testbed images
# upscaled to 32 px give 16 patches of 8 px, as ViT-B/32 gives 49 patches of a 224 px image).
TINY_VISION = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16,
               "mlp_ratio": 2.0}
TINY_TEXT = {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}


def checkpoint_config(model: str | None) -> dict | None:
    """The encoder config inside a checkpoint folder written by ``save``, if ``model`` is one."""
    if not model:
        return None
    path = Path(model) / CHECKPOINT_CONFIG
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable encoder config: {e}") from None


def clip_spec(spec: str) -> tuple[str, str | None]:
    """``ARCH/TAG`` -> (arch, tag); ``hf-hub:org/name`` stays whole."""
    if spec.startswith("hf-hub:"):
        return spec, None
    arch, _, tag = spec.partition("/")
    return arch, tag or None


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class TorchEncoder:
    """Shared batching, device placement and checkpoint plumbing of the torch encoders."""

    name = "torch"
    uses_images = True

    def __init__(self, device: str | None = None) -> None:
        import os

        from irtk.device import pick_device

        if os.environ.get("TRANSFORMERS_VERBOSITY") == "error":  # the CLI without -v
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        self.device = pick_device(device)

    # subclasses: query_tensor, document_tensor, image_only_tensor, module, config, dim

    def _batched(self, fn: Any, texts: Sequence[str | None], images: Sequence[Any] | None,
                 batch_size: int) -> np.ndarray:
        import torch

        images = list(images) if images is not None else [None] * len(texts)
        if len(images) != len(texts):
            raise ValueError("texts and images differ in length")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.module.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                vec = fn(list(texts[i:i + batch_size]), images[i:i + batch_size])
                out.append(vec.float().cpu().numpy())
        return normalise(np.concatenate(out))

    def encode_queries(self, texts: Sequence[str | None], images: Sequence[Any] | None = None,
                       batch_size: int = 64) -> np.ndarray:
        return self._batched(self.query_tensor, texts, images, batch_size)

    def encode_documents(self, texts: Sequence[str | None], images: Sequence[Any] | None = None,
                         batch_size: int = 64) -> np.ndarray:
        return self._batched(self.document_tensor, texts, images, batch_size)

    def pixels(self, images: Sequence[Any]) -> Any:
        import torch

        return torch.stack([self.preprocess(im) for im in images]).to(self.device)

    def scale(self) -> Any:
        """The learned logit scale, exp of the stored log.

        Not clamped here: a scale that starts at 100 would be clamped from the first step
        (exp(ln 100) is 100.0000076 in float32) and get no gradient. ``clamp_scale`` caps the
        parameter after each optimiser step instead, as CLIP's training does."""
        return self.log_scale.exp()

    def clamp_scale(self) -> None:
        """Cap the logit scale at 100 (τ ≥ 0.01) in place; call after each optimiser step."""
        import torch

        with torch.no_grad():
            self.log_scale.clamp_(max=MAX_LOG_SCALE)

    def new_parameters(self) -> set[int]:
        """ids of parameters that start from random weights (trained at ``--lr-new``)."""
        return set()

