"""Fixtures of the training tests: trajectories expanded from the example seeds (no LLM)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, run_irtk


@pytest.fixture(scope="session")
def trajectories(tmp_path_factory) -> str:
    """The example seeds' own graphs expanded into trajectories (irtk expand --no-build)."""
    out = tmp_path_factory.mktemp("traj") / "trajectories.parquet"
    proc = run_irtk("expand", str(ROOT / "examples" / "seeds.jsonl"), "--no-build", "-q", "-o", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    return str(out)


@pytest.fixture(scope="session")
def trajectory_rows(trajectories) -> list[dict]:
    from irtk.io import read_rows

    return read_rows(trajectories)
