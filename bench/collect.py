"""Run every benchmark under bench/ and write one table of their ratios (bench/results.md).

Each benchmark prints its figures, with ratios written as ``1.23x`` against a baseline measured
in the same process. This keeps every line that states a ratio, with the command and its wall
time, so one page shows where irtk stands; the full output of each script is kept below the table.

    python bench/collect.py                  # every bench/*.py with its default arguments
    python bench/collect.py --quick          # smaller sizes where a script offers them
    python bench/collect.py --only entropy   # a subset, by script name
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATIO = re.compile(r"\d+\.\d+\s*[x×](?![\w-])")  # 1.23x; not "10x input"
# Arguments that keep `--quick` runs short; scripts not listed run with their defaults.
QUICK = {"retrieval.py": ["--n", "20000", "--skip-encoders"], "io.py": ["--rows", "200000"],
         "simulate.py": ["--dialogues", "16"], "expand.py": ["--repeat", "2"], "entropy.py": ["--repeats", "3"],
         "train.py": ["--steps", "4", "--repeats", "1", "--real-steps", "2"],
         "decode_floor.py": ["--batches", "16,32", "--width", "300"], "sampler.py": ["--rounds", "10"],
         "attention.py": ["--rounds", "10"]}
SKIP = {"collect.py"}


def run(script: Path, args: list[str]) -> tuple[int, float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    return done.returncode, time.perf_counter() - started, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes where a script offers them")
    ap.add_argument("--only", nargs="*", default=None, help="script names (without .py) to run")
    ap.add_argument("-o", "--output", type=Path, default=HERE / "results.md")
    args = ap.parse_args(argv)
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in SKIP)
    if args.only:
        scripts = [p for p in scripts if p.stem in set(args.only)]
    rows, sections, failed = [], [], []
    for script in scripts:
        extra = QUICK.get(script.name, []) if args.quick else []
        print(f"== {script.name} {' '.join(extra)}", file=sys.stderr, flush=True)
        code, seconds, output = run(script, extra)
        print(output, file=sys.stderr)
        if code != 0:
            failed.append(script.name)
        ratios = [line.strip() for line in output.splitlines() if RATIO.search(line)]
        for line in ratios or ["(no ratio printed)"]:
            rows.append(f"| `{script.name}` | {line.replace('|', '/')} |")
        status = "ok" if code == 0 else f"exit {code}"
        sections.append(f"### `bench/{script.name} {' '.join(extra)}` ({status}, {seconds:.0f} s)\n\n"
                        f"```\n{output.strip()}\n```\n")
    page = [
        "# Benchmark ratios",
        "",
        f"`python bench/collect.py{' --quick' if args.quick else ''}` on {platform.node()} "
        f"({platform.processor() or platform.machine()}), {dt.datetime.now():%Y-%m-%d %H:%M}. "
        "Ratios are against a baseline run in the same process; absolute times on a shared "
        "machine are not comparable.",
        "",
        "| benchmark | figure |",
        "|---|---|",
        *rows,
        "",
        "## Full output",
        "",
        *sections,
    ]
    args.output.write_text("\n".join(page) + "\n", encoding="utf-8")
    print(f"wrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
