"""An offline real-image testbed where the caption describes part of the image.

Images are scikit-learn's bundled handwritten digits (1,797 scans, 8×8), two side by side on a
16×16 sheet. A document's caption names the archive it was filed in, its ink, and *one* of the
two digits with its side ("… The left digit is a seven."); the other digit is only in the
image. A query asks for both digits by side and the archive ("handwritten seven on the left and
two on the right, from the Oslo archive"); its relevant documents are exactly the sheets with
those digits on those sides from that archive, whichever digit their caption names.

So a query needs the named content (caption or image) and the unnamed content (image only). A
text-only retriever can match the archive and the named digit but must guess the other; a sum of
caption and image embeddings counts the named digit twice; CIEA's extractor is meant to keep
what the image adds. Train and test sheets use disjoint scans (split once, seed 0).

This module builds the testbed, tabulates runs and reads a CIEA's extractor weights; the
driver that trains, indexes and evaluates each model (``python -m irtk.cli.testbed``) lives
with the CLI, since it runs ``irtk train-retriever`` in-process. ``make testbed`` runs every
model over several seeds and prints the table.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from irtk.retrieval.images import encode_png

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ARCHIVES = ("Lisbon", "Oslo", "Kyoto")
INKS = ("blue", "black", "grey")
SIDES = ("left", "right")
# The models compared: train-retriever options (the first two also pick the encoder to index with).
MODELS = {
    "text-only": ["--encoder", "text", "--model", "tiny"],
    "clip-sum": ["--encoder", "clip", "--model", "tiny"],
    "ciea": ["--encoder", "ciea", "--text-model", "tiny", "--vision", "tiny"],
    "ciea-no-comp": ["--encoder", "ciea", "--text-model", "tiny", "--vision", "tiny", "--lambda-comp", "0"],
}


def build(out: str | Path, *, seed: int = 0, test_fraction: float = 0.25, train_sheets: int = 1000,
          test_sheets: int = 450) -> dict:
    """Write train-pairs.jsonl, test-docs.jsonl, test-queries.jsonl and test.qrels under ``out``;
    returns counts."""
    from PIL import Image
    from sklearn.datasets import load_digits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.target))
    n_test = int(round(len(order) * test_fraction))
    pools = {"test": order[:n_test], "train": order[n_test:]}

    def sheet(pool: np.ndarray, i: int, split: str) -> tuple[dict, tuple[int, int, int]]:
        left, right = rng.choice(pool, size=2, replace=False)
        archive, ink, named = (int(rng.integers(len(ARCHIVES))), int(rng.integers(len(INKS))),
                               int(rng.integers(2)))
        canvas = np.zeros((16, 16))
        canvas[4:12, 0:8] = data.images[left]
        canvas[4:12, 8:16] = data.images[right]
        pixels = (canvas * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(255 - pixels, mode="L")  # dark ink on white paper
        digits = (int(data.target[left]), int(data.target[right]))
        doc_id = f"{split}-{i:04d}"
        number = i + (5000 if split == "test" else 0)  # a form number, the same form in both splits
        text = (f"Scanned form {number:04d} from the {ARCHIVES[archive]} archive, written in "
                f"{INKS[ink]} ink. The {SIDES[named]} digit is a {DIGITS[digits[named]]}.")
        return {"doc_id": doc_id, "text": text, "image": encode_png(image)}, (*digits, archive)

    def query(key: tuple[int, int, int]) -> str:
        left, right, archive = key
        return (f"handwritten {DIGITS[left]} on the left and {DIGITS[right]} on the right, "
                f"from the {ARCHIVES[archive]} archive")

    def write(name: str, rows: list[dict]) -> None:
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    train = [sheet(pools["train"], i, "train") for i in range(train_sheets)]
    write("train-pairs.jsonl", [{"qid": d["doc_id"], "query": query(key), **d} for d, key in train])
    test = [sheet(pools["test"], i, "test") for i in range(test_sheets)]
    write("test-docs.jsonl", [d for d, _ in test])
    groups: dict[tuple[int, int, int], list[str]] = {}
    for d, key in test:
        groups.setdefault(key, []).append(d["doc_id"])
    queries, qrels = [], []
    for key, members in sorted(groups.items()):
        qid = f"{DIGITS[key[0]]}-{DIGITS[key[1]]}-{ARCHIVES[key[2]].lower()}"
        queries.append({"qid": qid, "query": query(key)})
        qrels += [f"{qid} 0 {doc_id} 1\n" for doc_id in members]
    write("test-queries.jsonl", queries)
    (out / "test.qrels").write_text("".join(qrels))
    return {"train_pairs": len(train), "test_docs": len(test), "test_queries": len(queries)}


def extractor_weights(checkpoint: str | Path, docs: str | Path) -> dict:
    """Mean extractor weight w of a trained CIEA over ``docs``' sheets, by region: the patches of
    the digit the caption names, of the other digit, and the blank rows. If the extractor finds
    what the caption says, w is lower on the named digit than on the other one."""
    import torch

    from irtk.retrieval.encoders.ciea import CieaEncoder
    from irtk.retrieval.images import decode_image

    enc = CieaEncoder.load(checkpoint, device="cpu")
    enc.module.eval()
    rows = [json.loads(line) for line in Path(docs).read_text().splitlines()]
    grid = enc.meta["image_size"] // enc.meta["vision"]["cfg"]["patch_size"]
    if grid != 4:
        raise ValueError("the regions assume a 4x4 patch grid (the tiny ViT on 32 px)")
    sums = {"named": 0.0, "unnamed": 0.0, "blank": 0.0}
    counts = dict.fromkeys(sums, 0)
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            batch = rows[start:start + 64]
            w = enc.patch_weights([r["text"] for r in batch], [decode_image(r["image"]) for r in batch])
            for row, weights in zip(batch, w.view(len(batch), grid, grid), strict=True):
                named = 0 if "The left digit" in row["text"] else 2  # first column of its half
                for region, cells in (("named", weights[1:3, named:named + 2]),
                                      ("unnamed", weights[1:3, 2 - named:4 - named]),
                                      ("blank", torch.cat([weights[0], weights[3]]))):
                    sums[region] += float(cells.sum())
                    counts[region] += cells.numel()
    return {region: sums[region] / counts[region] for region in sums}


def _model_of(path: str) -> str:
    """``ciea-seed2.json`` → ``ciea``: runs of one model over several seeds share a row."""
    return re.sub(r"-seed\d+$", "", Path(path).stem)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def table(paths: list[str]) -> str:
    """A Markdown table of ``--report`` files: one row per model (``MODEL-seedK.json`` files
    grouped), each cell the mean over seeds ± the sample standard deviation, in percent; then
    MRR@10's 95% confidence interval over seeds (Student's t) and the seeds' range."""
    from scipy.stats import t

    from irtk.retrieval.metrics import METRICS

    groups: dict[str, list[dict]] = {}
    for p in paths:
        groups.setdefault(_model_of(p), []).append(json.loads(Path(p).read_text()))
    lines = ["| model | seeds | " + " | ".join(METRICS) + " | MRR@10 95% CI | MRR@10 min–max |",
             "|---" * (len(METRICS) + 4) + "|"]
    for model, runs in groups.items():
        # One seed has no spread: its cells are the values alone, its interval and range "–".
        one = len(runs) == 1
        cells = [f"{mean:.1f}" if one else f"{mean:.1f} ± {sd:.1f}" for mean, sd in
                 (_mean_sd([100 * r[m] for r in runs]) for m in METRICS)]
        mrr = [100 * r["MRR@10"] for r in runs]
        mean, sd = _mean_sd(mrr)
        if one:
            interval = spread = "–"
        else:
            half = float(t.ppf(0.975, len(mrr) - 1)) * sd / math.sqrt(len(mrr))
            interval, spread = f"{mean - half:.1f}–{mean + half:.1f}", f"{min(mrr):.1f}–{max(mrr):.1f}"
        lines.append(f"| {model} | {len(runs)} | " + " | ".join(cells) + f" | {interval} | {spread} |")
    return "\n".join(lines)
