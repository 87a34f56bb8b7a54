"""``irtk index``: encode documents into a faiss index folder; build shards, merge them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.config import default_of as D
from irtk.retrieval.config import IndexConfig as C

# Shared with retrieve and train-retriever: one spelling of the encoder options.
EncoderModel = Annotated[Optional[str], opt.option(C, "model", "--model", envvar="IRTK_MODEL",
                                                   show_default=False)]
Device = Annotated[Optional[str], opt.option(C, "device", "--device", envvar="IRTK_DEVICE",
                                             show_default=False)]


def register(app: typer.Typer) -> None:
    app.command("index", help="Encode documents (doc_id, text, optional image) into a faiss index folder.")(index)


def index(
    input: opt.Input = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="The index folder to write.",
                                                   show_default=False)] = None,
    encoder: Annotated[str, opt.option(C, "encoder", "--encoder", envvar="IRTK_ENCODER")] = D(C, "encoder"),
    model: EncoderModel = None,
    factory: Annotated[str, opt.option(C, "factory", "--factory")] = D(C, "factory"),
    train_size: Annotated[Optional[int], opt.option(C, "train_size", "--train-size", min=1,
                                                    show_default=False)] = None,
    train_only: Annotated[bool, typer.Option("--train-only", help="Only train an empty IVF/PQ index (for shards).")] = False,
    trained: Annotated[Optional[Path], typer.Option("--trained", help="Start from this --train-only index folder.",
                                                    show_default=False)] = None,
    merge: Annotated[Optional[list[Path]], typer.Option("--merge", help="Merge these shard folders (repeat) into -o.",
                                                        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing index folder.")] = False,
    device: Device = None,
    batch_size: opt.BatchSize = D(C, "batch_size"),
    shard: opt.ShardOpt = None,
    seed: opt.Seed = D(C, "seed"),
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Write an index folder: faiss index, doc-id table, encoder config, provenance.

    Documents are JSONL/Parquet records with doc_id, text and an optional image (a path, bytes
    or base64). --shard K/N builds the slice K of N; `irtk index --merge A --merge B -o OUT`
    combines them (IVF shards on disk: start them from one --train-only index via --trained).
    """
    from irtk.cli import runtime
    from irtk.errors import UsageError

    if output is None:
        raise UsageError("irtk index needs -o FOLDER for the index")
    if merge:
        from irtk.retrieval.index import merge_indexes

        meta = merge_indexes(list(merge), output, force=force)
        runtime.info(f"merged {len(merge)} shards: {meta['count']} documents -> {output}")
        return
    cfg = C(encoder=encoder, model=model, factory=factory, train_size=train_size,
            batch_size=batch_size, seed=seed, device=device)
    from irtk.retrieval.index import index_documents

    with runtime.progress("encoding documents") as advance:
        meta = index_documents(input, output, cfg, only_train=train_only, shard=opt.shard_of(shard),
                               trained=trained, force=force, progress=advance, warn=runtime.warn)
    if train_only:
        runtime.info(f"trained {cfg.factory} on {meta['trained_on']} vectors -> {output}")
    else:
        runtime.info(f"indexed {meta['count']} documents ({meta['factory']}, {meta['dim']}-d) -> {output}")
