"""The trainers' --plots: one PNG per panel any run logged, drawn by irtk.entropy.plots."""

from __future__ import annotations

from pathlib import Path


def _write(folder: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(pa.table({"step": pa.array([1, 2], pa.int64()), **columns}), folder / "metrics.parquet")
    return folder


def test_plot_runs_writes_the_panels_the_runs_logged(tmp_path):
    from irtk.training.plots import PANELS, plot_runs, read_metrics

    base = {"reward": [0.1, 0.3], "rewards/content_reward/mean": [0.1, 0.2],
            "rewards/format_reward/mean": [0.0, 0.1], "entropy": [3.5, 3.4]}
    plain = _write(tmp_path / "none", base)
    clipped = _write(tmp_path / "clipb", {**base, "entropy_control/clip_fraction": [0.0, 0.004]})
    written = plot_runs([clipped, plain], tmp_path / "plots")
    assert sorted(p.name for p in written) == ["clip_fraction.png", "entropy.png", "reward.png",
                                               "reward_components.png"]  # no eval/* column: no held-out panel
    assert set(PANELS) == {p.stem for p in written} | {"heldout"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert read_metrics(plain) == read_metrics(plain / "metrics.parquet")
    assert [r["entropy"] for r in read_metrics(plain)] == [3.5, 3.4]
