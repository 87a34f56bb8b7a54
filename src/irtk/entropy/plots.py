"""Figures of entropy audits and training runs (matplotlib, Agg backend: files only, no display).

- ``plot_audit``: entropy histogram; S_k against D_k coloured by advantage sign; predicted entropy
  change per unit learning rate (A * D) by advantage sign.
- ``plot_verify``: the one-step check's calibration (measured against predicted dH).
- ``plot_training_curves``: chosen columns of one or several ``metrics.parquet`` files against
  the step, one panel per column (or column pattern), runs side by side — the one drawing of
  training curves: ``irtk entropy-audit --metrics`` and the trainers' ``--plots``
  (``irtk.training.plots``) both use it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irtk.errors import InputError

POSITIVE, NEGATIVE, NEUTRAL = "#1b9e77", "#d95f02", "#7f7f7f"
DEFAULT_CURVES = ("entropy", "reward", "clip_fraction")
STEP_COLUMNS = ("step", "global_step")
MAX_SCATTER = 50_000  # points drawn; a seeded subsample beyond that keeps the figure readable


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    _pyplot().close(fig)
    tmp.replace(path)
    return path


def _subsample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_SCATTER:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_SCATTER, replace=False))


def _sign_groups(advantage: np.ndarray) -> list[tuple[str, np.ndarray, str]]:
    if np.isnan(advantage).all():
        return [("no advantage", np.ones(advantage.size, bool), NEUTRAL)]
    return [(label, sel, color) for label, sel, color in (
        ("A > 0", advantage > 0, POSITIVE), ("A < 0", advantage < 0, NEGATIVE),
        ("A = 0", advantage == 0, NEUTRAL)) if sel.any()]


def plot_audit(entropy: np.ndarray, s: np.ndarray, d: np.ndarray, advantage: np.ndarray,
               out_dir: str | Path, *, title: str = "") -> list[Path]:
    """The audit's three figures in ``out_dir``; returns their paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    suffix = f" — {title}" if title else ""

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.hist(entropy, bins=60, color="#4c72b0")
    ax.axvline(entropy.mean(), color="black", linestyle="--", label=f"mean {entropy.mean():.3f} nats")
    ax.set_yscale("log")
    ax.set_xlabel("per-token entropy H (nats)")
    ax.set_ylabel("tokens (log scale)")
    ax.set_title(f"Entropy of {entropy.size:,} completion tokens{suffix}")
    ax.legend()
    paths.append(_save(fig, out / "entropy_hist.png"))

    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    keep = _subsample(entropy.size)
    for label, sel, color in _sign_groups(advantage):
        idx = keep[sel[keep]]
        ax.scatter(s[idx], d[idx], s=6, alpha=0.5, color=color, label=f"{label} ({int(sel.sum()):,})")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("S_k = p_k (H + log p_k)")
    ax.set_ylabel("D_k = E_p[S] - S_k")
    ax.set_title(f"Discriminant vs discriminator{suffix}\n(dH ≈ lr·A·D: A>0 lowers H where D<0, A<0 where D>0)",
                 fontsize=10)
    ax.legend(markerscale=3)
    paths.append(_save(fig, out / "s_vs_d.png"))

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    predicted = advantage * d
    groups = [g for g in _sign_groups(advantage) if g[0] != "A = 0"]
    if np.isnan(advantage).all() or not groups:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no advantages in the input\n(give an advantage column, or rewards "
                    "with --group-by)", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    else:
        lo, hi = np.quantile(predicted, [0.005, 0.995])
        bins = np.linspace(lo, hi, 60) if hi > lo else 30
        for label, sel, color in groups:
            left.hist(predicted[sel], bins=bins, alpha=0.6, color=color, label=label)
        left.axvline(0, color="black", linewidth=0.6)
        left.set_yscale("log")
        left.set_xlabel("predicted dH per unit learning rate, A·D (central 99%)")
        left.set_ylabel("tokens (log scale)")
        left.legend()
        sums = [float(predicted[sel].sum()) for _, sel, _ in groups]
        right.bar([g[0] for g in groups], sums, color=[g[2] for g in groups])
        right.axhline(0, color="black", linewidth=0.6)
        right.set_ylabel("sum of A·D over tokens")
        right.set_title(f"net: {float(np.nansum(predicted)):+.3g}", fontsize=10)
    fig.suptitle(f"Predicted entropy change of one policy-gradient step{suffix}")
    paths.append(_save(fig, out / "predicted_dh.png"))
    return paths


def plot_verify(predicted: np.ndarray, measured: np.ndarray, advantage: np.ndarray, agreement: dict,
                out_dir: str | Path, *, name: str = "verify_calibration.png", xlabel: str = "predicted dH = lr·A·D") -> Path:
    """Measured against predicted per-token entropy change, with the least-squares line."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.0, 5.4))
    keep = _subsample(predicted.size)
    for label, sel, color in _sign_groups(advantage):
        idx = keep[sel[keep]]
        ax.scatter(predicted[idx], measured[idx], s=8, alpha=0.6, color=color, label=label)
    span = np.array([predicted.min(), predicted.max()])
    if agreement.get("slope") is not None:
        ax.plot(span, agreement["slope"] * span + agreement["intercept"], color="black",
                label=f"fit: slope {agreement['slope']:.3g}")
    ax.plot(span, span, color="black", linestyle=":", linewidth=0.8, label="measured = predicted")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.axvline(0, color="grey", linewidth=0.5)
    r = agreement.get("pearson")
    sign = agreement.get("sign_agreement")
    ax.set_title(f"One policy-gradient step, {agreement.get('n', 0):,} tokens\n"
                 f"Pearson r {r if r is None else f'{r:.3f}'}, sign agreement "
                 f"{sign if sign is None else f'{sign:.1%}'}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("measured dH (after - before)")
    ax.legend(markerscale=2, fontsize=8)
    return _save(fig, out / name)


def metrics_file(path: str | Path) -> Path:
    """A run's ``metrics.parquet``: the path itself, or the file inside a checkpoint folder."""
    path = Path(path)
    return path / "metrics.parquet" if path.is_dir() else path


def read_metric_columns(path: str | Path) -> dict[str, np.ndarray]:
    """The numeric columns of a ``metrics.parquet`` (or a checkpoint folder) as float arrays
    (missing values are NaN)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = metrics_file(path)
    if not path.exists():
        raise InputError("no such file", source=str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"not a readable Parquet file: {e}", source=str(path)) from None
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            out[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
    return out


def match_columns(data: Mapping[str, Any], spec: str) -> list[str]:
    """The columns one panel draws. ``spec`` is one or more alternatives joined by ``|``, each
    a column name, a glob pattern (``rewards/*/mean``: every match) or a bare name found inside
    a namespaced column (``clip_fraction`` finds the trainers' ``entropy_control/clip_fraction``,
    the first in name order). A name with an ``/all_tokens`` variant in the run draws that one:
    under a masking control TRL's ``entropy`` covers only the tokens left in the loss, the
    trainers' ``entropy/all_tokens`` every completion token, as an uncontrolled run's ``entropy``."""
    found: list[str] = []
    for part in (p.strip() for p in spec.split("|")):
        if part in data:
            matches = [f"{part}/all_tokens" if f"{part}/all_tokens" in data else part]
        elif any(ch in part for ch in "*?["):
            matches = sorted(c for c in data if fnmatch.fnmatchcase(c, part))
        else:
            matches = [c for c in sorted(data) if c.endswith("/" + part) or c.startswith(part + "/")][:1]
        found.extend(m for m in matches if m not in found)
    return found


def _run_label(path: Path, seen: set[str]) -> str:
    label = path.parent.name if path.name == "metrics.parquet" and path.parent.name else path.stem
    while label in seen:
        label += "'"
    seen.add(label)
    return label


def _load_runs(paths: Sequence[str | Path]) -> list[tuple[str, Path, dict[str, np.ndarray]]]:
    """(label, file, numeric columns) per run; labels are folder names, made unique."""
    runs, seen = [], set()
    for p in map(metrics_file, paths):
        runs.append((_run_label(p, seen), p, read_metric_columns(p)))
    return runs


def _steps(data: Mapping[str, np.ndarray], step: str | None, n: int) -> np.ndarray:
    """The x values: the step column (``step``, else ``global_step``), else the row number."""
    key = step or next((c for c in STEP_COLUMNS if c in data), None)
    return data[key] if key in data else np.arange(n, dtype=np.float64)


def curve_summary(paths: Sequence[str | Path], *, columns: Sequence[str] = DEFAULT_CURVES,
                  step: str | None = None) -> list[dict]:
    """The figures behind ``plot_training_curves``, one dict per run: ``run`` (its label),
    ``file``, and ``curves``: for each matched column, its logged ``steps`` and ``values`` and
    the ``first``, ``last`` and ``mean`` value (rows without the column are skipped)."""
    out = []
    for label, path, data in _load_runs(paths):
        curves = {}
        for spec in columns:
            for col in match_columns(data, spec):
                y = data[col]
                x = _steps(data, step, len(y))
                ok = ~np.isnan(y)
                if ok.any():
                    values = y[ok]
                    curves[col] = {"steps": [int(v) for v in x[ok]], "values": values.tolist(),
                                   "first": float(values[0]), "last": float(values[-1]),
                                   "mean": float(values.mean())}
        out.append({"run": label, "file": str(path), "curves": curves})
    return out


def plot_training_curves(paths: Sequence[str | Path], out_dir: str | Path, *,
                         columns: Sequence[str] = DEFAULT_CURVES, step: str | None = None,
                         name: str = "training_curves.png", skip_missing: bool = False) -> Path | None:
    """Chosen ``columns`` of one or several runs (``metrics.parquet`` files or checkpoint
    folders) against the step: one panel per entry of ``columns``, one line per run and matched
    column (see ``match_columns``), runs labelled by their folder. The step column is ``step``
    (else ``global_step``, else the row number). A panel no run has is an error, or left out
    with ``skip_missing`` (then ``None`` when nothing is left to draw); a run lacking a panel's
    column is left out of that panel. Both ``irtk entropy-audit --metrics`` and the trainers'
    ``--plots`` draw with it."""
    runs = _load_runs(paths)
    panels = []
    for spec in columns:
        lines = [(label, data, col) for label, _, data in runs for col in match_columns(data, spec)]
        if lines:
            panels.append((spec, lines))
        elif not skip_missing:
            available = sorted({c for _, _, data in runs for c in data})
            raise InputError(f"no file has a numeric column {spec!r} (columns: {', '.join(available)})",
                             source=str(runs[0][1]) if len(runs) == 1 else "metrics files")
    if not panels:
        return None
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    # A run keeps its colour and line style in every panel; the styles let equal curves show through.
    styles = {label: (f"C{i % 10}", ("-", "--", ":", "-.")[i % 4]) for i, (label, _, _) in enumerate(runs)}
    for ax, (spec, lines) in zip(axes[0], panels, strict=True):
        per_run = [label for label, _, _ in lines]
        several = len(per_run) > len(set(per_run))  # some run draws several columns here
        for label, data, col in lines:
            y = data[col]
            x = _steps(data, step, len(y))
            ok = ~np.isnan(y)
            if not ok.any():
                continue
            text = (f"{label}: {col}" if len(runs) > 1 else col) if several else label
            color, style = (None, "-") if several else styles[label]
            ax.plot(x[ok], y[ok], marker="o" if ok.sum() < 30 else None, markersize=3, label=text,
                    color=color, linestyle=style)
        ax.set_title(spec)
        ax.set_xlabel(step or "step")
        ax.grid(alpha=0.3)
        if several or ax is axes[0][0]:  # the run legend once; per panel where columns differ
            ax.legend(fontsize=7)
    fig.suptitle("Training curves")
    return _save(fig, out / name)
