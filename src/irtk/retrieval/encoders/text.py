"""The ``text`` encoder: any sentence-transformers model; documents use their text only."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from irtk.errors import ModelError
from irtk.models import DEFAULT_EMBEDDER
from irtk.retrieval.encoders.base import CHECKPOINT_CONFIG, TorchEncoder, checkpoint_config


class TextEncoder(TorchEncoder):
    """Any sentence-transformers model; documents use their text (images are ignored)."""

    name = "text"
    uses_images = False

    def __init__(self, model: str = DEFAULT_EMBEDDER, device: str | None = None,
                 logit_scale: float = 20.0) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from irtk.models import resolve

        super().__init__(device)
        saved = checkpoint_config(model)
        self.model_name = str(Path(model).resolve()) if saved else model
        self.random_init = model == "tiny"
        if self.random_init:
            self.st = tiny_sentence_transformer(self.device)
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

    @classmethod
    def from_name(cls, model: str | None = None, device: str | None = None, **options: Any) -> TextEncoder:
        """The registry's factory: ``model`` is a registry name, path, hub id, checkpoint folder
        or ``tiny`` (a random 2-layer BERT); default the embedded ``minilm-l6``."""
        return cls(model or DEFAULT_EMBEDDER, device=device, **options)

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


def tiny_sentence_transformer(device: str) -> Any:
    """A 2-layer, 64-wide random BERT with MiniLM's tokenizer and mean pooling (tests, testbed)."""
    import tempfile

    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 5.2
        from sentence_transformers import models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from irtk.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(DEFAULT_EMBEDDER))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)
    with tempfile.TemporaryDirectory() as tmp:  # sentence-transformers builds modules from a folder
        BertModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        word = models.Transformer(tmp, max_seq_length=128)
        return SentenceTransformer(modules=[word, models.Pooling(64, pooling_mode="mean")], device=device)
