"""IntentRL's Table 1 in miniature: split trajectories by seed, then compare clarifiers'
simulated dialogues on the held-out seeds with seed-bootstrap intervals.

    python -m irtk.training.table split TRAJ --holdout 0.25 --seed 0 --train T.parquet --heldout H.parquet
    python -m irtk.training.table table NAME=DIALOGS.parquet ... [--json OUT]

The table's rows are ``irtk simulate`` outputs on the same held-out trajectories. Per dialogue:
mean turn reward (``R = beta * R_con * [P == 0] + R_fmt - P``, penalties on), intent precision
and recall, the quality score. Intervals resample *seeds* (all dialogues of a seed together),
not dialogues: dialogues grown from one seed are not independent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

METRICS = ("reward", "precision", "recall", "quality")


def dialogue_values(row: Mapping) -> dict:
    """The table's numbers for one dialogue (None where undefined, e.g. no question asked)."""
    rewards = [t["reward"] for t in row.get("turns") or [] if t.get("reward") is not None]
    return {"reward": float(np.mean(rewards)) if rewards else None, "precision": row.get("precision"),
            "recall": row.get("recall"), "quality": row.get("quality")}


def seed_bootstrap(rows: Sequence[Mapping], metric: str, *, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean over dialogues and a 95% percentile interval from resampling seeds with replacement."""
    by_seed: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = dialogue_values(r)[metric]
        if v is not None:
            by_seed[str(r.get("seed_id") or r["id"])].append(float(v))
    seeds = sorted(by_seed)
    if not seeds:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "seeds": 0}
    values = [np.asarray(by_seed[s]) for s in seeds]
    mean = float(np.concatenate(values).mean())
    rng = np.random.default_rng(seed)
    sums = np.array([v.sum() for v in values])
    counts = np.array([v.size for v in values])
    picks = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean": mean, "ci_low": float(low), "ci_high": float(high), "n": int(counts.sum()), "seeds": len(seeds)}


def table(runs: Mapping[str, Sequence[Mapping]], resamples: int = 2000) -> dict:
    return {name: {m: seed_bootstrap(rows, m, resamples=resamples) for m in METRICS} for name, rows in runs.items()}


def markdown(result: Mapping[str, Mapping]) -> str:
    head = "| clarifier | mean turn reward | intent precision % | intent recall % | quality | dialogues (seeds) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name, ms in result.items():
        cells = []
        for m in METRICS:
            v = ms[m]
            if v["mean"] is None:
                cells.append("–")
                continue
            scale = 100.0 if m in ("precision", "recall") else 1.0
            cells.append(f"{v['mean'] * scale:.2f} [{v['ci_low'] * scale:.2f}, {v['ci_high'] * scale:.2f}]")
        n = ms["reward"]["n"] or ms["recall"]["n"]
        lines.append(f"| {name} | {' | '.join(cells)} | {n} ({ms['recall']['seeds']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from irtk.io import RecordWriter, read_rows
    from irtk.training.samples import split_by_seed, split_record

    ap = argparse.ArgumentParser(prog="python -m irtk.training.table")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("split", help="split trajectories by seed into train and held-out files")
    sp.add_argument("trajectories")
    sp.add_argument("--holdout", type=float, default=0.25)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--train", required=True)
    sp.add_argument("--heldout", required=True)
    sp.add_argument("--per-seed", type=int, default=None, help="held-out trajectories per seed at most")
    tp = sub.add_parser("table", help="held-out table from simulate outputs (NAME=FILE ...)")
    tp.add_argument("runs", nargs="+")
    tp.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "split":
        rows = read_rows(args.trajectories)
        train, held = split_by_seed(rows, args.holdout, args.seed)
        if args.per_seed is not None:  # the first N of each held-out seed, in id order
            taken: dict[str, int] = defaultdict(int)
            kept = []
            for r in sorted(held, key=lambda r: str(r["id"])):
                key = str(r.get("seed_id") or r["id"])
                if taken[key] < args.per_seed:
                    taken[key] += 1
                    kept.append(r)
            held = kept
        for path, part in ((args.train, train), (args.heldout, held)):
            with RecordWriter(path) as w:
                w.write_rows(part)
        print(json.dumps(split_record(train, held, holdout=args.holdout, seed=args.seed)), file=sys.stderr)
        return 0
    runs = {}
    for item in args.runs:
        name, _, path = item.partition("=")
        runs[name] = read_rows(path)
    result = table(runs)
    print(markdown(result))
    if args.json:
        from irtk.io import write_report

        write_report(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
