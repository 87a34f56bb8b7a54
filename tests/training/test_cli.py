"""The train commands end to end (subprocess) and their start-up failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_irtk

REWARD = "tests.training.helpers:low_ids"
SMALL = ("--max-steps", "2", "--max-samples", "8", "--max-completion-length", "8", "--batch-size", "4",
         "--group-size", "2", "-q")


def _one_line_error(proc, code):
    err = proc.stderr.decode().strip()
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_batch_not_divisible_by_group_fails_at_start(tmp_path, tiny_llama, trajectories):
    proc = run_irtk("train-offline", trajectories, "-o", str(tmp_path / "ck"), "--model", tiny_llama,
                    "--batch-size", "6", "--group-size", "4")
    assert "divisible by num_generations" in _one_line_error(proc, 2)
    assert not (tmp_path / "ck").exists()


def test_unknown_content_mode_fails_at_start(tmp_path, tiny_llama, trajectories):
    proc = run_irtk("train-offline", trajectories, "-o", str(tmp_path / "ck"), "--model", tiny_llama,
                    "--content", "gated")
    assert "--content must be one of cosine, answered" in _one_line_error(proc, 2)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("param, message", [
    ("nope=1", "nope: not a parameter of the entropy controls"),
    ("clipb_mu=high", "clipb_mu: expects a number, got 'high'"),
    ("clipb_mu", "expects KEY=VALUE"),
])
def test_bad_entropy_param_fails_at_start(tmp_path, tiny_llama, trajectories, param, message):
    proc = run_irtk("train-offline", trajectories, "-o", str(tmp_path / "ck"), "--model", tiny_llama,
                    "--entropy-control", "clipb", "--entropy-param", param)
    assert message in _one_line_error(proc, 2)
    assert not (tmp_path / "ck").exists()


def test_unknown_reward_fails_at_start(tmp_path, tiny_llama, trajectories):
    proc = run_irtk("train-offline", trajectories, "-o", str(tmp_path / "ck"), "--model", tiny_llama,
                    "--reward", "stage9")
    assert "--reward must be one of" in _one_line_error(proc, 2)


def test_eval_seed_in_training_set_fails_at_start(tmp_path, tiny_llama, trajectories):
    proc = run_irtk("train-offline", trajectories, "-o", str(tmp_path / "ck"), "--model", tiny_llama,
                    "--eval", trajectories)
    assert "also occur in the training data" in _one_line_error(proc, 2)


def test_use_vllm_on_cpu_says_why(tmp_path, tiny_llama, trajectories):
    proc = run_irtk("train-offline", trajectories, "-o", str(tmp_path / "ck"), "--model", tiny_llama, "--use-vllm")
    assert "vLLM cannot do on CPU" in _one_line_error(proc, 2)


@pytest.mark.slow
def test_offline_then_online_checkpoints_plug_into_simulate(tmp_path, tiny_llama, trajectories):
    """Stage I and Stage II (real presets, real embedder) write loadable checkpoints with metrics
    and provenance, evaluated on held-out seeds; the checkpoint is a --model for simulate."""
    import pyarrow.parquet as pq

    s1 = tmp_path / "stage1"
    proc = run_irtk("train-offline", trajectories, "-o", str(s1), "--model", tiny_llama, "--holdout", "0.2",
                    "--eval-limit", "4", "--eval-max-turns", "1", "--eval-every", "1", "--lora-r", "4",
                    "--plots", str(tmp_path / "plots"), *SMALL, timeout=1800)
    assert proc.returncode == 0, proc.stderr.decode()
    prov = json.loads((s1 / "provenance.json").read_text())
    assert prov["stage"] == "train-offline" and prov["reward"]["name"] == "stage1"
    assert not set(prov["split"]["train_seeds"]) & set(prov["split"]["eval_seeds"])
    metrics = pq.read_table(s1 / "metrics.parquet").to_pylist()
    cols = set().union(*metrics)
    assert {"step", "loss", "reward", "reward_std", "rewards/content_reward/mean", "rewards/format_reward/mean",
            "entropy", "learning_rate", "wall_time", "eval/precision", "eval/recall"} <= cols
    assert (tmp_path / "plots" / "reward.png").exists()
    assert not (s1 / "adapter_config.json").exists()  # LoRA merged into a plain model
    assert not Path(str(s1) + ".work").exists()

    s2 = tmp_path / "stage2"
    proc = run_irtk("train-online", trajectories, "-o", str(s2), "--model", tiny_llama, "--rollout-model", str(s1),
                    "--holdout", "0.2", "--eval-limit", "4", "--eval-max-turns", "1", "--rollout-turns", "1", "--rollout-limit", "4",
                    "--prefix-max", "2", *SMALL, timeout=1800)
    assert proc.returncode == 0, proc.stderr.decode()
    prov = json.loads((s2 / "provenance.json").read_text())
    assert prov["reward"]["name"] == "stage2" and prov["data"]["rollout_samples"] > 0
    assert set(prov["data"]["prefix_turns"]) <= {"0", "1", "2"}

    dialogs = tmp_path / "d.parquet"
    proc = run_irtk("simulate", trajectories, "--policy", "model", "--model", str(s2), "--limit", "2",
                    "--max-turns", "1", "--summary", "template", "--max-tokens", "8", "-q", "-o", str(dialogs))
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(pq.read_table(dialogs)) == 2


def test_sft_ablation_writes_a_checkpoint(tmp_path, tiny_llama, trajectories):
    """--method sft: TRL's SFTTrainer on the expert questions (no embedder), loadable weights."""
    import pyarrow.parquet as pq
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sft"
    proc = run_irtk("train-offline", trajectories, "-o", str(out), "--model", tiny_llama, "--method", "sft",
                    "--max-steps", "2", "--max-samples", "8", "--batch-size", "4", "-q", timeout=1800)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((out / "provenance.json").read_text())["method"] == "sft"
    assert [r["step"] for r in pq.read_table(out / "metrics.parquet").to_pylist() if r.get("loss") is not None] == [1, 2]
    AutoModelForCausalLM.from_pretrained(out)
