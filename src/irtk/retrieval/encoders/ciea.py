"""CIEA: complementary image information, spliced into a text encoder's input.

An image document is one token sequence through the text encoder::

    [CLS] <im_start> p_1 … p_N <im_end> caption : … [SEP]

where p_i are the image's patch tokens (an open_clip ViT's last layer, CLS dropped), projected
to the text width and refined by the *complementary extractor*: each patch gets a weight
w = 1 − (its highest cosine similarity to any caption token, mapped to [0, 1]), so patches the
caption already describes weigh little, and one 8-head transformer layer over the patches scales
each key's attention logits by w² and masks keys with w < 1e-5 (the released code's layer:
post-norm, LeakyReLU, 2048-wide feed-forward, dropout 0.05; ``extractor="prenorm"`` is the
alternative). Text documents and queries are plain text
through the same encoder. Embeddings are mean-pooled and L2-normalised; scores are dot products
times a learned logit scale (initialised to 100, τ = 0.01).

Deviation from the paper, on purpose: the text side is any encoder-only HF model fed
``inputs_embeds`` (default: the MiniLM-L6 BERT inside ``minilm-l6``, 384-d, mean pooling as in
its sentence-transformers config) instead of T5-ANCE's first decoder state, so it runs on a CPU;
a larger encoder (e.g. ``sentence-transformers/all-mpnet-base-v2``) drops in by ``--text-model``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from irtk.errors import ModelError, UsageError
from irtk.models import DEFAULT_EMBEDDER
from irtk.retrieval.config import EXTRACTOR_BLOCKS
from irtk.retrieval.encoders.base import (
    CHECKPOINT_CONFIG,
    CLIP_MEAN,
    CLIP_STD,
    TINY_VISION,
    WEIGHTS,
    TorchEncoder,
    checkpoint_config,
    clip_spec,
)

CAPTION_PREFIX = "caption:"
TINY_TEXT_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 128, "max_position_embeddings": 128}


class ComplementaryExtractor(nn.Module):
    """One transformer layer over patches whose attention favours what captions lack."""

    def __init__(self, dim: int, heads: int = 8, block: str = "released", ff_width: int = 2048,
                 dropout: float = 0.05) -> None:
        super().__init__()
        if dim % heads:
            raise ModelError(f"extractor width {dim} is not divisible by {heads} heads")
        if block not in EXTRACTOR_BLOCKS:
            raise ModelError(f"extractor block {block!r}: use one of {', '.join(EXTRACTOR_BLOCKS)}")
        self.heads = heads
        self.block = block
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        if block == "released":
            self.mlp = nn.Sequential(nn.Linear(dim, ff_width), nn.LeakyReLU(), nn.Dropout(dropout),
                                     nn.Linear(ff_width, dim))
            self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            self.drop1 = self.drop2 = nn.Identity()

    @staticmethod
    def weights(patches: torch.Tensor, caption: torch.Tensor, caption_mask: torch.Tensor) -> torch.Tensor:
        """w (B, N): 1 − max cosine (mapped from [-1, 1] to [0, 1]) of each patch to any caption
        token; 1 for every patch of an image without caption tokens."""
        sim = F.normalize(patches, dim=-1) @ F.normalize(caption, dim=-1).transpose(1, 2)  # B,N,T
        sim = sim.masked_fill(~caption_mask[:, None, :], -1.0)
        best = ((sim.max(dim=-1).values + 1.0) / 2.0).clamp(0.0, 1.0)
        w = 1.0 - best
        has_caption = caption_mask.any(dim=-1, keepdim=True)
        return torch.where(has_caption, w, torch.ones_like(w))

    def attention(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention with each key's logits scaled by w² (w < 1e-5: masked)."""
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)  # B,H,N,N
        logits = logits * (w * w)[:, None, None, :]
        dead = (w < 1e-5)[:, None, None, :]
        logits = logits.masked_fill(dead, float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        # A patch whose keys are all masked (every patch described) attends to nothing.
        attn = torch.nan_to_num(attn, nan=0.0)
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, patches: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.block == "released":
            x = self.norm1(patches + self.drop1(self.attention(patches, w)))
            return self.norm2(x + self.drop2(self.mlp(x)))
        x = patches + self.attention(self.norm1(patches), w)
        return x + self.mlp(self.norm2(x))


def _vision_tower(spec: dict) -> nn.Module:
    import open_clip

    if spec.get("cfg"):
        cfg = {**spec["cfg"], "output_tokens": True}
        visual = open_clip.model._build_vision_tower(spec.get("embed_dim", 64), cfg)
    else:
        model = open_clip.create_model(spec["arch"], pretrained=spec.get("pretrained"))
        visual = model.visual
        visual.output_tokens = True
    return visual


class CieaModel(nn.Module):
    """Vision tower + projector + extractor + image markers + text encoder + logit scale."""

    def __init__(self, visual: nn.Module, d_image: int, text: nn.Module, heads: int,
                 logit_scale: float = 100.0, extractor: str = "released") -> None:
        super().__init__()
        d_text = text.config.hidden_size
        self.visual = visual
        self.text = text
        self.projector = nn.Linear(d_image, d_text)
        self.extractor = ComplementaryExtractor(d_text, heads, extractor)
        std = float(text.get_input_embeddings().weight.detach().std())
        self.im_start = nn.Parameter(torch.randn(d_text) * std)
        self.im_end = nn.Parameter(torch.randn(d_text) * std)
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))


