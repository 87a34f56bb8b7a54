"""``irtk index``: encode documents into a faiss index folder; build shards, merge them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt

Encoder = Annotated[
    str, typer.Option("--encoder", envvar="IRTK_ENCODER", help="text, clip, ciea, or module:attr.")
]
EncoderModel = Annotated[
    Optional[str],
    typer.Option("--model", envvar="IRTK_ENCODER_MODEL",
                 help="text: a sentence-transformers model (default minilm-l6); clip: tiny, an "
                      "open_clip ARCH/TAG (ViT-B-32/openai) or a checkpoint; ciea: a checkpoint "
                      "folder from `irtk train-retriever`.", show_default=False),
]
Device = Annotated[
    Optional[str], typer.Option("--device", envvar="IRTK_DEVICE", help="cpu, cuda, mps (default: best available).",
                                show_default=False)
]


def register(app: typer.Typer) -> None:
    app.command("index", help="Encode documents (doc_id, text, optional image) into a faiss index folder.")(index)


def index(
    input: opt.Input = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="The index folder to write.",
                                                   show_default=False)] = None,
    encoder: Encoder = "text",
    model: EncoderModel = None,
    factory: Annotated[str, typer.Option("--factory", help="faiss factory string: Flat, HNSW32, IVF4096,PQ64, …")] = "Flat",
    train_size: Annotated[Optional[int], typer.Option("--train-size", min=1, help="Vectors sampled to train IVF/PQ "
                                                      "(default: 64 per list, 10k to 262k).", show_default=False)] = None,
    train_only: Annotated[bool, typer.Option("--train-only", help="Only train an empty IVF/PQ index (for shards).")] = False,
    trained: Annotated[Optional[Path], typer.Option("--trained", help="Start from this --train-only index folder.",
                                                    show_default=False)] = None,
    merge: Annotated[Optional[list[Path]], typer.Option("--merge", help="Merge these shard folders (repeat) into -o.",
                                                        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing index folder.")] = False,
    device: Device = None,
    batch_size: opt.BatchSize = 64,
    shard: opt.ShardOpt = None,
    seed: opt.Seed = 0,
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
    from irtk.retrieval import index as lib
    from irtk.retrieval.encoders import get_encoder

    enc = get_encoder(encoder, model, device=device)
    if train_only:
        meta = lib.train_only(input, output, enc, factory=factory, train_size=train_size,
                              batch_size=batch_size, seed=seed, force=force, warn=runtime.warn)
        runtime.info(f"trained {factory} on {meta['trained_on']} vectors -> {output}")
        return
    with runtime.progress("encoding documents") as advance:
        meta = lib.build_index(input, output, enc, factory=factory, batch_size=batch_size,
                               shard=opt.shard_of(shard), train_size=train_size, trained=trained,
                               seed=seed, force=force, progress=advance, warn=runtime.warn)
    runtime.info(f"indexed {meta['count']} documents ({meta['factory']}, {meta['dim']}-d) -> {output}")
