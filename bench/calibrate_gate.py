"""Calibrate the simulated user's gate thresholds (--tau-rep, --tau-rel) for an embedder.

The IntentRL paper set tau_rep = 0.92 and tau_rel = 0.8 for all-mpnet-base-v2. Cosines are not
comparable across embedders, so this script embeds a small hand-labelled set
(bench/data/gate_pairs.jsonl):

- relevance pairs: a clarification question (as asked, with its options) and a latent intent,
  labelled ``related`` (the question asks about that intent) or ``unrelated``;
- repetition pairs: two questions, labelled ``paraphrase`` (the same question reworded, which the
  user should call redundant) or ``distinct`` (another question about the same request).

For each kind it prints the cosine distribution per label and picks the threshold with the best
balanced accuracy, preferring the middle of the widest gap between the classes; it also prints
how the paper's thresholds fare on the same pairs.

    python bench/calibrate_gate.py [--embedder minilm-l6]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "gate_pairs.jsonl"
PAPER = {"relevance": 0.8, "repetition": 0.92}


def balanced_accuracy(pos: np.ndarray, neg: np.ndarray, threshold: float, pos_above: bool) -> float:
    if pos_above:
        return 0.5 * (np.mean(pos > threshold) + np.mean(neg <= threshold))
    return 0.5 * (np.mean(pos < threshold) + np.mean(neg >= threshold))


def pick_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """Threshold (positives above it) with the best balanced accuracy, widest margin on ties."""
    points = np.unique(np.concatenate([pos, neg]))
    candidates = (points[:-1] + points[1:]) / 2
    best = (-1.0, -1.0, 0.0)
    for i, t in enumerate(candidates):
        acc = balanced_accuracy(pos, neg, t, pos_above=True)
        margin = points[i + 1] - points[i]
        if (acc, margin) > best[:2]:
            best = (acc, margin, float(t))
    return best[2], best[0]


def describe(values: np.ndarray) -> str:
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return "min {:.3f}  p10 {:.3f}  median {:.3f}  p90 {:.3f}  max {:.3f}  (n={})".format(*q, len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="minilm-l6")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    from irtk.embedding import embed, load_embedder

    pairs = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    model = load_embedder(args.embedder)
    a = embed([p["a"] for p in pairs], model)
    b = embed([p["b"] for p in pairs], model)
    cos = np.sum(a * b, axis=1)
    print(f"embedder: {args.embedder}   pairs: {len(pairs)}   data: {args.data}")
    for kind, positive, negative, option in (
        ("relevance", "related", "unrelated", "--tau-rel"),
        ("repetition", "paraphrase", "distinct", "--tau-rep"),
    ):
        labels = np.array([p["label"] if p["kind"] == kind else "" for p in pairs])
        pos, neg = cos[labels == positive], cos[labels == negative]
        print(f"\n{kind}:")
        print(f"  {positive:<10} {describe(pos)}")
        print(f"  {negative:<10} {describe(neg)}")
        threshold, acc = pick_threshold(pos, neg)
        paper = balanced_accuracy(pos, neg, PAPER[kind], pos_above=True)
        print(f"  chosen {option} {threshold:.2f}: balanced accuracy {acc:.3f}")
        print(f"  paper's {PAPER[kind]:.2f} (for all-mpnet-base-v2) on this embedder: "
              f"balanced accuracy {paper:.3f}")


if __name__ == "__main__":
    main()
