"""Typed settings of ``irtk index``, ``irtk retrieve`` and ``irtk train-retriever`` (irtk.config's
convention: fields with help text, validation in ``__post_init__``). The CLI reads defaults and
help from here. Light on purpose: nothing here imports torch or faiss.
"""

from __future__ import annotations

from dataclasses import dataclass

from irtk.config import require, setting
from irtk.models import DEFAULT_EMBEDDER

# Built-in encoders that train-retriever can train (index/retrieve also take module:attr).
TRAINABLE = ("text", "clip", "ciea")
# CIEA's extractor layer: the released code's, or a pre-norm variant (see encoders/ciea.py).
EXTRACTOR_BLOCKS = ("released", "prenorm")
# How a hard negative is chosen among a query's non-positive top-k hits, per kind (image, text).
NEGATIVE_PICKS = ("sample", "top")
# Metric semantics (irtk.retrieval.metrics): the first of each is trec_eval's.
TIE_ORDERS = ("trec_eval", "docid")
GAINS = ("graded", "binary")
AVERAGES = ("run", "all")

MODEL_HELP = ("text: a sentence-transformers model (default minilm-l6); clip: tiny, an open_clip "
              "ARCH/TAG (ViT-B-32/openai) or a checkpoint; ciea: a checkpoint folder from "
              "`irtk train-retriever`.")


def _encoder_name(name: str) -> None:
    require(bool(name) and (name in TRAINABLE or ":" in name),
            f"--encoder must be one of {', '.join(TRAINABLE)} or module:attr, got {name!r}")


@dataclass
class IndexConfig:
    """How ``irtk index`` encodes documents and builds the faiss index."""

    encoder: str = setting("text", "text, clip, ciea, or module:attr.")
    model: str | None = setting(None, MODEL_HELP)
    factory: str = setting("Flat", "faiss factory string: Flat, HNSW32, IVF4096,PQ64, …")
    train_size: int | None = setting(None, "Vectors sampled to train IVF/PQ (default: 64 per list, "
                                     "10k to 262k).")
    batch_size: int = setting(64, "Documents per encoder batch.")
    seed: int = setting(0, "Random seed (the IVF/PQ training sample).")
    device: str | None = setting(None, "cpu, cuda, mps (default: best available).")

    def __post_init__(self) -> None:
        _encoder_name(self.encoder)
        require(bool(self.factory.strip()), "--factory must not be empty")
        require(self.train_size is None or self.train_size >= 1, "--train-size must be at least 1")
        require(self.batch_size >= 1, "--batch-size must be at least 1")


