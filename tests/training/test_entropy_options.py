"""Every ``--entropy-control`` option on a short ``train-offline`` run of a tiny random model
(the CLI in-process): it runs, and metrics.parquet logs token entropy and the option's clip
fraction every step; TRL's own rules (top-entropy, bonus) reach TRL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

REWARD = "tests.training.helpers:low_ids"
# One step of 2 prompts x 2 completions of 8 tokens, prompts cut to 64 tokens.
TINY = ("--max-steps", "1", "--max-samples", "4", "--max-completion-length", "8", "--batch-size", "4",
        "--group-size", "2", "--max-prompt-length", "64", "--seed", "0", "-q")
OPTIONS = ("none", "clipb", "clipv", "clip-cov", "kl-cov", "top-entropy", "bonus")
# What each control logs besides its clip fraction (irtk.entropy.control's statistics).
EXTRA = {"clipb": {"mean_s", "var_s", "clip_fraction_neg"}, "clipv": {"std_d", "flagged_fraction", "clip_fraction_neg"},
         "clip-cov": {"cov_band_fraction"}, "kl-cov": {"abs_kl"}, "top-entropy": set(), "bonus": set()}


@pytest.fixture(scope="module")
def few_trajectories(tmp_path_factory, trajectory_rows) -> str:
    """Three trajectories (reading and checking all of them would take longer than the run)."""
    from irtk.dialogue.simulate import SIMULATE_INPUT
    from irtk.io import dumps, read_rows

    path = tmp_path_factory.mktemp("few") / "trajectories.jsonl"
    path.write_text("".join(dumps(r) + "\n" for r in trajectory_rows[:3]), encoding="utf-8")
    assert len(read_rows(str(path), record_type=SIMULATE_INPUT)) == 3
    return str(path)


def _train(tmp_path: Path, model: str, trajectories: str, *args: str) -> tuple[int, Path]:
    from irtk.cli.main import run

    out = tmp_path / "ck"
    code = run(["train-offline", trajectories, "-o", str(out), "--model", model, "--reward", REWARD, *TINY, *args])
    return code, out


def test_every_option_is_tested():
    from irtk.entropy.config import CONTROLS

    assert set(CONTROLS) == set(OPTIONS)


@pytest.mark.parametrize("option", OPTIONS)
def test_short_run_logs_entropy_and_clip_fraction(option, tmp_path, tiny_llama, few_trajectories):
    from irtk.training.plots import read_metrics

    code, out = _train(tmp_path, tiny_llama, few_trajectories, "--entropy-control", option)
    assert code == 0
    steps = [r for r in read_metrics(out) if r.get("reward") is not None]
    assert [r["step"] for r in steps] == [1]
    columns = set().union(*steps)
    assert all(r["entropy"] is not None and r["entropy"] > 0 for r in steps)  # TRL's mean token entropy
    control = {c.removeprefix("entropy_control/") for c in columns if c.startswith("entropy_control/")}
    trl = json.loads((out / "provenance.json").read_text())["trl"]
    if option == "none":
        assert not control and "entropy/all_tokens" not in columns and "entropy_coef" not in columns
        assert trl["top_entropy_quantile"] == 1.0 and trl["entropy_coef"] == 0.0
        return
    assert {"clip_fraction"} | EXTRA[option] <= control
    fractions = [r["entropy_control/clip_fraction"] for r in steps]
    assert all(f is not None and not math.isnan(f) and 0.0 <= f <= 1.0 for f in fractions), fractions
    assert all(r["entropy/all_tokens"] is not None for r in steps)  # the hook's own entropy log
    if option == "top-entropy":
        # TRL's own 80/20 rule: its config field is set, and its mask (get_high_entropy_mask, run
        # only when TRL's trainer holds a quantile below 1) leaves out about 80 % of the tokens.
        assert trl["top_entropy_quantile"] == 0.2
        assert all(0.6 <= f <= 0.9 for f in fractions), fractions
    elif option == "bonus":
        # TRL logs its coefficient only when its entropy bonus is part of the loss.
        assert trl["entropy_coef"] == 1e-3
        assert all(r["entropy_coef"] == pytest.approx(1e-3) for r in steps)
        assert fractions == [0.0]
    else:
        assert trl["top_entropy_quantile"] == 1.0 and trl["entropy_coef"] == 0.0


def test_trl_rule_given_twice_disagreeing_is_a_usage_error(tmp_path, tiny_llama, few_trajectories, capsys):
    code, out = _train(tmp_path, tiny_llama, few_trajectories, "--entropy-control", "top-entropy",
                       "--top-entropy-quantile", "0.5")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "sets TRL's top_entropy_quantile to 0.2" in err
    assert not out.exists()


def test_a_control_that_clips_nothing_leaves_the_run_unchanged(tmp_path, peaked_llama, few_trajectories):
    """Clip_B at mu = 1000 clips no token; with LoRA's dropout active, its statistics pass must
    still draw nothing from the random stream, so the sampled completions, rewards, entropies and
    losses of both steps are those of the uncontrolled run (a peaked model: its entropies and
    rewards depend on the sampled tokens)."""
    from irtk.training.plots import read_metrics

    runs = {}
    for option in ("none", "clipb"):
        (tmp_path / option).mkdir()
        code, out = _train(tmp_path / option, peaked_llama, few_trajectories, "--entropy-control", option,
                           "--entropy-param", "clipb_mu=1000", "--max-steps", "2", "--lora-r", "4")
        assert code == 0
        runs[option] = [r for r in read_metrics(out) if r.get("reward") is not None]
    assert [r["entropy_control/clip_fraction"] for r in runs["clipb"]] == [0.0, 0.0]
    for plain, clipped in zip(runs["none"], runs["clipb"], strict=True):
        for key in ("reward", "entropy", "loss", "completions/mean_length"):
            assert clipped[key] == pytest.approx(plain[key], rel=1e-6, abs=1e-9), (plain["step"], key)