class CieaEncoder(TorchEncoder):
    """The CIEA model behind the common encoder interface."""

    name = "ciea"

    def __init__(self, model: CieaModel, tokenizer: Any, meta: dict, device: str | None = None) -> None:
        from open_clip.transform import image_transform

        super().__init__(device)
        self.module = model.to(self.device)
        self.tokenizer = tokenizer
        self.meta = meta
        self.dim = int(model.text.config.hidden_size)
        self.preprocess = image_transform(meta["image_size"], is_train=False,
                                          mean=tuple(meta.get("mean", CLIP_MEAN)),
                                          std=tuple(meta.get("std", CLIP_STD)))
        self.log_scale = model.log_scale
        self.checkpoint: str | None = None
        self._prefix_len = len(tokenizer(CAPTION_PREFIX, add_special_tokens=False)["input_ids"])
        self.freeze_vision(bool(meta.get("freeze_vision")))

    # -- building and saving --

    @classmethod
    def from_name(cls, model: str | None = None, device: str | None = None, **options: Any) -> CieaEncoder:
        """The registry's factory: ``model`` must be a checkpoint folder (``irtk train-retriever``
        builds fresh models)."""
        if checkpoint_config(model) is None:
            raise UsageError("--encoder ciea needs --model CHECKPOINT, a folder written by "
                             "`irtk train-retriever --encoder ciea`")
        return cls.load(model, device=device)

    @classmethod
    def create(cls, text_model: str = DEFAULT_EMBEDDER, vision: str = "tiny", *, heads: int = 8,
               freeze_vision: bool = True, comp_via_extractor: bool = False,
               extractor: str = "released", max_length: int = 128, logit_scale: float = 100.0,
               seed: int = 0, device: str | None = None) -> CieaEncoder:
        """A fresh CIEA model: ``vision`` is ``tiny`` (random ViT) or an open_clip ``ARCH/TAG``;
        ``text_model`` a registry name/path/hub id of an encoder-only HF model, or ``tiny``."""
        from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

        from irtk.models import resolve

        torch.manual_seed(seed)
        if vision == "tiny":
            vspec = {"cfg": dict(TINY_VISION), "embed_dim": 64}
            image_size, d_image = TINY_VISION["image_size"], TINY_VISION["width"]
        else:
            arch, tag = clip_spec(vision)
            vspec = {"arch": arch, "pretrained": tag}
        try:
            visual = _vision_tower(vspec)
        except Exception as e:  # unknown arch / weights not available: one clear line
            raise ModelError(f"cannot build the vision tower {vision!r}: {e}") from None
        if vision != "tiny":
            image_size = int(visual.image_size[0])
            d_image = int(visual.transformer.width)
        if text_model == "tiny":
            tokenizer = AutoTokenizer.from_pretrained(resolve("minilm-l6"))
            text = BertModel(BertConfig(vocab_size=len(tokenizer), **TINY_TEXT_BERT))
        else:
            path = resolve(text_model)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                text = AutoModel.from_pretrained(path)
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot load text encoder {text_model!r}: {e}") from None
        new_visual = vision == "tiny"
        model = CieaModel(visual, d_image, text, heads, logit_scale, extractor)
        meta = {"vision": {k: v for k, v in vspec.items() if k != "pretrained"} | (
                    {"pretrained_from": vspec.get("pretrained")} if vspec.get("pretrained") else {}),
                "text_model": text_model, "image_size": image_size, "heads": heads,
                "max_length": max_length, "freeze_vision": freeze_vision,
                "comp_via_extractor": comp_via_extractor, "extractor": extractor}
        enc = cls(model, tokenizer, meta, device)
        random_parts = [model.projector, model.extractor]
        if new_visual:
            random_parts.append(model.visual)
        if text_model == "tiny":
            random_parts.append(model.text)
        enc._new = {id(p) for m in random_parts for p in m.parameters()}
        enc._new |= {id(model.im_start), id(model.im_end), id(model.log_scale)}
        return enc

    @classmethod
    def load(cls, folder: str | Path, *, device: str | None = None) -> CieaEncoder:
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(folder)
        meta = json.loads((folder / CHECKPOINT_CONFIG).read_text())
        try:
            vspec = dict(meta["vision"])
            vspec.pop("pretrained_from", None)  # the weights come from the checkpoint
            visual = _vision_tower(vspec)
            d_image = int(visual.transformer.width)
            text = AutoModel.from_config(AutoConfig.from_pretrained(folder / "text"))
            tokenizer = AutoTokenizer.from_pretrained(folder / "text")
            # Checkpoints from before the released layer became the default have no "extractor".
            model = CieaModel(visual, d_image, text, int(meta["heads"]),
                              extractor=meta.get("extractor", "prenorm"))
            model.load_state_dict(load_file(str(folder / WEIGHTS)))
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise ModelError(f"{folder}: not a loadable CIEA checkpoint: {e}") from None
        enc = cls(model, tokenizer, meta, device)
        enc.checkpoint = str(folder.resolve())
        enc._new = set()
        return enc

    def save(self, folder: str | Path, provenance: dict | None = None) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / "text").mkdir(parents=True, exist_ok=True)
        self.module.text.config.save_pretrained(folder / "text")
        self.tokenizer.save_pretrained(folder / "text")
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / WEIGHTS))
        cfg = {"encoder": "ciea", "dim": self.dim, **self.meta}
        (folder / CHECKPOINT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")

    def config(self) -> dict:
        out = {"encoder": "ciea", "dim": self.dim}
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
        return out

    def freeze_vision(self, frozen: bool) -> None:
        self.meta["freeze_vision"] = frozen
        for p in self.module.visual.parameters():
            p.requires_grad_(not frozen)

    def parameters(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def new_parameters(self) -> set[int]:
        return self._new

    # -- embedding --

    def _tokens(self, texts: Sequence[str], reserve: int = 0) -> dict:
        """Tokenise, leaving ``reserve`` positions free for spliced image slots."""
        limit = int(self.meta["max_length"])
        positions = getattr(self.module.text.config, "max_position_embeddings", None)
        if positions:
            limit = min(limit, int(positions) - reserve)
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=limit, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def _pool(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.module.text(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def _plain(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self._tokens(texts)
        embeds = self.module.text.get_input_embeddings()(tok["input_ids"])
        return self._pool(embeds, tok["attention_mask"])

    def patches(self, images: Sequence[Any]) -> torch.Tensor:
        """Projected patch tokens (B, N, d_text), CLS excluded."""
        frozen = bool(self.meta.get("freeze_vision"))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            _, tokens = self.module.visual(self.pixels(images))
        return self.module.projector(tokens)

    def patch_weights(self, captions: Sequence[str | None], images: Sequence[Any]) -> torch.Tensor:
        """The extractor's w (B, N) for image documents: near 0 where the caption already
        describes a patch, near 1 where it does not (a diagnostic of what the extractor sees)."""
        patches = self.patches(images)
        texts = [f"{CAPTION_PREFIX} {c}" if c else "" for c in captions]
        tok = self._tokens(texts, reserve=patches.shape[1] + 2)
        words = self.module.text.get_input_embeddings()(tok["input_ids"])
        return self.module.extractor.weights(patches, words, self._caption_mask(tok, prefixed=True))

    def _caption_mask(self, tok: dict, prefixed: bool) -> torch.Tensor:
        ids = tok["input_ids"]
        mask = tok["attention_mask"].bool()
        for special in self.tokenizer.all_special_ids:
            mask &= ids != special
        if prefixed:  # "caption:" is in every image document; it describes no patch
            mask[:, 1:1 + self._prefix_len] = False
        return mask

    def _with_image(self, captions: Sequence[str | None], images: Sequence[Any],
                    weigh_against: Sequence[str | None] | None = None, splice_caption: bool = True,
                    refine: bool = True) -> torch.Tensor:
        m = self.module
        patches = self.patches(images)
        b, n, d = patches.shape
        texts = [f"{CAPTION_PREFIX} {c}" if c else "" for c in captions] if splice_caption else [""] * b
        tok = self._tokens(texts, reserve=n + 2)
        words = m.text.get_input_embeddings()(tok["input_ids"])
        if weigh_against is None:
            cap_words, cap_mask = words, self._caption_mask(tok, prefixed=True)
        else:  # image-only embedding refined against another text (the figure's variant)
            other = self._tokens([c or "" for c in weigh_against])
            cap_words = m.text.get_input_embeddings()(other["input_ids"])
            cap_mask = self._caption_mask(other, prefixed=False)
        if refine:
            w = m.extractor.weights(patches, cap_words, cap_mask)
            refined = m.extractor(patches, w)
        else:
            refined = patches
        seq = torch.cat([words[:, :1], m.im_start.expand(b, 1, d), refined,
                         m.im_end.expand(b, 1, d), words[:, 1:]], dim=1)
        ones = torch.ones(b, n + 2, dtype=tok["attention_mask"].dtype, device=self.device)
        mask = torch.cat([tok["attention_mask"][:, :1], ones, tok["attention_mask"][:, 1:]], dim=1)
        return self._pool(seq, mask)

    def document_tensor(self, texts: Sequence[str | None], images: Sequence[Any] | None = None) -> torch.Tensor:
        images = list(images) if images is not None else [None] * len(texts)
        out = torch.zeros(len(texts), self.dim, device=self.device)
        img = [i for i, im in enumerate(images) if im is not None]
        txt = [i for i, im in enumerate(images) if im is None]
        if img:
            vec = self._with_image([texts[i] for i in img], [images[i] for i in img])
            out = out.index_copy(0, torch.tensor(img, device=self.device), vec)
        if txt:
            vec = self._plain([texts[i] or "" for i in txt])
            out = out.index_copy(0, torch.tensor(txt, device=self.device), vec)
        return out

    query_tensor = document_tensor  # a query with an image is encoded like an image document

    def image_only_tensor(self, images: Sequence[Any], captions: Sequence[str] | None = None) -> torch.Tensor:
        """Patches without caption, for the complementary loss. By default the projected patches
        go to the text encoder as they are, skipping the extractor, as the released code does;
        with ``comp_via_extractor`` they are first refined by the extractor, weighed against the
        document's caption, as the paper's figure draws it."""
        if self.meta.get("comp_via_extractor") and captions is not None:
            return self._with_image([None] * len(images), images, weigh_against=captions,
                                    splice_caption=False)
        return self._with_image([None] * len(images), images, splice_caption=False, refine=False)
