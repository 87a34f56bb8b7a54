"""The trainer on a tiny random model: it learns, resumes exactly, and the per-token hook masks
tokens out of both the gradient and the token-mean denominator."""

from __future__ import annotations

from pathlib import Path

import pytest

from irtk.training import samples as S

REWARD = "tests.training.helpers:low_ids"


def _config(tmp_path: Path, model: str, **overrides):
    from irtk.training.trainer import make_config

    values = dict(stage="offline", model=model, reward=REWARD, learning_rate=3e-2, per_device_train_batch_size=8,
                  num_generations=4, max_completion_length=8, max_steps=12, logging_steps=1, save_steps=100,
                  seed=0, data_seed=0, report_to="none", use_cpu=True, bf16=False, beta=0.0, loss_type="dapo",
                  disable_tqdm=True, output_dir=str(tmp_path / "work"), max_prompt_length=256, max_samples=16,
                  gradient_checkpointing=False)
    values.update(overrides)
    return make_config("grpo", **values)


def _run(tmp_path, tiny_llama, rows, name="run", callbacks=(), resume=False, **overrides):
    from irtk.training.stages import run_offline

    cfg = _config(tmp_path, tiny_llama, **overrides)
    return run_offline(cfg, rows, [], output=tmp_path / name, split={}, resume=resume, callbacks=callbacks)


def _metrics(folder: Path) -> list[dict]:
    from irtk.training.plots import read_metrics

    return [r for r in read_metrics(folder) if r.get("reward") is not None]


def test_grpo_learns_a_learnable_reward(tmp_path, tiny_llama, trajectory_rows):
    out = _run(tmp_path, tiny_llama, trajectory_rows[:10], max_steps=24)
    rewards = [r["reward"] for r in _metrics(Path(out["output"]))]
    assert len(rewards) == 24
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.2, (first, last, rewards)


def test_killed_run_resumes_to_the_same_end(tmp_path, tiny_llama, trajectory_rows):
    from transformers import TrainerCallback

    rows = trajectory_rows[:10]
    full = _run(tmp_path, tiny_llama, rows, name="full", max_steps=6, save_steps=3)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:  # after the checkpoint at step 3
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, tiny_llama, rows, name="killed", max_steps=6, save_steps=3, callbacks=[Kill()])
    assert not (tmp_path / "killed").exists()  # no half checkpoint
    assert (tmp_path / "killed.work" / "checkpoint-3" / "metrics.parquet").exists()
    resumed = _run(tmp_path, tiny_llama, rows, name="killed", max_steps=6, save_steps=3, resume=True)
    assert resumed["steps"] == full["steps"] == 6
    a, b = _metrics(Path(full["output"])), _metrics(Path(resumed["output"]))
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b, strict=True):
        assert x["reward"] == pytest.approx(y["reward"], abs=1e-6)
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-6)
    import torch
    from transformers import AutoModelForCausalLM

    wa = AutoModelForCausalLM.from_pretrained(full["output"]).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(resumed["output"]).state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_hook_mask_leaves_gradient_and_denominator(tmp_path, tiny_llama, trajectory_rows):
    """A control that drops tokens gives the loss and gradient of TRL run on the narrowed mask."""
    import torch
    from trl import GRPOTrainer

    from irtk.entropy.config import CONTROLS, EntropyControlConfig
    from irtk.entropy.control import ControlResult
    from irtk.training.trainer import _grpo_trainer_class, reward_preset, to_dataset

    drop = {}

    def drop_odd(*, mask, **_):
        keep = mask.bool().clone()
        keep[:, 1::2] = False
        drop["keep"] = keep
        return ControlResult(keep=keep, stats={"clip_fraction": 0.5})

    CONTROLS.register("test-drop-odd", "tests.training.test_trainer:_DROP")
    globals()["_DROP"] = drop_odd
    cfg = _config(tmp_path, tiny_llama, max_steps=1)
    entropy = EntropyControlConfig(entropy_control="test-drop-odd")
    preset = reward_preset(cfg)
    cfg.reward_weights = preset.weights
    data = to_dataset(S.expert_samples(trajectory_rows[:2]), "grpo")
    trainer = _grpo_trainer_class()(model=tiny_llama, reward_funcs=preset.funcs, args=cfg, train_dataset=data,
                                    entropy=entropy)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    batch["advantages"] = torch.linspace(-1, 1, batch["advantages"].numel())  # non-zero gradient
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which is not running

    def loss_and_grad(fn, inputs):
        model.zero_grad()
        loss = fn(model, inputs)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    # Old log-probs away from the current ones, so the loss value itself depends on the mask.
    batch["old_per_token_logps"] = torch.full(batch["completion_mask"].shape, -3.0)
    before = batch["completion_mask"].clone()
    hooked, g1 = loss_and_grad(trainer._compute_loss, dict(batch))
    # The reference narrows TRL's loss mask through its own ``tool_mask``, which, like the hook,
    # leaves the attention mask alone (narrowing ``completion_mask`` itself would also hide the
    # dropped tokens from attention and change every later position's log-prob).
    narrowed = dict(batch, tool_mask=drop["keep"].to(batch["completion_mask"].dtype))
    plain, g2 = loss_and_grad(lambda m, i: GRPOTrainer._compute_loss(trainer, m, i), narrowed)
    full, _ = loss_and_grad(lambda m, i: GRPOTrainer._compute_loss(trainer, m, i), dict(batch))
    assert not torch.allclose(full, plain)  # the mask matters to the value: the check below can fail
    assert torch.allclose(hooked, plain, atol=1e-7)
    worst = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) for a, b in zip(g1, g2, strict=True))
    assert worst < 1e-4, worst  # float summation order only
    assert torch.equal(batch["completion_mask"], before)  # the hook narrows a private copy
    assert trainer._metrics["train"]["entropy_control/clip_fraction"] == [0.5]


def test_completions_end_at_the_first_stop_string(tmp_path, tiny_llama, trajectory_rows):
    """GRPO's completions are the turns simulate would play: each ends with the token that
    completes its first stop string, so the reward scores and the loss trains only that text."""
    from transformers import AutoTokenizer

    from irtk.training.trainer import _grpo_trainer_class, reward_preset, to_dataset

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    seen: list[list[int]] = []

    def record(prompts, completions, completion_ids=None, **_):
        seen.extend(completion_ids)
        return [0.0] * len(completions)

    cfg = _config(tmp_path, tiny_llama, max_steps=1, max_completion_length=24)
    cfg.reward_weights = reward_preset(cfg).weights
    data = to_dataset(S.expert_samples(trajectory_rows[:2]), "grpo")
    # "e" occurs in most tokens of SmolLM2's vocabulary, so a random model writes it early and often.
    trainer = _grpo_trainer_class()(model=tiny_llama, reward_funcs=[record], args=cfg, train_dataset=data,
                                    stop=("e",))
    trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert len(seen) == 8
    cut = 0
    for ids in seen:
        assert "e" not in tok.decode(ids[:-1], skip_special_tokens=True)
        if "e" in tok.decode(ids[-1:], skip_special_tokens=True):
            cut += 1
        else:
            assert len(ids) == 24 or ids[-1] == tok.eos_token_id  # never cut: ran to its end
    assert cut >= 4, [tok.decode(i) for i in seen]
