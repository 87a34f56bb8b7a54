"""``irtk retrieve``: search an index folder; hits or a TREC run; metrics against qrels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.cli.index import Device
from irtk.config import default_of as D
from irtk.retrieval.config import RetrieveConfig as C


def register(app: typer.Typer) -> None:
    app.command("retrieve", help="Search an index for each query (qid, query, optional image); "
                                 "hits, TREC runs and MRR/NDCG/Recall against qrels.")(retrieve)


def retrieve(
    input: opt.Input = None,
    index: Annotated[Optional[Path], typer.Option("--index", "-i", envvar="IRTK_INDEX",
                                                  help="Index folder from `irtk index`.", show_default=False)] = None,
    k: Annotated[int, opt.option(C, "k", "--k", "-k", min=1)] = D(C, "k"),
    output: opt.Output = None,
    format: Annotated[Optional[str], typer.Option("--format", envvar="IRTK_FORMAT",
                                                  help="jsonl, parquet or trec (qid Q0 docid rank score tag); "
                                                       "default from -o's extension (.trec/.run: trec).",
                                                  show_default=False)] = None,
    qrels: Annotated[Optional[Path], typer.Option("--qrels", help="TREC (4-column) or WebQA (3-column) qrels: "
                                                  "print MRR@10, NDCG@10, Recall@5/20/100, Hit@1.",
                                                  show_default=False)] = None,
    run: Annotated[Optional[Path], typer.Option("--run", help="Evaluate this run (TREC or hits) against "
                                                "--qrels; no index needed.", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option(
        "--report", "--metrics-out", help="Write the metrics here as JSON (atomically); "
        "--metrics-out is an alias.", show_default=False)] = None,
    ties: Annotated[str, opt.option(C, "ties", "--ties")] = D(C, "ties"),
    gain: Annotated[str, opt.option(C, "gain", "--gain")] = D(C, "gain"),
    average: Annotated[str, opt.option(C, "average", "--average")] = D(C, "average"),
    tag: Annotated[str, opt.option(C, "tag", "--tag")] = D(C, "tag"),
    search_params: Annotated[Optional[str], opt.option(C, "search_params", "--search-params",
                                                       show_default=False)] = None,
    mmap: Annotated[Optional[bool], opt.option(C, "mmap", "--mmap/--no-mmap", show_default=False)] = None,
    encoder: Annotated[Optional[str], opt.option(C, "encoder", "--encoder", show_default=False)] = None,
    model: Annotated[Optional[str], opt.option(C, "model", "--model", envvar="IRTK_MODEL",
                                               show_default=False)] = None,
    device: Device = None,
    batch_size: opt.BatchSize = D(C, "batch_size"),
    shard: opt.ShardOpt = None,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Hits go to stdout or -o; metrics (with --qrels) go to stderr, or to stdout as JSON when
    evaluating an existing --run. --shard K/N searches slice K of the queries (its metrics cover
    that slice; concatenate the shards' hits and evaluate them with --run for the whole)."""
    from irtk.cli import runtime
    from irtk.errors import UsageError
    from irtk.retrieval import search as lib

    opt.check_report(report)
    cfg = C(k=k, tag=tag, search_params=search_params, mmap=mmap, encoder=encoder, model=model,
            device=device, batch_size=batch_size, ties=ties, gain=gain, average=average)
    if run is not None:
        if qrels is None:
            raise UsageError("--run needs --qrels")
        if shard is not None:
            raise UsageError("--shard slices the queries to search; --run evaluates a whole run")
        result = lib.evaluate_run(run, qrels, cfg)
        _save(report, result)
        typer.echo(json.dumps(result))
        return
    if index is None:
        raise UsageError("irtk retrieve needs --index FOLDER (or --run with --qrels)")
    enc = None
    if encoder is not None:
        from irtk.retrieval.encoders import get_encoder

        enc = get_encoder(encoder, model, device=device)
    factory = None
    if device is not None:
        from irtk.retrieval.encoders import encoder_from_config

        def factory(built: dict):  # noqa: ANN202 - the index's own encoder on the chosen device
            return encoder_from_config(built, device=device)
    with runtime.progress("searching") as advance:
        result = lib.retrieve(input, index, cfg, output=output, fmt=format, encoder=enc,
                              encoder_factory=factory, qrels=qrels, progress=advance,
                              shard=opt.shard_of(shard))
    if result is not None:
        _save(report, result)
        if not quiet:
            runtime.console.print(format_metrics(result))


def format_metrics(result: dict) -> str:
    from irtk.retrieval.metrics import METRICS

    cells = "  ".join(f"{m} {result[m]:.4f}" for m in METRICS)
    extra = f"  ({result['queries']} judged queries"
    if result["queries_missing_from_run"]:
        extra += f", {result['queries_missing_from_run']} missing from the run"
    return cells + extra + ")"


def _save(path: Path | None, result: dict) -> None:
    from irtk.io import make_provenance

    opt.write_report(path, {**result, "provenance": make_provenance("retrieve")})
