"""JSONL -> Parquet through `irtk show` vs plain pyarrow, on the same file in the same run.

Prints rows/s for both and their ratio (target: irtk >= 0.7x pyarrow), and irtk's peak RSS on a
10x larger input relative to the 1x input (target <= 1.5x). Both tools run as child processes so
their peak RSS is measured the same way.

    python bench/io.py [--rows 1000000] [--scale 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PYARROW_BASELINE = """
import sys, pyarrow.json as pj, pyarrow.parquet as pq
pq.write_table(pj.read_json(sys.argv[1]), sys.argv[2], compression="zstd")
"""


def make_jsonl(path: Path, rows: int) -> None:
    words = "retrieval entropy clarification intent graph policy reward index query".split()
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({
                "id": f"doc-{i:08d}",
                "text": " ".join(words[(i + k) % len(words)] for k in range(12)),
                "score": (i % 997) / 997.0,
                "rank": i % 100,
                "tags": [words[i % 9], words[(i * 7) % 9]],
                "meta": {"source": "bench", "shard": i % 16},
            }) + "\n")


def timed_child(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    wrapper = ("import resource, subprocess, sys, time\n"
               "t = time.perf_counter()\n"
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    seconds, rss = out.stdout.split()
    return float(seconds), int(rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=int(os.environ.get("IRTK_BENCH_ROWS", 1_000_000)))
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    irtk = shutil.which("irtk", path=str(Path(sys.executable).parent)) or "irtk"

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one, big = tmp / "x1.jsonl", tmp / f"x{args.scale}.jsonl"
        make_jsonl(one, args.rows)
        with open(big, "wb") as out:
            for _ in range(args.scale):
                with open(one, "rb") as src:
                    shutil.copyfileobj(src, out)
        size_mb = one.stat().st_size / 1e6
        print(f"input: {args.rows:,} rows, {size_mb:.0f} MB JSONL; {args.scale}x file {args.scale * size_mb:.0f} MB")

        # Interleave the two tools so machine noise hits both alike; keep the best of N.
        base_t, irtk_t = [], []
        for _ in range(args.repeat):
            base_t.append(timed_child([sys.executable, "-c", PYARROW_BASELINE, str(one), str(tmp / "b.parquet")]))
            irtk_t.append(timed_child([irtk, "show", str(one), "-o", str(tmp / "i.parquet")]))
        (bt, brss), (it, irss) = min(base_t), min(irtk_t)
        print(f"pyarrow read_json + write_table: {args.rows / bt:12,.0f} rows/s  ({bt:.2f} s, peak RSS {brss / 1024:.0f} MiB)")
        print(f"irtk show -o x.parquet:          {args.rows / it:12,.0f} rows/s  ({it:.2f} s, peak RSS {irss / 1024:.0f} MiB)")
        print(f"throughput ratio irtk/pyarrow: {bt / it:.2f}x  (target >= 0.70)")

        bigt, bigrss = timed_child([irtk, "show", str(big), "-o", str(tmp / "i10.parquet")])
        print(f"irtk on the {args.scale}x input: {args.rows * args.scale / bigt:,.0f} rows/s, peak RSS {bigrss / 1024:.0f} MiB")
        print(f"peak RSS ratio {args.scale}x/1x: {bigrss / irss:.2f}x  (target <= 1.50)")


if __name__ == "__main__":
    main()
