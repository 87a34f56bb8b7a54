"""``irtk train-retriever``: train a text, CLIP or CIEA retriever on query → document pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.cli.index import Device


def register(app: typer.Typer) -> None:
    app.command("train-retriever", help="Train a retriever (text, clip or ciea) on query -> positive "
                                        "document pairs; writes a checkpoint folder.")(train_retriever)


def train_retriever(
    input: opt.Input = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Checkpoint folder to write.",
                                                   show_default=False)] = None,
    encoder: Annotated[str, typer.Option("--encoder", envvar="IRTK_ENCODER", help="text, clip or ciea.")] = "ciea",
    model: Annotated[Optional[str], typer.Option("--model", help="Start from: a text model (text), tiny or "
                                                 "ARCH/TAG (clip), or any checkpoint folder.", show_default=False)] = None,
    text_model: Annotated[str, typer.Option("--text-model", help="A fresh CIEA's text encoder (HF "
                                            "encoder-only model, or tiny).")] = "minilm-l6",
    vision: Annotated[str, typer.Option("--vision", help="A fresh CIEA's vision tower: tiny (random ViT) or "
                                        "an open_clip ARCH/TAG such as ViT-B-32/openai.")] = "tiny",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate (pretrained weights).")] = 5e-6,
    lr_new: Annotated[Optional[float], typer.Option("--lr-new", help="Learning rate of randomly initialised "
                                                    "parts (default: --lr).", show_default=False)] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.2,
    warmup: Annotated[float, typer.Option("--warmup", help="Warm-up fraction of the cosine schedule.")] = 0.1,
    lambda_comp: Annotated[Optional[float], typer.Option("--lambda-comp", help="Weight of the complementary "
                                                         "loss (default 0.1 for ciea, 0 otherwise, 0 with "
                                                         "hard negatives).", show_default=False)] = None,
    comp_via_extractor: Annotated[bool, typer.Option("--comp-via-extractor", help="Weigh image-only patches "
                                                     "against the caption in the complementary loss.")] = False,
    freeze_vision: Annotated[bool, typer.Option("--freeze-vision/--train-vision", help="Freeze the vision tower.")] = False,
    negatives_from: Annotated[Optional[Path], typer.Option("--negatives-from", help="Hard-negative stage: an index "
                                                           "built by a previous model over --docs.",
                                                           show_default=False)] = None,
    docs: Annotated[Optional[Path], typer.Option("--docs", help="The corpus --negatives-from indexes.",
                                                 show_default=False)] = None,
    negatives_k: Annotated[int, typer.Option("--negatives-k", min=1, help="Mine from this many top hits.")] = 100,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, show_default=False)] = None,
    save_every: Annotated[int, typer.Option("--save-every", min=0, help="Also save OUTPUT-epochN every N epochs.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing checkpoint folder.")] = False,
    device: Device = None,
    batch_size: opt.BatchSize = 32,
    seed: opt.Seed = 0,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Pairs are records with query, doc_id and the positive's text and optional image."""
    from irtk.cli import runtime
    from irtk.errors import UsageError
    from irtk.retrieval.train import TrainConfig, train

    if output is None:
        raise UsageError("irtk train-retriever needs -o FOLDER for the checkpoint")
    cfg = TrainConfig(encoder=encoder, model=model, text_model=text_model, vision=vision, epochs=epochs,
                      batch_size=batch_size, lr=lr, lr_new=lr_new, weight_decay=weight_decay,
                      warmup=warmup, lambda_comp=lambda_comp, comp_via_extractor=comp_via_extractor,
                      freeze_vision=freeze_vision,
                      negatives_from=str(negatives_from) if negatives_from else None,
                      docs=str(docs) if docs else None, negatives_k=negatives_k, max_steps=max_steps,
                      save_every=save_every, seed=seed, device=device)
    with runtime.progress("training") as advance:
        summary = train(input, output, cfg, force=force, log=runtime.info, progress=advance)
    runtime.info(f"trained {summary['steps']} steps -> {output}")
