"""Every data stage honours --shard K/N (and Slurm's array variables): the shards' outputs,
concatenated, hold exactly the rows of the unsharded run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_irtk

SEEDS = ROOT / "examples" / "seeds.jsonl"


def _rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _by_id(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["id"])


def _sharded(args: list[str], n: int, **kw) -> list[dict]:
    out = []
    for k in range(n):
        r = run_irtk(*args, "--shard", f"{k}/{n}", "--format", "jsonl", **kw)
        assert r.returncode == 0, r.stderr
        out += _rows(r.stdout)
    return out


def test_expand_shards_concatenate_to_the_whole():
    args = ["expand", str(SEEDS), "--no-build", "-q"]
    whole = run_irtk(*args, "--format", "jsonl")
    assert whole.returncode == 0, whole.stderr
    assert _by_id(_sharded(args, 3)) == _by_id(_rows(whole.stdout))


def test_slurm_array_variables_choose_the_shard():
    args = ["expand", str(SEEDS), "--no-build", "-q", "--format", "jsonl"]
    explicit = run_irtk(*args, "--shard", "1/3").stdout
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"}
    assert run_irtk(*args, env=env).stdout == explicit and explicit


@pytest.mark.slow
def test_simulate_shards_concatenate_to_the_whole(tmp_path):
    traj = tmp_path / "traj.jsonl"
    r = run_irtk("expand", str(SEEDS), "--no-build", "-q", "--format", "jsonl")
    traj.write_bytes(b"\n".join(r.stdout.splitlines()[:10]) + b"\n")
    args = ["simulate", str(traj), "--policy", "oracle", "--summary", "template", "--max-turns", "3", "-q"]
    whole = run_irtk(*args, "--format", "jsonl")
    assert whole.returncode == 0, whole.stderr

    def strip(rows: list[dict]) -> list[dict]:  # timings differ from run to run
        return [{k: v for k, v in row.items() if k not in ("seconds",)} for row in rows]

    assert strip(_by_id(_sharded(args, 2))) == strip(_by_id(_rows(whole.stdout)))
