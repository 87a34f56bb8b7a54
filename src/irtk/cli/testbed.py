"""The CIEA testbed's driver: ``python -m irtk.cli.testbed`` (``make testbed`` calls it).

    python -m irtk.cli.testbed build OUT          # train pairs, test docs/queries/qrels
    python -m irtk.cli.testbed run OUT MODEL SEED… [--train-args=ARGS]
                                                  # train, index, retrieve: OUT/MODEL-seedSEED.json
    python -m irtk.cli.testbed table FILE.json…   # Markdown table, grouped by model
    python -m irtk.cli.testbed weights CKPT DOCS  # a CIEA's extractor weights by region

The testbed itself (data, table, extractor weights) is :mod:`irtk.retrieval.testbed`; this
driver lives with the CLI because it trains through ``irtk train-retriever``'s own option
parsing, in-process.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from irtk.retrieval.testbed import MODELS, build, extractor_weights, table


def run(out: str | Path, model: str, seed: int, train_args: list[str]) -> Path:
    """Train ``model`` with ``seed`` on OUT's train pairs, index OUT's test documents with the
    saved checkpoint and evaluate on the test queries; returns the metrics file
    (``OUT/MODEL-seedSEED.json``). One process does all three, through the same library calls as
    ``irtk train-retriever``, ``irtk index`` and ``irtk retrieve`` (training through the CLI
    in-process), because starting three processes per run costs more than a small run here."""
    from irtk.cli.main import run as irtk
    from irtk.io import write_report
    from irtk.retrieval.config import IndexConfig, RetrieveConfig
    from irtk.retrieval.index import index_documents
    from irtk.retrieval.search import retrieve

    out = Path(out)
    name = f"{model}-seed{seed}"
    ckpt, index = out / name, out / f"{name}-index"
    status = irtk(["train-retriever", str(out / "train-pairs.jsonl"), "-o", str(ckpt), *MODELS[model],
                   "--seed", str(seed), *train_args])
    if status:
        raise SystemExit(status)
    encoder = MODELS[model][1]
    index_documents(out / "test-docs.jsonl", index, IndexConfig(encoder=encoder, model=str(ckpt)), force=True)
    metrics = retrieve(out / "test-queries.jsonl", index, RetrieveConfig(k=100, tag=name),
                       output=out / f"{name}.trec", qrels=out / "test.qrels")
    report = out / f"{name}.json"
    write_report(report, {**metrics, "model": model, "seed": seed, "train_args": train_args})
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m irtk.cli.testbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build").add_argument("out")
    p = sub.add_parser("run")
    p.add_argument("out")
    p.add_argument("model", choices=list(MODELS))
    p.add_argument("seeds", type=int, nargs="+")
    p.add_argument("--train-args", default="", help="extra train-retriever options, one string")
    sub.add_parser("table").add_argument("files", nargs="+")
    p = sub.add_parser("weights", help="mean extractor weight by region of a trained CIEA")
    p.add_argument("checkpoint")
    p.add_argument("docs")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(json.dumps(build(args.out)), file=sys.stderr)
    elif args.command == "run":
        for seed in args.seeds:  # one process for all seeds: starting one costs minutes here
            run(args.out, args.model, seed, shlex.split(args.train_args))
    elif args.command == "weights":
        print(json.dumps(extractor_weights(args.checkpoint, args.docs)))
    else:
        print(table(args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
