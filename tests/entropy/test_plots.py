"""Training curves from metrics.parquet: which columns a panel draws, runs given as files or
checkpoint folders, panels no run has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irtk.entropy.plots import match_columns, plot_training_curves, read_metric_columns
from irtk.errors import InputError


def _write(folder: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / "metrics.parquet")
    return folder


def test_match_columns_by_name_pattern_namespace_and_alternatives():
    data = dict.fromkeys(["reward", "entropy", "entropy/all_tokens", "entropy_control/clip_fraction",
                          "entropy_control/clip_fraction_neg", "rewards/b/mean", "rewards/a/mean",
                          "rewards/a/std", "eval/recall", "eval/precision"], np.zeros(1))
    # the all-token variant where the run logged one (a masking control's TRL entropy covers only
    # the kept tokens), else the exact name, else a namespaced one
    assert match_columns(data, "entropy") == ["entropy/all_tokens"]
    assert match_columns({"entropy": 0, "entropy_coef": 0}, "entropy") == ["entropy"]
    assert match_columns({"kl": 0, "entropy_control/kl": 0}, "kl") == ["kl"]
    assert match_columns(data, "clip_fraction") == ["entropy_control/clip_fraction"]
    assert match_columns(data, "rewards/*/mean") == ["rewards/a/mean", "rewards/b/mean"]
    assert match_columns(data, "eval/precision|eval/recall|eval/reward") == ["eval/precision", "eval/recall"]
    assert match_columns(data, "kl") == []


def test_runs_as_folders_side_by_side_and_missing_panels(tmp_path):
    import pyarrow as pa

    a = _write(tmp_path / "a", {"step": pa.array([1, 2, 3], pa.int64()), "entropy": [1.0, 0.9, 0.7],
                                "entropy_control/clip_fraction": [0.0, 0.01, 0.02]})
    b = _write(tmp_path / "b", {"step": pa.array([1, 2], pa.int64()), "entropy": [1.0, None]})
    assert read_metric_columns(a)["entropy"].tolist() == [1.0, 0.9, 0.7]
    assert np.isnan(read_metric_columns(b / "metrics.parquet")["entropy"][1])
    path = plot_training_curves([a, b], tmp_path / "plots", columns=["entropy", "clip_fraction", "kl"],
                                skip_missing=True)
    assert path == tmp_path / "plots" / "training_curves.png"
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert plot_training_curves([a, b], tmp_path / "plots", columns=["kl"], skip_missing=True) is None
    with pytest.raises(InputError, match="no file has a numeric column 'kl'"):
        plot_training_curves([a, b], tmp_path / "plots", columns=["entropy", "kl"])
