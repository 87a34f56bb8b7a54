"""A run folder summarised for a person: what ran, the key figures, where the files are.

The figures come from the ``--report`` JSON files the stages wrote into the folder (the library
behind ``irtk show --summary DIR``). A report is recognised by its content, not its name:
``irtk retrieve``'s carries the retrieval metrics, ``irtk simulate``'s its ``stage``, ``irtk
expand``'s its seed, graph and trajectory counts. A stage without a report in the folder is
named as missing, never filled in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from irtk.errors import InputError

# The stages summarised, in the order their lines are printed.
STAGES = ("retrieve", "expand", "simulate")
RETRIEVAL_FIGURES = ("MRR@10", "NDCG@10", "Recall@5", "Hit@1")
# f1_paper: IntentRL's F1, the harmonic mean of mean precision and mean recall.
INTENT_FIGURES = (("precision", "precision"), ("recall", "recall"), ("f1_paper", "F1"))
_EXPAND_KEYS = frozenset({"seeds", "graphs", "trajectories", "turns"})


def stage_of(data: object) -> str | None:
    """Which stage wrote a report (one of ``STAGES``), or None for any other JSON."""
    if not isinstance(data, Mapping):
        return None
    provenance = data.get("provenance")
    stage = data.get("stage") or (provenance.get("stage") if isinstance(provenance, Mapping) else None)
    if stage in STAGES:
        return stage
    if all(m in data for m in RETRIEVAL_FIGURES):
        return "retrieve"
    if _EXPAND_KEYS <= data.keys():
        return "expand"
    return None


def _count(n: object, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _num(x: object, spec: str) -> str:
    return "-" if not isinstance(x, (int, float)) else format(x, spec)


def _percent(metric: object) -> str:
    """An aggregated metric's mean (``{"mean": ...}``) as a percentage."""
    mean = metric.get("mean") if isinstance(metric, Mapping) else None
    return "-" if not isinstance(mean, (int, float)) else f"{100 * mean:.1f}%"


def _retrieve_line(data: Mapping) -> str:
    figures = ", ".join(f"{m} {_num(data.get(m), '.3f')}" for m in RETRIEVAL_FIGURES)
    return f"{_count(data.get('queries', '?'), 'judged query', 'judged queries')}: {figures}"


def _expand_line(data: Mapping) -> str:
    return (f"{data['seeds']} seeds -> {data['graphs']} graphs ({data.get('graphs_given', '?')} given, "
            f"{data.get('graphs_built', '?')} built, {data.get('graphs_failed', '?')} failed) -> "
            f"{data['trajectories']} trajectories, {data['turns']} turns")


def _simulate_line(data: Mapping) -> str:
    config = data.get("config") or {}
    policy = data.get("policy") or config.get("policy", "?")
    who = f"policy {policy}" + (f" ({config['model']})" if policy == "model" and config.get("model") else "")
    turns = f", at most {config['max_turns']} questions" if config.get("max_turns") else ""
    metrics = data.get("metrics") or {}
    figures = ", ".join(f"{label} {_percent(metrics.get(name))}" for name, label in INTENT_FIGURES)
    return f"{who}, {_count(data.get('dialogues', '?'), 'dialogue', 'dialogues')}{turns}: intent {figures}"


_LINES = {"retrieve": _retrieve_line, "expand": _expand_line, "simulate": _simulate_line}


