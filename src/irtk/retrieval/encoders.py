"""Encoders behind one interface, chosen by name: ``text``, ``clip``, ``ciea`` or ``module:attr``.

An encoder turns queries and documents (text, optional PIL image) into L2-normalised float32
vectors: ``encode_queries(texts, images)`` / ``encode_documents(texts, images)``. Its ``config()``
is a small JSON-able dict saved with every index, so ``encoder_from_config`` rebuilds the same
encoder at search time, and an index is refused by an encoder with a different config.

The torch encoders (all three built-ins) also expose differentiable ``query_tensor`` /
``document_tensor`` / ``image_only_tensor`` and a learned ``logit_scale`` for ``train.train``,
and ``save(folder)`` writes a checkpoint that ``--model FOLDER`` loads back.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irtk.errors import ModelError, UsageError

ENCODERS = ("text", "clip", "ciea")
CHECKPOINT_CONFIG = "encoder.json"
WEIGHTS = "model.safetensors"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Small from-scratch open_clip towers for tests and the CPU testbed (8x8 digits upscaled to 32 px
# give 16 patches of 8 px, as ViT-B/32 gives 49 patches of a 224 px image).
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


def get_encoder(name: str = "text", model: str | None = None, *, device: str | None = None,
                **options: Any) -> Any:
    """An encoder by registry name (``text``, ``clip``, ``ciea``) or ``module:attr`` factory.

    ``model`` is, for ``text``, a registry name/path/hub id of a sentence-transformers model
    (default ``minilm-l6``); for ``clip``, ``tiny`` (random weights), an open_clip
    ``ARCH/TAG`` (``ViT-B-32/openai``) or a checkpoint folder; for ``ciea``, a checkpoint folder
    written by ``irtk train-retriever``.
    """
    if ":" in name and name not in ENCODERS:
        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"--encoder {name}: cannot import {module}:{attr}: {e}") from None
        return factory(model=model, device=device, **options)
    saved = checkpoint_config(model)
    if saved is not None and saved.get("encoder") != name:
        raise UsageError(f"--model {model} is a {saved.get('encoder')!r} checkpoint, not {name!r}")
    if name == "text":
        return TextEncoder(model or "minilm-l6", device=device, **options)
    if name == "clip":
        if saved is not None:
            return ClipEncoder.load(model, device=device)
        return ClipEncoder.create(model or "tiny", device=device, **options)
    if name == "ciea":
        from irtk.retrieval.ciea import CieaEncoder

        if saved is None:
            raise UsageError("--encoder ciea needs --model CHECKPOINT, a folder written by "
                             "`irtk train-retriever --encoder ciea`")
        return CieaEncoder.load(model, device=device)
    raise UsageError(f"unknown encoder {name!r}: use one of {', '.join(ENCODERS)} or module:attr")


def encoder_from_config(config: dict, *, device: str | None = None) -> Any:
    """Rebuild the encoder an index was built with, from its saved config."""
    name = config.get("encoder")
    if not isinstance(name, str):
        raise ModelError("encoder config has no 'encoder' name")
    if name == "text":
        if config.get("random_init"):
            raise ModelError("this index was built by a randomly initialised text encoder that "
                             "was never saved; its vectors cannot be reproduced")
        return TextEncoder(config.get("checkpoint") or config["model"], device=device)
    if name in ("clip", "ciea"):
        if config.get("checkpoint"):
            return get_encoder(name, config["checkpoint"], device=device)
        if name == "clip":
            if config.get("random_init"):
                raise ModelError("this index was built by a randomly initialised CLIP that was "
                                 "never saved; its vectors cannot be reproduced")
            return ClipEncoder.create(config["model"], device=device)
        raise ModelError("a ciea encoder config needs a checkpoint folder")
    return get_encoder(name, config.get("model"), device=device, **config.get("options", {}))


def compatible(built: dict, wanted: dict) -> str | None:
    """Why an index built with encoder config ``built`` cannot be searched with ``wanted``."""
    keys = ("encoder", "model", "checkpoint", "dim")
    diffs = [k for k in keys if built.get(k) != wanted.get(k)]
    if not diffs:
        return None
    return ", ".join(f"{k} {built.get(k)!r} != {wanted.get(k)!r}" for k in diffs)


def _normalise_np(x: np.ndarray) -> np.ndarray:
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
        return _normalise_np(np.concatenate(out))

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
        """The learned logit scale (exp of the stored log), clamped at 100 as CLIP does."""
        import torch

        return torch.clamp(self.log_scale.exp(), max=100.0)

    def new_parameters(self) -> set[int]:
        """ids of parameters that start from random weights (trained at ``--lr-new``)."""
        return set()


class TextEncoder(TorchEncoder):
    """Any sentence-transformers model; documents use their text (images are ignored)."""

    name = "text"
    uses_images = False

    def __init__(self, model: str = "minilm-l6", device: str | None = None,
                 logit_scale: float = 20.0) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from irtk.models import resolve

        super().__init__(device)
        saved = checkpoint_config(model)
        self.model_name = str(Path(model).resolve()) if saved else model
        self.random_init = model == "tiny"
        if self.random_init:
            self.st = _tiny_sentence_transformer(self.device)
        else:
            # A private copy, not irtk.embedding's shared cache: training changes the weights.
            path = resolve(self.model_name)
            try:
                self.st = SentenceTransformer(path, device=self.device)
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot load text encoder {model!r} from {path}: {e}") from None
        self.module = self.st
        init = saved.get("logit_scale", logit_scale) if saved else logit_scale
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(init), device=self.device))
        get_dim = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.checkpoint = saved is not None

    def config(self) -> dict:
        out = {"encoder": "text", "model": self.model_name, "dim": self.dim}
        if self.checkpoint:
            out["checkpoint"] = self.model_name
        if self.random_init:
            out["random_init"] = True
        return out

    def new_parameters(self) -> set[int]:
        if self.random_init:
            return {id(p) for p in self.parameters()}
        return {id(self.log_scale)}

    def _embed(self, texts: Sequence[str | None]) -> Any:
        import torch.nn.functional as F

        prep = getattr(self.st, "preprocess", None) or self.st.tokenize
        features = prep([t or "" for t in texts])
        features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
        return F.normalize(self.st(features)["sentence_embedding"], dim=-1)

    def query_tensor(self, texts: Sequence[str | None], images: Sequence[Any] | None = None) -> Any:
        return self._embed(texts)

    def document_tensor(self, texts: Sequence[str | None], images: Sequence[Any] | None = None) -> Any:
        return self._embed(texts)

    def image_only_tensor(self, images: Sequence[Any], captions: Sequence[str] | None = None) -> Any:
        return None

    def parameters(self) -> list:
        return [*self.st.parameters(), self.log_scale]

    def save(self, folder: str | Path, provenance: dict | None = None) -> None:
        folder = Path(folder)
        self.st.save(str(folder))
        cfg = {"encoder": "text", "logit_scale": float(self.scale().item())}
        (folder / CHECKPOINT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")


def _tiny_sentence_transformer(device: str) -> Any:
    """A 2-layer, 64-wide random BERT with MiniLM's tokenizer and mean pooling (tests, testbed)."""
    import tempfile

    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 5.2
        from sentence_transformers import models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from irtk.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)
    with tempfile.TemporaryDirectory() as tmp:  # sentence-transformers builds modules from a folder
        BertModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        word = models.Transformer(tmp, max_seq_length=128)
        return SentenceTransformer(modules=[word, models.Pooling(64, pooling_mode="mean")], device=device)


