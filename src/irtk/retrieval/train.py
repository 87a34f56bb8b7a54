"""Train a retriever on query → positive-document pairs (``irtk train-retriever``).

Loss: in-batch cross-entropy of each query against the batch's documents (its positive, the
other queries' positives, and mined hard negatives), logits = learned scale × cosine, other
positives of the same query masked out. CIEA adds λ × a *complementary* loss: the query with the
words of its positive's caption removed, against image-only embeddings of the batch's positive
images (λ = 0.1 as in the paper). By default the image-only embedding does not weigh patches
against the caption (the released code's variant); ``comp_via_extractor`` weighs them against
the positive's caption first (the paper's figure).

A second stage (``negatives_from``: an index built by a previous model over ``docs``) adds one
image and one text hard negative per query, drawn at random (seeded) from the non-positives in
that model's top-k, as the released code does (``negatives_pick="top"``: the highest-ranked
ones); the complementary loss is dropped there, as in the paper.

The logit scale is learned: exp of a parameter, capped at 100 after each optimiser step (as CLIP
trains it), so it gets a gradient from the first step; its value is logged every epoch. The
vision tower is frozen unless ``freeze_vision=False``, as the released scripts freeze CLIP.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from irtk.errors import InputError, UsageError
from irtk.io import RecordReader, make_provenance
from irtk.records import RecordType
from irtk.retrieval.config import TrainConfig
from irtk.retrieval.images import decode_image
from irtk.retrieval.staging import StagedFolder

PAIR = RecordType(
    "pair",
    pa.schema([pa.field("qid", pa.string()), pa.field("query", pa.string()),
               pa.field("doc_id", pa.string()), pa.field("text", pa.string())]),
    frozenset({"query", "doc_id"}),
    "a training pair: query and its positive document (doc_id, text, optional image)",
)


@dataclass
class Example:
    query: str
    doc_id: str
    text: str | None
    image: Any
    negatives: list = field(default_factory=list)  # (doc_id, text, image)


def load_pairs(source: str | Path | None, uses_images: bool) -> list[Example]:
    reader = RecordReader(source, record_type=PAIR)
    base = None if reader.path is None else reader.path.parent
    out = []
    for i, row in enumerate(reader.rows(), 1):
        image = row.get("image")
        if image is not None and uses_images:
            try:
                image = decode_image(image, base_dir=base)
            except InputError as e:
                raise e.located(source=reader.name, row=i, field="image", unit="record") from None
        else:
            image = None
        if not row.get("text") and image is None:
            raise InputError("positive document has no text" + (" and no image" if uses_images else ""),
                             source=reader.name, row=i, field="text", unit="record")
        out.append(Example(row["query"], row["doc_id"], row.get("text"), image))
    return out


_WORD = re.compile(r"\w+")


def strip_caption_words(query: str, caption: str | None) -> str:
    """The query without the words its positive's caption contains (case-insensitive)."""
    if not caption:
        return query
    drop = {w.lower() for w in _WORD.findall(caption)}
    kept = [w for w in _WORD.findall(query) if w.lower() not in drop]
    return " ".join(kept)


def build_encoder(cfg: TrainConfig) -> Any:
    """The encoder to train: loaded from ``cfg.model`` when it is a checkpoint, else fresh."""
    from irtk.retrieval.encoders import get_encoder
    from irtk.retrieval.encoders.base import checkpoint_config

    if checkpoint_config(cfg.model) is not None:
        enc = get_encoder(cfg.encoder, cfg.model, device=cfg.device)
    elif cfg.encoder == "ciea":
        from irtk.retrieval.encoders.ciea import CieaEncoder

        if cfg.model:
            raise UsageError("--model for ciea is a checkpoint folder to continue from; a fresh "
                             "model takes --text-model and --vision")
        enc = CieaEncoder.create(cfg.text_model, cfg.vision, extractor=cfg.extractor,
                                 seed=cfg.seed, device=cfg.device)
    elif cfg.encoder == "clip":
        enc = get_encoder("clip", cfg.model, device=cfg.device, seed=cfg.seed)
    else:
        enc = get_encoder("text", cfg.model, device=cfg.device)
    if cfg.encoder == "ciea":
        enc.freeze_vision(cfg.freeze_vision)
        enc.meta["comp_via_extractor"] = cfg.comp_via_extractor
    elif cfg.encoder == "clip":
        for p in enc.module.visual.parameters():
            p.requires_grad_(not cfg.freeze_vision)
    return enc