def _size(n: int) -> str:
    step = min(int(math.log10(n)) // 3, 3) if n > 0 else 0
    return f"{n} B" if step == 0 else f"{n / 1000 ** step:.1f} {('kB', 'MB', 'GB')[step - 1]}"


def summary_lines(folder: str | Path) -> list[str]:
    """The summary of ``folder`` as lines of text: one line per report found (stage, figures,
    file), one per summarised stage without a report, one per JSON file that does not parse, then the
    folder's files and subfolders with their sizes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such folder", source=str(folder))
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    found: dict[str, list[tuple[str, str]]] = {s: [] for s in STAGES}
    unreadable: list[str] = []
    for path in entries:
        if path.suffix.lower() != ".json" or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            unreadable.append(f"  {path.name}: not readable as JSON ({e})")
            continue
        stage = stage_of(data)
        if stage is not None:
            found[stage].append((path.name, _LINES[stage](data)))
    count = sum(len(v) for v in found.values())
    lines = [f"Summary of {folder}/ ({_count(count, 'report', 'reports')})", "", "What ran, key figures:"]
    width = max(len(s) for s in STAGES) + len("irtk ")
    for stage in STAGES:
        for name, text in found[stage]:
            lines.append(f"  {'irtk ' + stage:<{width}}  {text}  [{name}]")
        if not found[stage]:
            lines.append(f"  {'irtk ' + stage:<{width}}  MISSING: no {stage} report in {folder}/ "
                         f"(the step did not run, failed, or ran without --report)")
    if unreadable:
        lines += ["", "Not summarised:", *unreadable]
    lines += ["", f"Files in {folder}/:"]
    for path in entries:
        if path.is_dir():
            inside = sum(1 for p in path.rglob("*") if p.is_file())
            lines.append(f"  {path.name + '/':<28} {_count(inside, 'file', 'files')}")
        elif path.is_file():
            lines.append(f"  {path.name:<28} {_size(path.stat().st_size)}")
    if not entries:
        lines.append("  (empty)")
    lines += ["", "Look inside a record file with `irtk show FILE --head 1` or `irtk show FILE --schema`."]
    return lines


# ----------------------------------------------------------------------------- the results page

ENTROPY_RULES = (("clipb", "Clip_B"), ("clipv", "Clip_V"), ("clip-cov", "Clip-Cov"), ("top-entropy", "top-entropy"))


def entropy_markdown(data: Mapping) -> str:
    """An ``irtk entropy-audit --report`` summary as Markdown: tokens, entropy, the share of tokens
    each rule would clip, and the predicted entropy change per unit learning rate by advantage sign."""
    lines = [f"{data.get('samples', '?')} samples, {data.get('tokens', '?')} completion tokens; token entropy "
             f"mean {_num(data.get('mean_entropy'), '.3f')}, median {_num(data.get('median_entropy'), '.3f')}, "
             f"90th percentile {_num(data.get('p90_entropy'), '.3f')} nats.", ""]
    rules = data.get("rules") or {}
    if rules:
        lines += ["| rule | tokens it would clip |", "|---|---:|"]
        for key, label in ENTROPY_RULES:
            frac = (rules.get(key) or {}).get("clip_fraction")
            if frac is not None:
                lines.append(f"| {label} | {100 * frac:.2f}% |")
        lines.append("")
    predicted = data.get("predicted_dh_per_lr")
    if predicted:
        lines += ["| advantage | tokens | predicted dH / lr (sum) |", "|---|---:|---:|"]
        lines += [f"| {sign} | {p['tokens']} | {_num(p.get('sum'), '.4g')} |" for sign, p in predicted.items()]
        lines.append("")
    return "\n".join(lines)


def _report_markdown(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, Mapping) and "mean_entropy" in data and "rules" in data:
        return entropy_markdown(data)
    stage = stage_of(data)
    if stage is None:
        raise InputError("not a report the results page knows (entropy-audit, retrieve, expand, simulate)",
                         source=str(path))
    return f"irtk {stage}: {_LINES[stage](data)}\n"


def results_page(items: list[tuple[str, str, Path]], output: Path, *, title: str, notes: list[str] = ()) -> str:
    """One Markdown page from the study's artefacts, in order: ``("table", heading, file.md)``
    includes a Markdown file, ``("report", heading, file.json)`` formats a stage's JSON report,
    ``("figure", caption, file.png)`` links a picture (relative to the page). A missing file is
    shown as missing on the page, never left out silently. Written atomically to ``output``."""
    import os

    output = Path(output)
    out = [f"# {title}", "", *notes, ""] if notes else [f"# {title}", ""]
    for kind, heading, path in items:
        path = Path(path)
        if kind not in ("table", "report", "figure"):
            raise ValueError(f"unknown item kind {kind!r}")
        if not path.is_file():
            out += ([f"## {heading}", ""] if kind != "figure" else []) + [f"*MISSING: {path} (the step did not run)*", ""]
            continue
        if kind == "figure":
            out += [f"![{heading}]({os.path.relpath(path, output.parent)})", "", f"*{heading}*", ""]
        elif kind == "table":
            out += [f"## {heading}", "", path.read_text(encoding="utf-8").rstrip(), ""]
        else:
            try:
                out += [f"## {heading}", "", _report_markdown(path).rstrip(), ""]
            except (UnicodeDecodeError, ValueError) as e:
                raise InputError(f"not readable as JSON ({e})", source=str(path)) from e
    from irtk.io import write_text

    text = "\n".join(out).rstrip() + "\n"
    write_text(output, text)
    return text


def _item(kind: str):
    def parse(value: str) -> tuple[str, str, Path]:
        import argparse

        if "=" not in value:
            raise argparse.ArgumentTypeError(f"expected TITLE=FILE, got {value!r}")
        heading, path = value.rsplit("=", 1)
        return kind, heading, Path(path)
    return parse


def main(argv: list[str] | None = None) -> int:
    """``python -m irtk.reports page OUT.md --title T [--note LINE] (--table|--report|--figure) TITLE=FILE ...``"""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m irtk.reports", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    page = sub.add_parser("page", help="write the results page (Markdown) from tables, reports and figures")
    page.add_argument("output", type=Path)
    page.add_argument("--title", required=True)
    page.add_argument("--note", action="append", default=[], help="a line under the title (repeatable)")
    for kind in ("table", "report", "figure"):
        page.add_argument(f"--{kind}", action="append", dest="items", default=[], metavar="TITLE=FILE",
                          type=_item(kind), help=f"a {kind} on the page, in command-line order")
    args = p.parse_args(argv)
    try:
        results_page(args.items, args.output, title=args.title, notes=args.note)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"results page: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
