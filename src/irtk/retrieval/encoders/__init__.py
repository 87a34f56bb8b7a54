"""Encoders behind one interface, chosen by name from ``ENCODERS``: ``text``, ``clip``, ``ciea``,
or ``module:attr`` (a factory of your own called with ``model=`` and ``device=``).

An encoder turns queries and documents (text, optional PIL image) into L2-normalised float32
vectors: ``encode_queries(texts, images)`` / ``encode_documents(texts, images)``. Its ``config()``
is a small JSON-able dict saved with every index, so ``encoder_from_config`` rebuilds the same
encoder at search time, and an index is refused by an encoder with a different config.

The built-ins (``text``, ``clip``, ``ciea`` modules here, on ``base.TorchEncoder``) also expose
differentiable ``query_tensor`` / ``document_tensor`` / ``image_only_tensor`` and a learned
``logit_scale`` for ``train.train``, and ``save(folder)`` writes a checkpoint that
``--model FOLDER`` loads back. This module imports none of them (nor torch) until one is used.
"""

from __future__ import annotations

from typing import Any

from irtk.errors import ModelError, UsageError
from irtk.registry import Registry
from irtk.retrieval.encoders.base import checkpoint_config

ENCODERS = Registry("encoder", "--encoder", {
    "text": "irtk.retrieval.encoders.text:TextEncoder.from_name",
    "clip": "irtk.retrieval.encoders.clip:ClipEncoder.from_name",
    "ciea": "irtk.retrieval.encoders.ciea:CieaEncoder.from_name",
})


def get_encoder(name: str = "text", model: str | None = None, *, device: str | None = None,
                **options: Any) -> Any:
    """An encoder by registry name (``text``, ``clip``, ``ciea``) or ``module:attr`` factory.

    ``model`` is, for ``text``, a registry name/path/hub id of a sentence-transformers model
    (default ``minilm-l6``); for ``clip``, ``tiny`` (random weights), an open_clip
    ``ARCH/TAG`` (``ViT-B-32/openai``) or a checkpoint folder; for ``ciea``, a checkpoint folder
    written by ``irtk train-retriever``.
    """
    saved = checkpoint_config(model)
    if name in ENCODERS and saved is not None and saved.get("encoder") != name:
        raise UsageError(f"--model {model} is a {saved.get('encoder')!r} checkpoint, not {name!r}")
    return ENCODERS.create(name, model=model, device=device, **options)


def encoder_from_config(config: dict, *, device: str | None = None) -> Any:
    """Rebuild the encoder an index was built with, from its saved config."""
    name = config.get("encoder")
    if not isinstance(name, str):
        raise ModelError("encoder config has no 'encoder' name")
    if name not in ENCODERS:
        return get_encoder(name, config.get("model"), device=device, **config.get("options", {}))
    if config.get("checkpoint"):
        return get_encoder(name, config["checkpoint"], device=device)
    if config.get("random_init"):
        raise ModelError(f"this index was built by a randomly initialised {name} encoder that was "
                         "never saved; its vectors cannot be reproduced")
    if name == "ciea":
        raise ModelError("a ciea encoder config needs a checkpoint folder")
    return get_encoder(name, config["model"], device=device)


def compatible(built: dict, wanted: dict) -> str | None:
    """Why an index built with encoder config ``built`` cannot be searched with ``wanted``."""
    keys = ("encoder", "model", "checkpoint", "dim")
    diffs = [k for k in keys if built.get(k) != wanted.get(k)]
    if not diffs:
        return None
    return ", ".join(f"{k} {built.get(k)!r} != {wanted.get(k)!r}" for k in diffs)