def frozen_random_vision(enc: Any, cfg: TrainConfig) -> bool:
    """Whether training would keep a randomly initialised vision tower frozen (worth a warning:
    its outputs stay random features)."""
    visual = getattr(enc.module, "visual", None)
    return bool(cfg.freeze_vision and visual is not None
                and any(id(p) in enc.new_parameters() for p in visual.parameters()))


def mine_negatives(examples: list[Example], index_dir: str, docs: str, k: int,
                   batch_size: int, uses_images: bool, *, pick: str = "sample",
                   seed: int = 0) -> int:
    """Attach one image and one text hard negative per example from a previous model's top-k:
    a seeded random non-positive of each kind (``pick="sample"``, the released code's choice)
    or the highest-ranked one (``pick="top"``)."""
    from irtk.retrieval.encoders import encoder_from_config
    from irtk.retrieval.index import document_batches, load_index
    from irtk.retrieval.search import search_vectors

    corpus: dict[str, tuple[str | None, Any]] = {}
    for batch in document_batches(docs, batch_size=1024, shard=None, uses_images=uses_images):
        for d, t, im in zip(batch.doc_ids, batch.texts, batch.images, strict=True):
            corpus[d] = (t, im)
    loaded = load_index(index_dir)
    previous = encoder_from_config(loaded.encoder_config)
    queries = sorted({e.query for e in examples})
    positives: dict[str, set[str]] = {}
    for e in examples:
        positives.setdefault(e.query, set()).add(e.doc_id)
    vecs = previous.encode_queries(queries, None, batch_size=batch_size)
    ranked = dict(zip(queries, search_vectors(loaded, vecs, k), strict=True))
    rng = np.random.default_rng(seed)
    mined = 0
    for e in examples:
        by_kind: dict[bool, list[tuple]] = {True: [], False: []}
        for doc_id, _ in ranked[e.query]:
            if doc_id in positives[e.query]:
                continue
            if doc_id not in corpus:
                raise InputError(f"index returned doc_id {doc_id!r}, which is not in --docs", source=docs)
            text, image = corpus[doc_id]
            by_kind[image is not None].append((doc_id, text, image))
        e.negatives = []
        for kind in (True, False):  # image first, then text: a fixed order keeps runs seeded
            found = by_kind[kind]
            if found:
                e.negatives.append(found[0] if pick == "top" else found[int(rng.integers(len(found)))])
        mined += len(e.negatives)
    return mined


def _loss(enc: Any, batch: list[Example], positives: dict[str, set[str]], lam: float) -> tuple[Any, dict]:
    import torch
    import torch.nn.functional as F

    queries = [e.query for e in batch]
    docs = [(e.doc_id, e.text, e.image) for e in batch]
    docs += [n for e in batch for n in e.negatives]
    q = enc.query_tensor(queries, None)
    d = enc.document_tensor([t for _, t, _ in docs], [im for _, _, im in docs])
    scale = enc.scale()
    logits = scale * q @ d.T
    mask = torch.tensor([[j != i and docs[j][0] in positives[queries[i]] for j in range(len(docs))]
                         for i in range(len(batch))], device=logits.device)
    target = torch.arange(len(batch), device=logits.device)
    main = F.cross_entropy(logits.masked_fill(mask, float("-inf")), target)
    stats = {"main": float(main.detach())}
    loss = main
    if lam > 0:
        idx = [i for i, e in enumerate(batch) if e.image is not None]
        stripped = [strip_caption_words(batch[i].query, batch[i].text) for i in idx]
        idx = [i for i, s in zip(idx, stripped, strict=True) if s]
        stripped = [s for s in stripped if s]
        if len(idx) > 1:
            img = enc.image_only_tensor([batch[i].image for i in idx], [batch[i].text for i in idx])
            if img is not None:
                qs = enc.query_tensor(stripped, None)
                cl = scale * qs @ img.T
                cmask = torch.tensor([[a != b and batch[b].doc_id in positives[batch[a].query]
                                       for b in idx] for a in idx], device=cl.device)
                comp = F.cross_entropy(cl.masked_fill(cmask, float("-inf")),
                                       torch.arange(len(idx), device=cl.device))
                loss = loss + lam * comp
                stats["comp"] = float(comp.detach())
    return loss, stats


