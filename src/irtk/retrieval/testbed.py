"""An offline real-image testbed where the image carries what the caption lacks.

Images are scikit-learn's bundled handwritten digits (1,797 scans, 8×8). Every document is a
digit image with a caption that names the archive it was filed in and its ink, but never the
digit; a query asks for a digit from an archive ("handwritten seven from the Lisbon archive"),
and its relevant documents are exactly the images of that digit filed in that archive. A
text-only retriever can find the archive but must guess the digit; a multimodal one can read it
off the image.

    python -m irtk.retrieval.testbed build OUT      # train pairs, test docs/queries/qrels
    python -m irtk.retrieval.testbed table A.json…  # a Markdown table of metrics files
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from irtk.retrieval.images import encode_png

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ARCHIVES = ("Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Quebec", "Tartu", "Perth")
INKS = ("blue", "black", "grey")


def build(out: str | Path, *, seed: int = 0, test_fraction: float = 0.25) -> dict:
    """Write train-pairs.jsonl, train-docs.jsonl, test-docs.jsonl, test-queries.jsonl and
    test.qrels under ``out``; returns counts."""
    from PIL import Image
    from sklearn.datasets import load_digits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    rng = np.random.default_rng(seed)
    n = len(data.target)
    archive = rng.integers(0, len(ARCHIVES), size=n)
    ink = rng.integers(0, len(INKS), size=n)
    order = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    test, train = set(order[:n_test].tolist()), order[n_test:]

    def doc(i: int) -> dict:
        pixels = (data.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(255 - pixels, mode="L")  # dark ink on white paper
        return {"doc_id": f"form-{i:04d}",
                "text": f"Scanned form {i:04d} from the {ARCHIVES[archive[i]]} archive, "
                        f"written in {INKS[ink[i]]} ink.",
                "image": encode_png(image)}

    def query(i: int) -> str:
        return f"handwritten {DIGITS[data.target[i]]} from the {ARCHIVES[archive[i]]} archive"

    def write(name: str, rows: list[dict]) -> None:
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("train-pairs.jsonl", [{"qid": f"train-{i:04d}", "query": query(i), **doc(i)} for i in train])
    write("train-docs.jsonl", [doc(i) for i in sorted(train)])
    test_ids = sorted(test)
    write("test-docs.jsonl", [doc(i) for i in test_ids])
    groups: dict[tuple[int, int], list[int]] = {}
    for i in test_ids:
        groups.setdefault((int(data.target[i]), int(archive[i])), []).append(i)
    queries, qrels = [], []
    for (digit, arch), members in sorted(groups.items()):
        qid = f"{DIGITS[digit]}-{ARCHIVES[arch].lower()}"
        queries.append({"qid": qid, "query": query(members[0])})
        qrels += [f"{qid} 0 form-{i:04d} 1\n" for i in members]
    write("test-queries.jsonl", queries)
    (out / "test.qrels").write_text("".join(qrels))
    return {"train_pairs": len(train), "test_docs": len(test_ids), "test_queries": len(queries)}


def table(paths: list[str]) -> str:
    """A Markdown table of ``--metrics-out`` files, one row per file (named by its stem)."""
    from irtk.retrieval.metrics import METRICS

    lines = ["| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for p in paths:
        m = json.loads(Path(p).read_text())
        lines.append(f"| {Path(p).stem} | " + " | ".join(f"{100 * m[k]:.2f}" for k in METRICS) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "build":
        print(json.dumps(build(argv[1])), file=sys.stderr)
        return 0
    if len(argv) >= 2 and argv[0] == "table":
        print(table(argv[1:]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
