"""Seconds per step of `irtk train-offline` against a bare TRL `GRPOTrainer`, and a short real run.

Part 1 (overhead): the same tiny random Llama (SmolLM2's tokenizer), the same turn samples from
`irtk expand examples/seeds.jsonl --no-build`, the same reward (the format reward: no embedder,
so the trainers' own cost is what is measured) and the same GRPOConfig values, trained for
--steps steps (a) by irtk's Stage I runner (turn samples, composed config, the trainer subclass
with its hook and logging, checkpoint artefacts) and (b) by a bare `GRPOTrainer`. Time is TRL's
own `train_runtime` divided by the steps; the order alternates over --repeats and the best of
each is kept, so drifting machine load favours neither. Target: irtk / bare <= 1.15.

Part 2 (real run, --real-steps > 0): Stage I on the embedded SmolLM2-135M with LoRA on CPU and
the stage1 preset (beta * content + format, the real embedder): seconds per step, peak resident
memory and the reward per step.

    python bench/train.py [--steps 8] [--repeats 2] [--real-steps 3] [--entropy-control none]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = dict(learning_rate=1e-4, per_device_train_batch_size=8, num_generations=4, max_completion_length=16,
              logging_steps=1, save_steps=1000, seed=0, data_seed=0, report_to="none", use_cpu=True, bf16=False,
              beta=0.0, loss_type="dapo", disable_tqdm=True, gradient_checkpointing=False)


def format_only(*, rewards=None, allow_stop=False, **_):
    """A preset with the stage presets' format reward alone (no embedder)."""
    from irtk.dialogue.rewards import DEFAULT_REWARDS, RewardPreset

    return RewardPreset("format", [DEFAULT_REWARDS.format_reward], [1.0])


def trajectories() -> list[dict]:
    import json

    irtk = Path(sys.executable).with_name("irtk")
    out = subprocess.run([str(irtk), "expand", str(ROOT / "examples" / "seeds.jsonl"), "--no-build", "--format",
                          "jsonl", "-q"], capture_output=True, check=True)
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def tiny_model(folder: Path) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from irtk.models import resolve

    tok = AutoTokenizer.from_pretrained(resolve("smollm2-135m-instruct"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def irtk_run(model: str, rows: list[dict], steps: int, work: Path, control: str) -> float:
    from irtk.entropy.config import EntropyControlConfig
    from irtk.training.stages import run_offline
    from irtk.training.trainer import make_config

    cfg = make_config("grpo", stage="offline", model=model, reward="bench.train:format_only", max_steps=steps,
                      max_samples=64, max_prompt_length=512, output_dir=str(work / "w"),
                      entropy=EntropyControlConfig(entropy_control=control), **COMMON)
    run_offline(cfg, rows, [], output=work / "ck", split={})
    runtime = [r for r in _history(work / "ck") if r.get("train_runtime")][-1]["train_runtime"]
    return runtime / steps


def _history(folder: Path) -> list[dict]:
    from irtk.training.plots import read_metrics

    return read_metrics(folder)


def bare_run(model: str, rows: list[dict], steps: int, work: Path) -> float:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from irtk.training.samples import expert_samples, subsample

    # The same 64 samples irtk trains on (its prompts fit 512 tokens uncut).
    samples = subsample(expert_samples(rows), 64, 0)
    data = Dataset.from_list([{k: v for k, v in s.items() if k != "completion"} for s in samples])
    preset = format_only()
    args = GRPOConfig(output_dir=str(work / "bare"), max_steps=steps, reward_weights=preset.weights, **COMMON)
    trainer = GRPOTrainer(model=model, reward_funcs=preset.funcs, args=args, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(model))
    out = trainer.train()
    return out.metrics["train_runtime"] / steps


def real_run(rows: list[dict], steps: int, work: Path) -> None:
    from irtk.training.stages import run_offline
    from irtk.training.trainer import make_config, precision_flags

    flags = precision_flags("auto")
    cfg = make_config("grpo", stage="offline", model="smollm2-135m-instruct", lora_r=16, learning_rate=3e-4,
                      per_device_train_batch_size=8, num_generations=4, max_completion_length=48, max_steps=steps,
                      max_samples=64, logging_steps=1, save_steps=1000, seed=0, data_seed=0, report_to="none",
                      beta=0.0, loss_type="dapo", disable_tqdm=True, output_dir=str(work / "rw"), **flags)
    t0 = time.perf_counter()
    run_offline(cfg, rows, [], output=work / "real", split={})
    wall = time.perf_counter() - t0
    hist = [r for r in _history(work / "real") if r.get("reward") is not None]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_s = [r["step_time"] for r in hist if r.get("step_time") is not None]
    print(f"real run: SmolLM2-135M + LoRA r16, {'bf16 autocast' if flags['bf16'] else 'fp32'}, batch 8 (4 x group 4), "
          f"48 new tokens, stage1 reward: {steps} steps")
    print(f"  seconds/step {sum(step_s) / len(step_s):.1f} (min {min(step_s):.1f}, max {max(step_s):.1f}); "
          f"whole run incl. loading and saving {wall:.0f} s; peak RSS {peak_mb:.0f} MB")
    print("  reward per step: " + ", ".join(f"{r['reward']:.3f}" for r in hist))
    print("  content per step: " + ", ".join(f"{r.get('rewards/content_reward/mean', float('nan')):.3f}" for r in hist))
    print("  format per step: " + ", ".join(f"{r.get('rewards/format_reward/mean', float('nan')):.3f}" for r in hist))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--real-steps", type=int, default=3)
    ap.add_argument("--entropy-control", default="none")
    args = ap.parse_args()
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    warnings.filterwarnings("ignore")
    rows = trajectories()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp / "tiny")
        best = {"irtk": float("inf"), "bare": float("inf")}
        for rep in range(args.repeats):
            order = ("irtk", "bare") if rep % 2 == 0 else ("bare", "irtk")
            for which in order:
                work = tmp / f"{which}-{rep}"
                s = irtk_run(model, rows, args.steps, work, args.entropy_control) if which == "irtk" \
                    else bare_run(model, rows, args.steps, work)
                best[which] = min(best[which], s)
                print(f"  repeat {rep}: {which:5s} {s:.3f} s/step")
        ratio = best["irtk"] / best["bare"]
        verdict = "PASS" if ratio <= 1.15 else "FAIL"
        print(f"overhead: irtk train-offline {best['irtk']:.3f} s/step vs bare GRPOTrainer {best['bare']:.3f} s/step "
              f"(entropy control {args.entropy_control}): ratio {ratio:.3f}x (target <= 1.15x: {verdict})")
        if args.real_steps:
            real_run(rows, args.real_steps, tmp)
    return 0 if ratio <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
