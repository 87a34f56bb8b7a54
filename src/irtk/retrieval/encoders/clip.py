"""The ``clip`` encoder: open_clip image and text towers, an image+caption document embedded as
the normalised sum of both (the UniVL-DR baseline)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from irtk.errors import ModelError
from irtk.retrieval.encoders.base import (
    CHECKPOINT_CONFIG,
    CLIP_MEAN,
    CLIP_STD,
    TINY_TEXT,
    TINY_VISION,
    WEIGHTS,
    TorchEncoder,
    checkpoint_config,
    clip_spec,
)


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
    def from_name(cls, model: str | None = None, device: str | None = None, **options: Any) -> ClipEncoder:
        """The registry's factory: a checkpoint folder, ``tiny`` (random weights, the default)
        or an open_clip ``ARCH/TAG``."""
        if checkpoint_config(model) is not None:
            return cls.load(model, device=device)
        return cls.create(model or "tiny", device=device, **options)

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
        arch, tag = clip_spec(spec)
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