def _clip_spec(spec: str) -> tuple[str, str | None]:
    """``ARCH/TAG`` -> (arch, tag); ``hf-hub:org/name`` stays whole."""
    if spec.startswith("hf-hub:"):
        return spec, None
    arch, _, tag = spec.partition("/")
    return arch, tag or None


class ClipEncoder(TorchEncoder):
    """open_clip image and text towers; an image+caption document is the sum of the two
    normalised embeddings, renormalised (the UniVL-DR baseline)."""

    name = "clip"

    def __init__(self, model: Any, tokenizer: Any, preprocess: Any, meta: dict,
                 device: str | None = None) -> None:
        super().__init__(device)
        self.module = model.to(self.device)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.meta = meta
        self.log_scale = self.module.logit_scale
        self.dim = int(meta["dim"])
        self._new = set()

    @classmethod
    def create(cls, spec: str = "tiny", *, device: str | None = None, seed: int = 0,
               vision: dict | None = None, text: dict | None = None, embed_dim: int = 64) -> ClipEncoder:
        import open_clip
        import torch
        from open_clip.transform import image_transform

        if spec == "tiny":
            torch.manual_seed(seed)
            vcfg = {**TINY_VISION, **(vision or {})}
            tcfg = {**TINY_TEXT, **(text or {})}
            cfg = {"embed_dim": embed_dim, "vision_cfg": vcfg, "text_cfg": tcfg}
            model = open_clip.model.CLIP(**cfg)
            tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=tcfg["context_length"])
            preprocess = image_transform(vcfg["image_size"], is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
            meta = {"model_cfg": cfg, "random_init": True, "dim": embed_dim}
            enc = cls(model, tokenizer, preprocess, meta, device)
            enc._new = {id(p) for p in model.parameters()}
            return enc
        if Path(spec).is_dir():
            raise ModelError(f"{spec}: not a clip checkpoint folder (no {CHECKPOINT_CONFIG})")
        arch, tag = _clip_spec(spec)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag)
        except Exception as e:  # unknown arch, missing weights, no network: one clear line
            reason = str(e).split(" Available:")[0].strip()
            raise ModelError(f"cannot load open_clip model {spec!r}: {reason}") from None
        meta = {"arch": arch, "pretrained": tag, "dim": int(model.text_projection.shape[1])
                if getattr(model, "text_projection", None) is not None else int(model.visual.output_dim)}
        return cls(model, open_clip.get_tokenizer(arch), preprocess, meta, device)

    @classmethod
    def load(cls, folder: str | Path, *, device: str | None = None) -> ClipEncoder:
        import open_clip
        from open_clip.transform import image_transform
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = json.loads((folder / CHECKPOINT_CONFIG).read_text())
        if cfg.get("model_cfg"):
            model = open_clip.model.CLIP(**cfg["model_cfg"])
            vcfg = cfg["model_cfg"]["vision_cfg"]
            tokenizer = open_clip.tokenizer.SimpleTokenizer(
                context_length=cfg["model_cfg"]["text_cfg"]["context_length"])
            preprocess = image_transform(vcfg["image_size"], is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(cfg["arch"], pretrained=None)
            tokenizer = open_clip.get_tokenizer(cfg["arch"])
        try:
            model.load_state_dict(load_file(str(folder / WEIGHTS)))
        except (OSError, RuntimeError) as e:
            raise ModelError(f"{folder}: cannot load CLIP weights: {e}") from None
        enc = cls(model, tokenizer, preprocess, {**cfg, "random_init": False}, device)
        enc.checkpoint = str(folder.resolve())
        return enc

    def config(self) -> dict:
        out = {"encoder": "clip", "dim": self.dim}
        if getattr(self, "checkpoint", None):
            out["checkpoint"] = self.checkpoint
        elif self.meta.get("random_init"):
            out.update(model="tiny", random_init=True)
        else:
            out["model"] = self.meta["arch"] + (f"/{self.meta['pretrained']}" if self.meta.get("pretrained") else "")
        return out

    def _text(self, texts: Sequence[str]) -> Any:
        import torch.nn.functional as F

        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.module.encode_text(tokens), dim=-1)

    def _image(self, images: Sequence[Any]) -> Any:
        import torch.nn.functional as F

        return F.normalize(self.module.encode_image(self.pixels(images)), dim=-1)

    def _sum(self, texts: Sequence[str | None], images: Sequence[Any] | None) -> Any:
        import torch
        import torch.nn.functional as F

        images = list(images) if images is not None else [None] * len(texts)
        out = torch.zeros(len(texts), self.dim, device=self.device)
        with_text = [i for i, t in enumerate(texts) if t]
        with_image = [i for i, im in enumerate(images) if im is not None]
        if with_text:
            out = out.index_add(0, torch.tensor(with_text, device=self.device),
                                self._text([texts[i] for i in with_text]))
        if with_image:
            out = out.index_add(0, torch.tensor(with_image, device=self.device),
                                self._image([images[i] for i in with_image]))
        return F.normalize(out, dim=-1)

    query_tensor = _sum
    document_tensor = _sum

    def image_only_tensor(self, images: Sequence[Any], captions: Sequence[str] | None = None) -> Any:
        return self._image(images)

    def parameters(self) -> list:
        return list(self.module.parameters())

    def new_parameters(self) -> set[int]:
        return self._new

    def save(self, folder: str | Path, provenance: dict | None = None) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / WEIGHTS))
        cfg = {"encoder": "clip", "dim": self.dim}
        if self.meta.get("model_cfg"):
            cfg["model_cfg"] = self.meta["model_cfg"]
        else:
            cfg.update(arch=self.meta["arch"], pretrained=self.meta.get("pretrained"))
        (folder / CHECKPOINT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
