"""The gate's thresholds on hand-labelled pairs that no threshold was picked on.

``irtk calibrate`` picks the thresholds on pairs derived from C-DAGs (calibration seeds) and
reports held-out seeds. This script is an independent check on a different kind of data: the
hand-written pairs of ``bench/data/gate_pairs.jsonl``:

- relevance: a question (with its options) and a latent intent, ``related`` or ``unrelated``;
- repetition: two questions, ``paraphrase`` (redundant) or ``distinct``;
- restatement: a question and the user's request, ``restates`` or ``distinct``.

It prints, per check, the cosine distribution per label and the balanced accuracy of the shipped
(or ``--thresholds``) values next to the paper's 0.8 / 0.92 on the same pairs.

    python bench/calibrate_gate.py [--embedder minilm-l6] [--thresholds FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "gate_pairs.jsonl"
CHECKS = (("relevance", "related", "unrelated", "tau_rel"),
          ("repetition", "paraphrase", "distinct", "tau_rep"),
          ("restatement", "restates", "distinct", "tau_req"))


def describe(values: np.ndarray) -> str:
    if values.size == 0:
        return "(none)"
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return "min {:.3f}  p10 {:.3f}  median {:.3f}  p90 {:.3f}  max {:.3f}  (n={})".format(*q, len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="minilm-l6")
    parser.add_argument("--thresholds", type=Path, help="thresholds JSON (default: the shipped ones)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    from irtk.dialogue.calibrate import balanced_accuracy
    from irtk.dialogue.gate import PAPER_THRESHOLDS, Thresholds
    from irtk.embedding import embed, load_embedder

    ours = Thresholds.load(args.thresholds) if args.thresholds else Thresholds.for_embedder(args.embedder)
    pairs = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    model = load_embedder(args.embedder)
    cos = np.sum(embed([p["a"] for p in pairs], model) * embed([p["b"] for p in pairs], model), axis=1)
    print(f"embedder: {args.embedder}   thresholds: {ours.source}   pairs: {len(pairs)}   data: {args.data}")
    for kind, positive, negative, name in CHECKS:
        mask = np.array([p["kind"] == kind for p in pairs])
        if not mask.any():
            continue
        scores = cos[mask]
        labels = np.array([p["label"] == positive for p in pairs])[mask]
        print(f"\n{kind}:")
        print(f"  {positive:<10} {describe(scores[labels])}")
        print(f"  {negative:<10} {describe(scores[~labels])}")
        for label, t in (("shipped", ours), ("paper's", PAPER_THRESHOLDS)):
            tau = getattr(t, name)
            print(f"  {label} {name} {tau:.3f}: balanced accuracy {balanced_accuracy(scores, labels, tau):.3f}")


if __name__ == "__main__":
    main()
