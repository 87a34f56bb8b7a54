"""``irtk train-offline`` (Stage I) and ``irtk train-online`` (Stage II): GRPO (or SFT) on TRL.

One option set serves both commands (Stage II's rollout options only on ``train-online``). TRL
is imported only when a command runs, so ``irtk --help`` stays light.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.config import default_of as D
from irtk.training.config import CPU_DEFAULTS as T
from irtk.training.config import TrainSettings as C

STAGE2_ONLY = ("rollout_model", "init", "rounds", "rollouts_per_trajectory", "rollout_limit", "rollout_turns",
               "prefix_min", "prefix_max")


def _o(name: str, *flags: str, **kw: object) -> typer.models.OptionInfo:
    return opt.option(C, name, *flags, **kw)


def train(
    input: opt.Input = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Checkpoint folder to write (an HF "
                                                   "model folder with provenance.json and metrics.parquet).",
                                                   show_default=False)] = None,
    method: Annotated[str, _o("method", "--method")] = D(C, "method"),
    model: opt.Model = D(C, "model"),
    reward: Annotated[Optional[str], _o("reward", "--reward", show_default=False)] = None,
    allow_stop: Annotated[bool, _o("allow_stop", "--allow-stop")] = D(C, "allow_stop"),
    content_weight: Annotated[float, _o("content_weight", "--content-weight")] = D(C, "content_weight"),
    content: Annotated[str, _o("content", "--content")] = D(C, "content"),
    penalty_weight: Annotated[float, _o("penalty_weight", "--penalty-weight")] = D(C, "penalty_weight"),
    embedder: opt.Embedder = D(C, "embedder"),
    tau_rep: Annotated[float, _o("tau_rep", "--tau-rep")] = D(C, "tau_rep"),
    tau_rel: Annotated[float, _o("tau_rel", "--tau-rel")] = D(C, "tau_rel"),
    learning_rate: Annotated[float, typer.Option("--lr", "--learning-rate", help="Peak learning rate "
                                                 "(paper: 1e-6 full fine-tuning; LoRA wants more).")] = T["learning_rate"],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Completions per device per step "
                                            "(TRL per_device_train_batch_size); with --grad-accum and the "
                                            "devices it must divide by --group-size.")] = T["per_device_train_batch_size"],
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Gradient accumulation steps.")
                          ] = T["gradient_accumulation_steps"],
    epochs: Annotated[float, typer.Option("--epochs", min=0.0, help="Passes over the turn samples (paper: 4).")
                      ] = T["num_train_epochs"],
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N optimizer steps (-1: by epochs).")
                         ] = -1,
    group_size: Annotated[int, typer.Option("--group-size", "--num-generations", min=2, help="Completions "
                                            "per prompt (GRPO group; paper: 8).")] = T["num_generations"],
    max_prompt_length: Annotated[int, _o("max_prompt_length", "--max-prompt-length")] = D(C, "max_prompt_length"),
    max_completion_length: Annotated[int, typer.Option("--max-completion-length", min=1, help="Tokens per "
                                                       "completion (paper: 1024).")] = T["max_completion_length"],
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature of the "
                                               "GRPO completions.")] = T["temperature"],
    kl_beta: Annotated[float, typer.Option("--kl-beta", help="TRL's beta: weight of the KL to the reference "
                                           "model (0: no reference model).")] = T["beta"],
    loss_type: Annotated[str, typer.Option("--loss-type", help="TRL loss type: grpo, dapo, dr_grpo, bnpo, "
                                           "cispo, ...")] = T["loss_type"],
    lora_r: Annotated[int, _o("lora_r", "--lora-r", min=0)] = D(C, "lora_r"),
    lora_alpha: Annotated[int, _o("lora_alpha", "--lora-alpha", min=1)] = D(C, "lora_alpha"),
    dtype: Annotated[str, _o("model_dtype", "--dtype", envvar="IRTK_DTYPE")] = D(C, "model_dtype"),
    max_samples: Annotated[Optional[int], _o("max_samples", "--max-samples", min=1, show_default=False)] = None,
    eval_file: Annotated[Optional[Path], _o("eval_file", "--eval", show_default=False)] = None,
    holdout: Annotated[float, _o("holdout", "--holdout")] = D(C, "holdout"),
    eval_every: Annotated[int, _o("eval_every", "--eval-every", min=0)] = D(C, "eval_every"),
    eval_limit: Annotated[Optional[int], _o("eval_limit", "--eval-limit", min=0, show_default=False)] = None,
    eval_max_turns: Annotated[int, _o("eval_max_turns", "--eval-max-turns", min=1)] = D(C, "eval_max_turns"),
    entropy_control: Annotated[str, typer.Option("--entropy-control", help="Per-token entropy control: none, "
                                                 "clipb, clipv, clip-cov, kl-cov, top-entropy, bonus, or "
                                                 "module:attr (irtk.entropy.control).")] = "none",
    entropy_param: Annotated[Optional[list[str]], typer.Option(
        "--entropy-param", help="KEY=VALUE for the control (clipb_mu, clipv_mu, clipv_max_frac, cov_ratio, "
        "clip_cov_lb, clip_cov_ub, kl_cov_coef, top_entropy_quantile, entropy_coef); repeatable.",
        show_default=False)] = None,
    top_entropy_quantile: Annotated[float, typer.Option("--top-entropy-quantile", help="TRL's own 80/20 rule: "
                                                        "train only on this top quantile of tokens by entropy "
                                                        "(1.0: all).")] = 1.0,
    entropy_coef: Annotated[float, typer.Option("--entropy-coef", help="TRL's own entropy bonus "
                                                "coefficient (0: off).")] = 0.0,
    use_vllm: Annotated[bool, typer.Option("--use-vllm", help="GRPO completions from vLLM via TRL (GPU; "
                                           "live weight sync does not work on CPU).")] = False,
    vllm_mode: Annotated[str, typer.Option("--vllm-mode", help="TRL's vLLM mode: colocate or server "
                                           "(trl vllm-serve).")] = "colocate",
    vllm_server_base_url: Annotated[Optional[str], typer.Option("--vllm-server-base-url", help="trl vllm-serve "
                                                                "URL for --vllm-mode server.",
                                                                show_default=False)] = None,
    trl_arg: Annotated[Optional[list[str]], typer.Option("--trl-arg", help="KEY=VALUE for any other "
                                                         "GRPOConfig/SFTConfig field (JSON values); repeatable.",
                                                         show_default=False)] = None,
    save_steps: Annotated[int, typer.Option("--save-steps", min=1, help="Trainer checkpoint every N steps "
                                            "(what --resume continues from).")] = T["save_steps"],
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run from its last checkpoint "
                                         "in <output>.work/.")] = False,
    keep_checkpoints: Annotated[bool, _o("keep_checkpoints", "--keep-checkpoints")] = D(C, "keep_checkpoints"),
    rollout_model: Annotated[Optional[str], _o("rollout_model", "--rollout-model", show_default=False)] = None,
    init: Annotated[Optional[str], _o("init", "--init", show_default=False)] = None,
    rounds: Annotated[int, _o("rounds", "--rounds", min=1)] = D(C, "rounds"),
    rollouts_per_trajectory: Annotated[int, _o("rollouts_per_trajectory", "--rollouts-per-trajectory", min=1)
                                       ] = D(C, "rollouts_per_trajectory"),
    rollout_limit: Annotated[Optional[int], _o("rollout_limit", "--rollout-limit", min=1, show_default=False)
                             ] = None,
    rollout_turns: Annotated[int, _o("rollout_turns", "--rollout-turns", min=1)] = D(C, "rollout_turns"),
    prefix_min: Annotated[int, _o("prefix_min", "--prefix-min", min=0)] = D(C, "prefix_min"),
    prefix_max: Annotated[Optional[int], _o("prefix_max", "--prefix-max", min=0, show_default=False)] = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Draw reward, its components, token "
                                                  "entropy, the entropy control's clip fraction and the held-out "
                                                  "metrics against step (PNG) into this folder.",
                                                  show_default=False)] = None,
    compare: Annotated[Optional[list[Path]], typer.Option("--compare", help="With --plots: other checkpoint "
                                                          "folders drawn side by side; repeatable.",
                                                          show_default=False)] = None,
    seed: opt.Seed = 0,
    report: opt.Report = None,
    config: opt.Config = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
    *,
    stage: str = "offline",
) -> None:
    """Train a clarifier on trajectories (irtk expand output); writes a checkpoint folder."""
    import json

    from irtk.cli import runtime
    from irtk.dialogue.simulate import SIMULATE_INPUT
    from irtk.entropy.config import EntropyControlConfig
    from irtk.errors import UsageError
    from irtk.io import read_rows
    from irtk.training import samples as sample_lib

    command = f"train-{stage}"
    if not runtime.state.verbose:
        import warnings

        # transformers/TRL/peft advisories (deprecated argument names, ...) would drown the stage's
        # own lines and its one-line errors; -v shows them.
        warnings.filterwarnings("ignore")
    if output is None:
        raise UsageError(f"irtk {command} needs -o FOLDER for the checkpoint")
    if not output.parent.exists():
        raise UsageError(f"-o {output}: folder {output.parent} does not exist")
    opt.check_report(report)
    entropy = EntropyControlConfig(entropy_control=entropy_control, **_control_params(entropy_param))
    if use_vllm:
        _check_vllm()
    rows = read_rows(input, record_type=SIMULATE_INPUT)
    if eval_file is not None:
        held = read_rows(str(eval_file), record_type=SIMULATE_INPUT)
        sample_lib.check_disjoint(rows, held, held_name=f"--eval {eval_file}")
        train_rows, split = rows, {"how": "file", "eval_file": str(eval_file)}
    else:
        train_rows, held = sample_lib.split_by_seed(rows, holdout, seed)
        split = {"how": "holdout", "holdout": holdout, "seed": seed}
    split = sample_lib.split_record(train_rows, held, **split)

    from irtk.training.trainer import make_config, precision_flags

    trl = {"learning_rate": learning_rate, "per_device_train_batch_size": batch_size,
           "gradient_accumulation_steps": grad_accum, "num_train_epochs": epochs, "max_steps": max_steps,
           "seed": seed, "data_seed": seed, "logging_steps": 1, "save_strategy": "steps", "save_steps": save_steps,
           "report_to": "none", "disable_tqdm": not runtime.show_progress(), "output_dir": str(output) + ".work"}
    if method == "grpo":
        trl.update(num_generations=group_size, max_completion_length=max_completion_length,
                   temperature=temperature, beta=kl_beta, loss_type=loss_type,
                   top_entropy_quantile=top_entropy_quantile, entropy_coef=entropy_coef, use_vllm=use_vllm,
                   vllm_mode=vllm_mode, vllm_server_base_url=vllm_server_base_url)
    else:
        trl.update(max_length=max_prompt_length + max_completion_length, completion_only_loss=True)
    trl.update(precision_flags(dtype))
    trl.update(opt.key_values(trl_arg, "--trl-arg"))
    values = dict(stage=stage, model=init or model, method=method, reward=reward or "", allow_stop=allow_stop,
                  content_weight=content_weight, content=content, penalty_weight=penalty_weight,
                  embedder=embedder, tau_rep=tau_rep, tau_rel=tau_rel, max_prompt_length=max_prompt_length,
                  max_samples=max_samples, lora_r=lora_r, lora_alpha=lora_alpha, model_dtype=dtype,
                  eval_file=str(eval_file) if eval_file else None, holdout=holdout, eval_every=eval_every,
                  eval_limit=eval_limit, eval_max_turns=eval_max_turns, entropy=entropy,
                  keep_checkpoints=keep_checkpoints)
    if stage == "online":
        values.update(model=model, init=init, rollout_model=rollout_model, rounds=rounds,
                      rollouts_per_trajectory=rollouts_per_trajectory, rollout_limit=rollout_limit,
                      rollout_turns=rollout_turns,
                      prefix_min=prefix_min, prefix_max=prefix_max)
    cfg = make_config(method, **values, **trl)
    if not held:
        runtime.warn("no held-out trajectories (--eval FILE or --holdout F): training without evaluation")

    from irtk.training.stages import run_offline, run_online

    run = run_offline if stage == "offline" else run_online
    result = run(cfg, train_rows, held, output=output, split=split, resume=resume, log=runtime.info)
    runtime.info(f"{command}: {result['steps']} step(s) -> {output}")
    if result["final_eval"]:
        runtime.info("held-out: " + ", ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in
                                              result["final_eval"].items() if isinstance(v, float)))
    if plots is not None:
        from irtk.training.plots import plot_runs

        written = plot_runs([output, *(compare or [])], plots)
        runtime.info(f"plots: {', '.join(str(p) for p in written)}")
    opt.write_report(report, json.loads(json.dumps({k: v for k, v in result.items()}, default=str)))


def _control_params(items: list[str] | None) -> dict:
    """``--entropy-param KEY=VALUE`` as numbers, each KEY a parameter of the entropy controls."""
    from dataclasses import fields

    from irtk.entropy.config import EntropyControlConfig
    from irtk.errors import UsageError

    known = [f.name for f in fields(EntropyControlConfig) if f.name != "entropy_control"]
    out: dict = {}
    for key, value in opt.key_values(items, "--entropy-param").items():
        if key not in known:
            raise UsageError(f"--entropy-param {key}: not a parameter of the entropy controls ({', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"--entropy-param {key}: expects a number, got {value!r}")
        out[key] = float(value)
    return out


def _check_vllm() -> None:
    from irtk.device import pick_device
    from irtk.errors import UsageError

    if pick_device() != "cuda":
        raise UsageError("--use-vllm needs a CUDA GPU: TRL's vLLM rollouts take live weight updates, which "
                         "vLLM cannot do on CPU; train with HF generation here (drop --use-vllm)")


def _command(stage: str):  # noqa: ANN202
    def command(**kwargs: object) -> None:
        train(**kwargs, stage=stage)

    hints = typing.get_type_hints(train, include_extras=True)  # the option metadata in Annotated
    params = [p.replace(annotation=hints[p.name]) for p in inspect.signature(train).parameters.values()
              if p.name != "stage" and (stage == "online" or p.name not in STAGE2_ONLY)]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = train.__doc__
    return command


def register(app: typer.Typer) -> None:
    app.command("train-offline", help="Stage I: cut expert trajectories into turn samples (hindsight target "
                "intents) and train the clarifier with GRPO on beta*content + format (--method sft: the "
                "supervised ablation on the expert questions).")(_command("offline"))
    app.command("train-online", help="Stage II: roll a policy out against the simulated user from expert "
                "prefixes of random length, mix the rollout turns with the Stage I turns and train with "
                "GRPO on the Stage II reward (penalties on rollout samples).")(_command("online"))
