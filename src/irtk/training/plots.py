"""Training curves from ``metrics.parquet``: reward, each reward component and token entropy
against step, one or several runs side by side (PNG, matplotlib).

``plot_training_curves(runs, out_dir)`` takes run name -> metric rows, so ``irtk.entropy`` (or a
notebook) can draw its own runs with it; ``plot_runs`` reads checkpoint folders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

# Panels: (file stem, title, column predicate). Components are TRL's ``rewards/<name>/mean``.
_PANELS = (
    ("reward", "mean reward", lambda c: c == "reward"),
    ("reward_components", "reward components (mean)", lambda c: c.startswith("rewards/") and c.endswith("/mean")),
    ("entropy", "mean token entropy", lambda c: c in ("entropy", "entropy/all_tokens")),
    ("heldout", "held-out (simulate)", lambda c: c in ("eval/precision", "eval/recall", "eval/reward")),
)


def read_metrics(folder: str | Path) -> list[dict]:
    """The metric rows of a checkpoint folder (or a metrics.parquet path)."""
    import pyarrow.parquet as pq

    path = Path(folder)
    path = path / "metrics.parquet" if path.is_dir() else path
    return pq.read_table(path).to_pylist()


def plot_training_curves(runs: Mapping[str, Sequence[Mapping]], out_dir: str | Path) -> list[Path]:
    """One PNG per panel with a line per (run, column); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, title, wanted in _PANELS:
        fig, ax = plt.subplots(figsize=(7, 4))
        drawn = 0
        for run, rows in runs.items():
            columns = sorted({c for r in rows for c in r if wanted(c)})
            for col in columns:
                pts = sorted((r["step"], r[col]) for r in rows if r.get(col) is not None and r.get("step") is not None)
                if not pts:
                    continue
                label = col.removeprefix("rewards/").removesuffix("/mean")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None,
                        label=f"{run}: {label}" if len(runs) > 1 else label)
                drawn += 1
        if drawn:
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"{stem}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
        plt.close(fig)
    return written


def plot_runs(folders: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Curves of checkpoint folders, named by their folder names."""
    return plot_training_curves({Path(f).name: read_metrics(f) for f in folders}, out_dir)