@dataclass
class RetrieveConfig:
    """How ``irtk retrieve`` searches and scores a run."""

    k: int = setting(100, "Hits per query.")
    tag: str = setting("irtk", "Run tag (TREC column 6).")
    search_params: str | None = setting(None, "faiss parameters, e.g. nprobe=32 or efSearch=128.")
    mmap: bool | None = setting(None, "Memory-map the index (default: when it is over half the "
                                "available memory).")
    encoder: str | None = setting(None, "Check/override the index's encoder (must match it).")
    model: str | None = setting(None, "Encoder model (with --encoder).")
    device: str | None = setting(None, "cpu, cuda, mps (default: best available).")
    batch_size: int = setting(64, "Queries per encoder batch.")
    ties: str = setting("trec_eval", "Order of equal scores when scoring: trec_eval (docid "
                        "descending, as trec_eval sorts) or docid (ascending, the order irtk "
                        "writes ranks in).")
    gain: str = setting("graded", "NDCG gain: graded (the qrels grade, as trec_eval) or binary "
                        "(1 per relevant document, the CIEA paper's).")
    average: str = setting("run", "Queries averaged over: run (judged queries in the run, as "
                           "trec_eval) or all (every judged query, missing ones 0: trec_eval -c).")

    def __post_init__(self) -> None:
        require(self.k >= 1, "--k must be at least 1")
        require(self.batch_size >= 1, "--batch-size must be at least 1")
        if self.encoder is not None:
            _encoder_name(self.encoder)
        for name, value, allowed in (("--ties", self.ties, TIE_ORDERS), ("--gain", self.gain, GAINS),
                                     ("--average", self.average, AVERAGES)):
            require(value in allowed, f"{name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass
class TrainConfig:
    """Everything a ``train-retriever`` run depends on (recorded in the checkpoint's provenance)."""

    encoder: str = setting("ciea", "text, clip or ciea.")
    model: str | None = setting(None, "Start from: a text model (text), tiny or ARCH/TAG (clip), "
                                "or any checkpoint folder.")
    text_model: str = setting(DEFAULT_EMBEDDER, "A fresh CIEA's text encoder (HF encoder-only "
                              "model, or tiny).")
    vision: str = setting("tiny", "A fresh CIEA's vision tower: tiny (random ViT) or an open_clip "
                          "ARCH/TAG such as ViT-B-32/openai.")
    extractor: str = setting("released", "A fresh CIEA's extractor layer: released (post-norm, "
                             "LeakyReLU, 2048-wide, dropout 0.05, as the released code) or prenorm "
                             "(pre-norm, GELU, 2x-wide MLP, no dropout).")
    epochs: int = setting(1, "Passes over the pairs.")
    batch_size: int = setting(32, "Pairs per step (in-batch negatives).")
    lr: float = setting(5e-6, "AdamW learning rate (pretrained weights).")
    lr_new: float | None = setting(None, "Learning rate of randomly initialised parts (default: --lr).")
    weight_decay: float = setting(0.2, "AdamW weight decay (not on the logit scale).")
    warmup: float = setting(0.1, "Warm-up fraction of the cosine schedule.")
    lambda_comp: float | None = setting(None, "Weight of the complementary loss (default 0.1 for "
                                        "ciea, 0 otherwise, 0 with hard negatives).")
    comp_via_extractor: bool = setting(False, "Complementary loss: refine image-only patches by the "
                                       "extractor, weighed against the caption (the paper's figure) "
                                       "instead of skipping the extractor (the released code).")
    freeze_vision: bool = setting(True, "Freeze the vision tower, as the released scripts do "
                                  "(--train-vision trains it: needed for a randomly initialised one).")
    negatives_from: str | None = setting(None, "Hard-negative stage: an index built by a previous "
                                         "model over --docs.")
    docs: str | None = setting(None, "The corpus --negatives-from indexes.")
    negatives_k: int = setting(100, "Mine hard negatives from this many top hits.")
    negatives_pick: str = setting("sample", "Per query and kind (image, text): sample (a seeded "
                                  "random non-positive of the top k, as the released code) or top "
                                  "(the highest-ranked non-positive).")
    max_steps: int | None = setting(None, "Stop after this many optimiser steps.")
    save_every: int = setting(0, "Also save OUTPUT-epochN every N epochs.")
    seed: int = setting(0, "Random seed (initialisation, batch order, negative sampling).")
    device: str | None = setting(None, "cpu, cuda, mps (default: best available).")

    def __post_init__(self) -> None:
        require(self.encoder in TRAINABLE, f"train-retriever trains {', '.join(TRAINABLE)}, "
                f"not {self.encoder!r}")
        require(self.extractor in EXTRACTOR_BLOCKS,
                f"--extractor must be one of {', '.join(EXTRACTOR_BLOCKS)}, got {self.extractor!r}")
        require(self.negatives_pick in NEGATIVE_PICKS,
                f"--negatives-pick must be one of {', '.join(NEGATIVE_PICKS)}, got {self.negatives_pick!r}")
        require(self.epochs >= 1, "--epochs must be at least 1")
        require(self.batch_size >= 2, "--batch-size must be at least 2 (in-batch negatives)")
        require(self.lr > 0 and (self.lr_new is None or self.lr_new > 0), "learning rates must be positive")
        require(self.weight_decay >= 0, "--weight-decay must not be negative")
        require(0 <= self.warmup < 1, "--warmup must be in [0, 1)")
        require(self.lambda_comp is None or self.lambda_comp >= 0, "--lambda-comp must not be negative")
        require(self.negatives_k >= 1, "--negatives-k must be at least 1")
        require(self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1")
        require(self.save_every >= 0, "--save-every must not be negative")
        require(not self.negatives_from or bool(self.docs),
                "--negatives-from needs --docs (the corpus that index was built from)")
