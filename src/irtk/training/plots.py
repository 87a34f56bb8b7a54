"""The trainers' ``--plots``: reward, each reward component, token entropy, the entropy
control's clip fraction and held-out metrics against step, one PNG per panel, one or several
runs side by side. The drawing is ``irtk.entropy.plots.plot_training_curves`` (the same one
``irtk entropy-audit --metrics`` uses); this module only picks the trainers' panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# File stem -> panel (column names or patterns, alternatives joined by "|"; see
# irtk.entropy.plots.match_columns). Components are TRL's ``rewards/<name>/mean``.
PANELS = {
    "reward": "reward",
    "reward_components": "rewards/*/mean",
    "entropy": "entropy",
    "clip_fraction": "entropy_control/clip_fraction",
    "heldout": "eval/precision|eval/recall|eval/reward",
}


def read_metrics(folder: str | Path) -> list[dict]:
    """The metric rows of a checkpoint folder (or a metrics.parquet path)."""
    import pyarrow.parquet as pq

    from irtk.entropy.plots import metrics_file

    return pq.read_table(metrics_file(folder)).to_pylist()


def plot_runs(folders: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """The panels of ``PANELS`` that any run logged, each as ``<stem>.png`` in ``out_dir``; runs
    are named by their folder names. Returns the files written."""
    from irtk.entropy.plots import plot_training_curves

    written = (plot_training_curves(folders, out_dir, columns=[panel], name=f"{stem}.png", skip_missing=True)
               for stem, panel in PANELS.items())
    return [p for p in written if p is not None]
