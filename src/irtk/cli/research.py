"""``irtk research``: clarify the intent, retrieve evidence, write a cited report; and
``irtk research-table``: the comparison table of several runs' ``--report`` files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.config import default_of as D
from irtk.research.config import ResearchConfig as C  # no torch: --help stays light

REQUEST_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".parquet", ".pq")
MARKDOWN_EXTENSIONS = (".md", ".markdown")


def register(app: typer.Typer) -> None:
    app.command(
        "research",
        help="Clarify a research request (interactive, simulated user, stated assumptions, or none), "
             "retrieve evidence from an index and write a report with checked [docid] citations. "
             "Input: request records (id, query, optional intents/graph) or one query in quotes.",
    )(research)
    app.command(
        "research-table",
        help="Compare `irtk research --report` files: a Markdown table of intent coverage, citation "
             "validity and length with request/seed-bootstrap 95% intervals.",
    )(research_table)


class _Requests:
    """A single query given on the command line, read like a one-record request file."""

    name = "<query>"

    def __init__(self, query: str) -> None:
        from irtk.research.requests import REQUEST

        self.row = {"id": "query", "query": query}
        REQUEST.validate(self.row, source="query argument")

    def batches(self) -> list[list[dict]]:
        return [[self.row]]


def _is_file_argument(value: str | None) -> bool:
    if value in (None, "-"):
        return True
    return Path(value).is_file() or value.lower().endswith(REQUEST_EXTENSIONS)


class _MarkdownWriter:
    """Reports as Markdown, to stdout or atomically to ``-o FILE.md``."""

    def __init__(self, output: Path | None) -> None:
        from irtk.errors import UsageError

        self.output = output
        self.parts: list[str] = []
        if output is not None and not output.parent.exists():
            raise UsageError(f"{output}: folder {output.parent} does not exist")

    def __enter__(self) -> _MarkdownWriter:
        return self

    def write_rows(self, rows: list[dict]) -> None:
        from irtk.research.agent import markdown

        texts = [markdown(r) for r in rows]
        if self.output is None:
            sys.stdout.write("\n".join(texts) + "\n")
            sys.stdout.flush()
        else:
            self.parts.extend(texts)

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if self.output is None or exc_type is not None:
            return
        from irtk.io import write_text

        write_text(self.output, "\n".join(self.parts) + "\n")


def _writer(output: Path | None, fmt: str | None, provenance: dict):
    from irtk.io import RecordWriter
    from irtk.records import REPORT
    from irtk.research.agent import output_schema

    markdown = (fmt or "").lower() == "markdown" or (
        fmt is None and (output.suffix.lower() in MARKDOWN_EXTENSIONS if output is not None
                         else sys.stdout.isatty()))
    if markdown:
        return _MarkdownWriter(output)
    return RecordWriter(output, fmt=fmt, record_type=REPORT, schema=output_schema(), provenance=provenance)


def research(
    input: Annotated[Optional[str], typer.Argument(
        metavar="[REQUESTS|QUERY]",
        help="Request records (JSONL/Parquet; '-' or nothing reads stdin), or one research request "
             "in quotes.", show_default=False)] = None,
    index: Annotated[Optional[str], opt.option(C, "index", "--index", "-i", envvar="IRTK_INDEX",
                                               show_default=False)] = None,
    docs: Annotated[Optional[str], opt.option(C, "docs", "--docs", show_default=False)] = None,
    clarify: Annotated[str, opt.option(C, "clarify", "--clarify")] = D(C, "clarify"),
    clarifier_model: Annotated[Optional[str], opt.option(C, "clarifier_model", "--clarifier-model",
                                                         show_default=False)] = None,
    backend: opt.Backend = D(C, "backend"),
    model: Annotated[str, opt.option(C, "model", "--model", envvar="IRTK_MODEL")] = D(C, "model"),
    base_url: opt.BaseUrl = None,
    dtype: opt.Dtype = D(C, "dtype"),
    max_turns: Annotated[int, opt.option(C, "max_turns", "--max-turns", min=1)] = D(C, "max_turns"),
    allow_stop: Annotated[bool, opt.option(C, "allow_stop", "--allow-stop")] = D(C, "allow_stop"),
    user: Annotated[str, opt.option(C, "user", "--user")] = D(C, "user"),
    summary: Annotated[str, opt.option(C, "summary", "--summary")] = D(C, "summary"),
    writer: Annotated[str, opt.option(C, "writer", "--writer")] = D(C, "writer"),
    k: Annotated[int, opt.option(C, "k", "--k", "-k", min=1)] = D(C, "k"),
    max_evidence: Annotated[int, opt.option(C, "max_evidence", "--max-evidence", min=1)] = D(C, "max_evidence"),
    report_sentences: Annotated[int, opt.option(C, "report_sentences", "--report-sentences", min=1)] = D(
        C, "report_sentences"),
    embedder: opt.Embedder = D(C, "embedder"),
    thresholds: Annotated[Optional[str], opt.option(C, "thresholds", "--thresholds", show_default=False)] = None,
    tau_rel: Annotated[Optional[float], opt.option(C, "tau_rel", "--tau-rel", show_default=False)] = None,
    temperature: Annotated[float, opt.option(C, "temperature", "--temperature", min=0.0)] = D(C, "temperature"),
    max_tokens: Annotated[int, opt.option(C, "max_tokens", "--max-tokens", min=1)] = D(C, "max_tokens"),
    writer_max_tokens: Annotated[int, opt.option(C, "writer_max_tokens", "--writer-max-tokens", min=1)] = D(
        C, "writer_max_tokens"),
    encoder: Annotated[Optional[str], typer.Option("--encoder", help="Check the index's encoder: a name "
                                                   "(text, clip, ciea, module:attr) that must match it.",
                                                   show_default=False)] = None,
    encoder_model: Annotated[Optional[str], typer.Option("--encoder-model", help="Encoder model (with --encoder).",
                                                         show_default=False)] = None,
    seed: opt.Seed = D(C, "seed"),
    repeats: Annotated[int, opt.option(C, "repeats", "--repeats", min=1)] = D(C, "repeats"),
    batch_size: opt.BatchSize = D(C, "batch_size"),
    limit: Annotated[Optional[int], opt.option(C, "limit", "--limit", min=0, show_default=False)] = None,
    bootstrap: Annotated[int, opt.option(C, "bootstrap", "--bootstrap", min=0)] = D(C, "bootstrap"),
    label: Annotated[Optional[str], opt.option(C, "label", "--label", show_default=False)] = None,
    shard: opt.ShardOpt = None,
    output: opt.Output = None,
    format: Annotated[Optional[str], typer.Option(
        "--format", envvar="IRTK_FORMAT", help="jsonl, parquet or markdown; default from -o's extension "
        "(.md: markdown), else markdown when stdout is a terminal, else jsonl.", show_default=False)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Also write one Markdown report per "
                                                    "request (and seed) into this folder.",
                                                    show_default=False)] = None,
    report: opt.Report = None,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Write one REPORT record per request (and seed); metrics go to stderr and --report.
    --shard K/N researches slice K of a request file (a query in quotes is never sliced)."""
    from irtk.cli import runtime
    from irtk.errors import UsageError
    from irtk.io import RecordReader, make_provenance
    from irtk.research.agent import run_research
    from irtk.research.evaluate import comparison_table
    from irtk.research.requests import REQUEST

    opt.check_report(report)
    if format is not None and format.lower() not in ("jsonl", "parquet", "markdown"):
        raise UsageError(f"--format must be jsonl, parquet or markdown, got {format!r}")
    cfg = C(index=index or "", docs=docs, clarify=clarify, backend=backend, model=model,
            clarifier_model=clarifier_model, base_url=base_url, dtype=dtype, max_turns=max_turns,
            allow_stop=allow_stop, user=user, summary=summary, writer=writer, k=k, max_evidence=max_evidence,
            report_sentences=report_sentences, embedder=embedder, thresholds=thresholds, tau_rel=tau_rel, temperature=temperature,
            max_tokens=max_tokens, writer_max_tokens=writer_max_tokens, seed=seed, repeats=repeats,
            batch_size=batch_size, limit=limit, bootstrap=bootstrap, label=label)
    if input in (None, "-") and sys.stdin.isatty():
        raise UsageError("irtk research needs a request in quotes, a request file, or records on stdin")
    part = None
    if _is_file_argument(input):
        part = opt.shard_of(shard)
        reader = RecordReader(input, record_type=REQUEST, batch_size=batch_size, shard=part)
    else:
        reader = _Requests(input)
    enc = None
    if encoder is not None:
        from irtk.retrieval.encoders import get_encoder

        enc = get_encoder(encoder, encoder_model)
    elif encoder_model is not None:
        raise UsageError("--encoder-model needs --encoder")
    if cfg.clarify == "interactive":
        runtime.state.progress = False  # a progress bar would draw over the questions
    provenance = make_provenance("research", source=reader.name, shard=str(part) if part else None,
                                 **cfg.recorded())
    with _writer(output, format, provenance) as out:
        with runtime.progress(f"research ({cfg.clarify})") as advance:
            result = run_research(cfg, reader, out, out_dir=out_dir, encoder=enc, warn=runtime.warn,
                                  progress=advance)
    if not runtime.state.quiet:
        runtime.console.print(comparison_table([result]).rstrip(), markup=False)
        fb = {k: v for k, v in result["fallbacks"].items() if v}
        if fb:
            runtime.info("fallbacks: " + ", ".join(f"{k} {v}" for k, v in fb.items()))
    opt.write_report(report, {**result, "provenance": provenance})


def research_table(
    reports: Annotated[list[Path], typer.Argument(help="`irtk research --report` JSON files, one table row each.")],
    output: opt.Output = None,
) -> None:
    """Print (or write with -o) the Markdown comparison table."""
    from irtk.errors import InputError
    from irtk.research.evaluate import comparison_table

    loaded = []
    for path in reports:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable report: {e}", source=str(path)) from None
        if not isinstance(data, dict) or data.get("stage") != "research":
            raise InputError("not an `irtk research --report` file", source=str(path))
        loaded.append(data)
    table = comparison_table(loaded)
    if output is None:
        sys.stdout.write(table)
    else:
        from irtk.io import write_text

        write_text(output, table)