def param_groups(enc: Any, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: pretrained weights at ``lr``, randomly initialised ones at ``lr_new``, both
    with ``weight_decay``; the logit scale in a group of its own without weight decay, because
    it is a temperature, not a weight (decay would pull τ towards 1)."""
    new = enc.new_parameters()
    scale = enc.log_scale
    params = [p for p in enc.parameters() if p.requires_grad and p is not scale]
    groups = [{"params": [p for p in params if id(p) not in new], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in new], "lr": cfg.lr_new or cfg.lr}]
    groups = [{**g, "weight_decay": cfg.weight_decay} for g in groups if g["params"]]
    if scale.requires_grad:
        lr = (cfg.lr_new or cfg.lr) if id(scale) in new else cfg.lr
        groups.append({"params": [scale], "lr": lr, "weight_decay": 0.0})
    return groups


def train(pairs: str | Path | None, output: str | Path, cfg: TrainConfig, *, force: bool = False,
          log: Callable[[str], None] = print, warn: Callable[[str], None] | None = None,
          progress: Callable[[int], None] | None = None) -> dict:
    """Train, write a checkpoint folder (weights, encoder.json, provenance.json, train_log.jsonl)
    and return a summary."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    staging = StagedFolder(Path(output), force)  # checks the target before any work
    torch.manual_seed(cfg.seed)
    enc = build_encoder(cfg)
    examples = load_pairs(pairs, enc.uses_images)
    if len(examples) < 2:
        raise InputError("need at least two pairs for in-batch negatives", source=str(pairs or "<stdin>"))
    if frozen_random_vision(enc, cfg):  # after the input checks: bad input gets one error line
        (warn or log)("the vision tower is randomly initialised and frozen: its patches stay "
                      "random features (--train-vision trains it)")
    lam = cfg.lambda_comp if cfg.lambda_comp is not None else (0.1 if cfg.encoder == "ciea" else 0.0)
    mined = 0
    if cfg.negatives_from:
        mined = mine_negatives(examples, cfg.negatives_from, cfg.docs, cfg.negatives_k,
                               cfg.batch_size, enc.uses_images, pick=cfg.negatives_pick, seed=cfg.seed)
        lam = 0.0 if cfg.lambda_comp is None else lam
        log(f"mined {mined} hard negatives for {len(examples)} pairs from {cfg.negatives_from}")
    positives: dict[str, set[str]] = {}
    for e in examples:
        positives.setdefault(e.query, set()).add(e.doc_id)

    params = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(enc, cfg), betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup * total), total)
    rng = np.random.default_rng(cfg.seed)
    history = []
    step = 0
    start = time.perf_counter()
    enc.module.train()
    if cfg.encoder == "ciea" and cfg.freeze_vision:
        enc.module.visual.eval()
    for epoch in range(1, cfg.epochs + 1):
        order = rng.permutation(len(examples))
        sums: dict[str, float] = {}
        n = 0
        for b in range(0, len(order), cfg.batch_size):
            batch = [examples[i] for i in order[b:b + cfg.batch_size]]
            if len(batch) < 2:
                continue
            loss, stats = _loss(enc, batch, positives, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            enc.clamp_scale()
            sched.step()
            step += 1
            n += 1
            for key, v in stats.items():
                sums[key] = sums.get(key, 0.0) + v
            if progress:
                progress(1)
            if cfg.max_steps and step >= cfg.max_steps:
                break
        row = {"epoch": epoch, "step": step, **{k: v / max(n, 1) for k, v in sums.items()},
               "logit_scale": float(enc.scale().detach()), "seconds": round(time.perf_counter() - start, 2)}
        history.append(row)
        log(json.dumps(row))
        if cfg.save_every and epoch % cfg.save_every == 0 and epoch < cfg.epochs:
            _save(enc, Path(f"{output}-epoch{epoch}"), cfg, pairs, history, mined, True)
        if cfg.max_steps and step >= cfg.max_steps:
            break
    enc.module.eval()
    with staging as tmp:
        _write(enc, tmp, cfg, pairs, history, mined)
    return {"steps": step, "history": history, "output": str(output), "hard_negatives": mined}


def _write(enc: Any, folder: Path, cfg: TrainConfig, pairs: Any, history: list, mined: int) -> None:
    enc.save(folder)
    prov = make_provenance("train-retriever", pairs=str(pairs) if pairs else "<stdin>",
                           train_config=asdict(cfg), hard_negatives=mined, seed=cfg.seed,
                           final=history[-1] if history else None)
    (folder / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    (folder / "train_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def _save(enc: Any, target: Path, cfg: TrainConfig, pairs: Any, history: list, mined: int,
          force: bool) -> None:
    with StagedFolder(target, force) as tmp:
        _write(enc, tmp, cfg, pairs, history, mined)
