"""``irtk train-retriever``: train a text, CLIP or CIEA retriever on query → document pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.cli.index import Device
from irtk.config import default_of as D
from irtk.retrieval.config import TrainConfig as C


def register(app: typer.Typer) -> None:
    app.command("train-retriever", help="Train a retriever (text, clip or ciea) on query -> positive "
                                        "document pairs; writes a checkpoint folder.")(train_retriever)


def train_retriever(
    input: opt.Input = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Checkpoint folder to write.",
                                                   show_default=False)] = None,
    encoder: Annotated[str, opt.option(C, "encoder", "--encoder", envvar="IRTK_ENCODER")] = D(C, "encoder"),
    model: Annotated[Optional[str], opt.option(C, "model", "--model", envvar="IRTK_MODEL",
                                               show_default=False)] = None,
    text_model: Annotated[str, opt.option(C, "text_model", "--text-model")] = D(C, "text_model"),
    vision: Annotated[str, opt.option(C, "vision", "--vision")] = D(C, "vision"),
    extractor: Annotated[str, opt.option(C, "extractor", "--extractor")] = D(C, "extractor"),
    epochs: Annotated[int, opt.option(C, "epochs", "--epochs", min=1)] = D(C, "epochs"),
    lr: Annotated[float, opt.option(C, "lr", "--lr")] = D(C, "lr"),
    lr_new: Annotated[Optional[float], opt.option(C, "lr_new", "--lr-new", show_default=False)] = None,
    weight_decay: Annotated[float, opt.option(C, "weight_decay", "--weight-decay")] = D(C, "weight_decay"),
    warmup: Annotated[float, opt.option(C, "warmup", "--warmup")] = D(C, "warmup"),
    lambda_comp: Annotated[Optional[float], opt.option(C, "lambda_comp", "--lambda-comp",
                                                       show_default=False)] = None,
    comp_via_extractor: Annotated[bool, opt.option(C, "comp_via_extractor", "--comp-via-extractor")
                                  ] = D(C, "comp_via_extractor"),
    freeze_vision: Annotated[bool, opt.option(C, "freeze_vision", "--freeze-vision/--train-vision")
                             ] = D(C, "freeze_vision"),
    negatives_from: Annotated[Optional[Path], opt.option(C, "negatives_from", "--negatives-from",
                                                         show_default=False)] = None,
    docs: Annotated[Optional[Path], opt.option(C, "docs", "--docs", show_default=False)] = None,
    negatives_k: Annotated[int, opt.option(C, "negatives_k", "--negatives-k", min=1)] = D(C, "negatives_k"),
    negatives_pick: Annotated[str, opt.option(C, "negatives_pick", "--negatives-pick")] = D(C, "negatives_pick"),
    max_steps: Annotated[Optional[int], opt.option(C, "max_steps", "--max-steps", min=1,
                                                   show_default=False)] = None,
    save_every: Annotated[int, opt.option(C, "save_every", "--save-every", min=0)] = D(C, "save_every"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing checkpoint folder.")] = False,
    device: Device = None,
    batch_size: opt.BatchSize = D(C, "batch_size"),
    seed: opt.Seed = D(C, "seed"),
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Pairs are records with query, doc_id and the positive's text and optional image."""
    from irtk.cli import runtime
    from irtk.errors import UsageError
    from irtk.retrieval.train import train

    if output is None:
        raise UsageError("irtk train-retriever needs -o FOLDER for the checkpoint")
    cfg = C(encoder=encoder, model=model, text_model=text_model, vision=vision, extractor=extractor,
            epochs=epochs, batch_size=batch_size, lr=lr, lr_new=lr_new, weight_decay=weight_decay,
            warmup=warmup, lambda_comp=lambda_comp, comp_via_extractor=comp_via_extractor,
            freeze_vision=freeze_vision, negatives_from=str(negatives_from) if negatives_from else None,
            docs=str(docs) if docs else None, negatives_k=negatives_k, negatives_pick=negatives_pick,
            max_steps=max_steps, save_every=save_every, seed=seed, device=device)
    with runtime.progress("training") as advance:
        summary = train(input, output, cfg, force=force, log=runtime.info, warn=runtime.warn,
                        progress=advance)
    runtime.info(f"trained {summary['steps']} steps -> {output}")
