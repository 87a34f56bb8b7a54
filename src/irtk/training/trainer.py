"""Stage I / Stage II on TRL: the composed configs, the GRPO trainer with a per-token loss hook,
checkpoints with provenance and metrics, and the two stage runners.

The hook (``IntentGRPOTrainer``): TRL's ``_compute_loss`` builds one token mask (``mask``) that
both multiplies the per-token loss and is the token-mean denominator. When an entropy control
is active, the trainer hands ``_compute_loss`` a private copy of the completion mask (the tool
mask folded in, so TRL's ``mask`` *is* that copy) and, right after TRL's forward pass, lets the
control (``irtk.entropy.control``) narrow it in place: a dropped token leaves the gradient and
the denominator, exactly as the Clip_B / Clip_V authors' code does. A control's per-token
``weight`` scales a token's gradient without changing the loss value (Clip-Cov's detach:
weight 0 keeps the token in the denominator), and its ``extra_loss`` (KL-Cov, an entropy bonus)
is added with the loss type's normalisation. Nothing of TRL is copied or forked: the rules TRL
has itself (``top-entropy``: ``top_entropy_quantile``; ``bonus``: ``entropy_coef``) are set on
TRL's config and left to TRL, the hook only logging their clip fraction.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from irtk.dialogue.prompts import QUESTION_END
from irtk.errors import UsageError
from irtk.training.config import TrainSettings

# TRL fields the stages record in provenance (the rest keep TRL's defaults unless set).
RECORDED_TRL = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                "num_train_epochs", "max_steps", "num_generations", "max_completion_length", "temperature",
                "beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "top_entropy_quantile",
                "entropy_coef", "seed", "bf16", "use_vllm", "vllm_mode", "lr_scheduler_type", "warmup_ratio",
                "max_length", "reward_weights", "save_steps", "logging_steps")


@functools.cache
def config_class(method: str) -> type:
    """TRL's GRPOConfig (``grpo``) or SFTConfig (``sft``) with irtk's ``TrainSettings`` fields."""
    from trl import GRPOConfig, SFTConfig

    base = GRPOConfig if method == "grpo" else SFTConfig

    def __post_init__(self: Any) -> None:
        self.validate_settings()
        try:
            base.__post_init__(self)
        except ValueError as e:  # TRL's own checks (batch vs group size, ...) as one usage line
            raise UsageError(str(e).replace("\n", " ")) from None

    cls = type(f"Intent{base.__name__}", (base, TrainSettings), {"__post_init__": __post_init__,
                                                                "__module__": __name__})
    return dataclasses.dataclass(cls)


def make_config(method: str, /, **values: Any) -> Any:
    """The composed config from irtk and TRL field values; unknown names are a usage error."""
    cls = config_class(method)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"unknown training setting(s): {', '.join(unknown)} (not a {cls.__name__} field)")
    return cls(**values)


def trl_fields(config: Any) -> dict:
    return {name: getattr(config, name) for name in RECORDED_TRL if hasattr(config, name)}


# ----------------------------------------------------------------------------- the trainer


def _grpo_trainer_class() -> type:
    import torch
    from trl import GRPOTrainer

    from irtk.entropy.config import CONTROLS, TRL_NATIVE
    from irtk.entropy.control import ControlResult
    from irtk.generation.hf import StopCheck

    # Controls that read full-vocabulary statistics (S_k, D_k); the rest use TRL's log-probs/entropies.
    no_stats = {"none", "clip-cov", "kl-cov", "top-entropy", "bonus"}

    class IntentGRPOTrainer(WallClockLog, GRPOTrainer):
        """GRPOTrainer with the per-token entropy-control hook and wall-clock logging."""

        def __init__(self, *args: Any, entropy: Any = None, stop: Sequence[str] = (), **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._stop = StopCheck(self.processing_class, stop) if stop else None
            self.entropy_config = entropy
            name = entropy.entropy_control if entropy is not None else "none"
            # TRL applies its own rules itself (the config set its field); the hook logs their statistics.
            self._control = None if name == "none" else self._trl_rule if name in TRL_NATIVE else CONTROLS.load(name)
            self._control_stats = name not in no_stats
            self._hook_inputs: dict | None = None
            self._hook_extra: Any = None
            self._generator = torch.Generator().manual_seed(self.args.seed)

        def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
            """TRL's completions, each cut after the token that completes its first stop string
            (with its log-probs): the turn ``simulate`` would have played, so the reward scores
            and the loss trains the same text. TRL's ``generate`` takes no stopping criterion,
            so the tokens past the stop are generated and dropped here."""
            ids, logprobs = super()._generate_single_turn(*args, **kwargs)
            if self._stop is None:
                return ids, logprobs
            kept = [self._stop.kept(c) for c in ids]
            ids = [c[:k] for c, k in zip(ids, kept, strict=True)]
            if logprobs is not None:
                logprobs = [lp[:k] for lp, k in zip(logprobs, kept, strict=True)]
            return ids, logprobs

        # -- the hook ------------------------------------------------------------------------

        def _compute_loss(self, model: Any, inputs: dict) -> Any:
            if self._control is None:
                return super()._compute_loss(model, inputs)
            mask = inputs["completion_mask"]
            if "tool_mask" in inputs:
                mask = mask * inputs["tool_mask"]
            # A private copy: TRL reuses a generation batch across iterations, and TRL's ``mask``
            # must be this very tensor so narrowing it in place reaches loss and denominator.
            inputs = {k: v for k, v in inputs.items() if k != "tool_mask"}
            inputs["completion_mask"] = mask.clone()
            self._hook_inputs = inputs
            try:
                loss = super()._compute_loss(model, inputs)
            finally:
                self._hook_inputs = None
            extra, self._hook_extra = self._hook_extra, None
            return loss if extra is None else loss + extra

        def _get_per_token_logps_and_entropies(self, model: Any, input_ids: Any, attention_mask: Any,
                                               logits_to_keep: int, *args: Any, **kwargs: Any) -> Any:
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
            inputs, self._hook_inputs = self._hook_inputs, None  # only the loss's own forward pass
            if inputs is not None:
                logps = self._apply_control(model, inputs, input_ids, attention_mask, logits_to_keep,
                                            logps, entropies)
            return logps, entropies, aux

        def _apply_control(self, model: Any, inputs: dict, input_ids: Any, attention_mask: Any,
                           logits_to_keep: int, logps: Any, entropies: Any) -> Any:
            mask = inputs["completion_mask"]
            mode = "train" if self.model.training else "eval"
            valid = mask.bool()
            if entropies is not None and valid.any():
                self._metrics[mode]["entropy/all_tokens"].append(float(entropies.detach()[valid].float().mean()))
            stats = self._token_stats(model, input_ids, attention_mask, logits_to_keep, mask) \
                if self._control_stats else None
            result = self._control(stats=stats, advantages=inputs["advantages"], mask=mask, logps=logps,
                                   old_logps=inputs.get("old_per_token_logps"), entropies=entropies,
                                   ratio_clip=(self.epsilon_low, self.epsilon_high), config=self.entropy_config,
                                   generator=self._generator)
            mask.mul_(result.keep.to(mask.dtype))  # leaves the gradient and the token-mean denominator
            if result.weight is not None:
                w = result.weight.to(logps.dtype)
                logps = logps * w + logps.detach() * (1 - w)  # same value, gradient scaled by w
            if result.extra_loss is not None:
                self._hook_extra = self._reduce_extra(result.extra_loss, mask, mode)
            for key, value in result.stats.items():
                self._metrics[mode][f"entropy_control/{key}"].append(float(value))
            return logps

        def _trl_rule(self, *, mask: Any, entropies: Any, **_: Any) -> Any:
            """TRL's own top-entropy rule and entropy bonus, which TRL's loss applies: nothing to
            change here; the clip fraction is the share of tokens outside TRL's own high-entropy
            mask (its ``get_high_entropy_mask``), 0 when ``top_entropy_quantile`` is 1."""
            valid = mask.bool()
            clipped, n = 0.0, int(valid.sum())
            if self.top_entropy_quantile < 1.0:  # every process calls it: the threshold is gathered
                kept = self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
                clipped = int((valid & ~kept).sum()) / n if n else 0.0
            return ControlResult(keep=valid, stats={"clip_fraction": clipped})

        def _reduce_extra(self, extra: Any, mask: Any, mode: str) -> Any:
            m = mask.to(extra.dtype)
            if self.loss_type in ("grpo", "sapo"):
                value = ((extra * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
            else:
                value = (extra * m).sum() / m.sum().clamp(min=1.0)
            return value / self.current_gradient_accumulation_steps if mode == "train" else value

        @torch.no_grad()
        def _token_stats(self, model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int,
                         mask: Any) -> Any:
            from irtk.entropy.math import token_stats

            # Logits at positions P-1 .. P+L-2 predict the L completion tokens. Eval mode: the
            # statistics are the policy's own (no dropout, e.g. LoRA's), and the pass draws nothing
            # from the random stream, so a control that clips no token leaves the run unchanged.
            training = model.training
            model.eval()
            try:
                with self.accelerator.autocast():
                    out = model(input_ids=input_ids, attention_mask=attention_mask,
                                logits_to_keep=logits_to_keep + 1)
            finally:
                model.train(training)
            logits = out.logits[:, :-1]
            targets = input_ids[:, -logits_to_keep:]
            return token_stats(logits, targets, mask=mask.bool(), temperature=self.temperature)

    return IntentGRPOTrainer


class WallClockLog:
    """Mixin for a transformers Trainer: every log row gets ``wall_time``, the seconds of
    training so far (GRPO and SFT runs alike), and the metrics a callback queued with
    ``log_with_next_row`` (the held-out evaluation)."""

    _t0: float | None = None
    _wall_offset: float | None = None
    _queued: dict | None = None

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self._t0 = time.perf_counter()
        return super().train(*args, **kwargs)  # type: ignore[misc]

    def log_with_next_row(self, values: Mapping[str, float]) -> None:
        """Add ``values`` to the step's next log row. A callback must not call ``log`` itself
        from ``on_step_end``: transformers' ``on_log`` clears ``should_log``, so that step's own
        row (loss, grad norm, learning rate) would never be written."""
        self._queued = {**(self._queued or {}), **values}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._queued:
            logs.update(self._queued)
            self._queued = None
        logs["wall_time"] = round(_wall_time(self), 3)
        super().log(logs, start_time)  # type: ignore[misc]


def _wall_time(trainer: Any) -> float:
    """Seconds of training so far, counting the time before a resume (from the loaded history)."""
    if trainer._wall_offset is None:
        done = [h["wall_time"] for h in trainer.state.log_history if "wall_time" in h]
        trainer._wall_offset = done[-1] if done else 0.0
    t0 = trainer._t0 if trainer._t0 is not None else time.perf_counter()
    return trainer._wall_offset + time.perf_counter() - t0


def _sft_trainer_class() -> type:
    from trl import SFTTrainer

    class IntentSFTTrainer(WallClockLog, SFTTrainer):
        """SFTTrainer with wall-clock logging (the supervised ablation)."""

    return IntentSFTTrainer


# ----------------------------------------------------------------------------- artefacts


def metrics_table(history: Sequence[Mapping], *, step_offset: int = 0, round_no: int | None = None) -> list[dict]:
    """Trainer log entries as metric rows: ``step`` first, one row per logged step."""
    rows = []
    for h in history:
        row = {"step": int(h.get("step", 0)) + step_offset}
        if round_no is not None:
            row["round"] = round_no
        row.update({k: v for k, v in h.items() if k != "step" and isinstance(v, (int, float)) and v is not None})
        rows.append(row)
    return rows


def write_metrics(path: Path, rows: Sequence[Mapping]) -> None:
    """``metrics.parquet`` (atomically): step, loss, reward mean/std and each component, entropy,
    KL, clip fractions, learning rate, wall time — whatever the trainer logged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    columns = {n: [r.get(n) for r in rows] for n in names}
    table = pa.table({n: pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
                      if n not in ("step", "round") else pa.array(vals, type=pa.int64())
                      for n, vals in columns.items()}) if rows else pa.table({"step": pa.array([], pa.int64())})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_provenance(folder: Path, provenance: Mapping) -> None:
    from irtk.io import write_report

    write_report(folder / "provenance.json", provenance)


def _artifacts_callback(provenance: Callable[[], dict], rows: Callable[[Any], list[dict]]) -> Any:
    from transformers import TrainerCallback

    class Artifacts(TrainerCallback):
        """Every trainer checkpoint gets provenance.json and metrics.parquet."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                write_provenance(folder, {**provenance(), "global_step": state.global_step})
                write_metrics(folder / "metrics.parquet", rows(state))

    return Artifacts()


def _eval_callback(held: Any, every: int, get_trainer: Callable[[], Any], sink: list) -> Any:
    from transformers import TrainerCallback

    class HeldOutEval(TrainerCallback):
        """Held-out evaluation through simulate every ``every`` steps."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if every and state.global_step % every == 0 and state.is_world_process_zero:
                trainer = get_trainer()
                lm = trainer.accelerator.unwrap_model(trainer.model)
                flat, _ = held.evaluate(lm, trainer.processing_class)
                sink.append({"step": state.global_step, **flat})
                trainer.log_with_next_row(flat)

    return HeldOutEval()


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete trainer checkpoint in ``work`` (one with its trainer state)."""
    found = [p for p in work.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


# ----------------------------------------------------------------------------- one training run


def load_model(name: str, config: Any) -> tuple[Any, Any, str]:
    """(model, tokenizer, resolved path): fp32 master weights on CPU (bf16 runs as autocast),
    the device's native half precision on GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from irtk.device import pick_device, pick_dtype
    from irtk.errors import ModelError
    from irtk.models import resolve

    path = resolve(name)
    device = pick_device()
    dtype = pick_dtype(device, config.model_dtype)
    weights = dtype if device != "cpu" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=weights)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {name!r} from {path}: {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, path


def precision_flags(model_dtype: str) -> dict:
    """TRL/Trainer precision and device flags for this machine (bf16 autocast where native)."""
    import torch

    from irtk.device import pick_device, pick_dtype

    device = pick_device()
    dtype = pick_dtype(device, model_dtype)
    # Activation checkpointing (TRL's default) trades compute for memory: on CPU memory is not
    # the limit and the recomputation costs a third more time per step.
    return {"use_cpu": device == "cpu", "bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16,
            "gradient_checkpointing": device != "cpu"}


def peft_config(config: Any) -> Any:
    if not config.lora_r:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def reward_preset(config: Any) -> Any:
    """The configured reward preset (``--reward``), bound to the embedder and weights."""
    from irtk.dialogue.rewards import REWARD_PRESETS, IntentRewards

    rewards = IntentRewards(config.embedder, tau_rep=config.tau_rep, tau_rel=config.tau_rel,
                            beta=config.content_weight, gamma=config.penalty_weight, content=config.content)
    preset = REWARD_PRESETS.create(config.reward, rewards=rewards, allow_stop=config.allow_stop)
    if not getattr(preset, "funcs", None) or len(preset.funcs) != len(preset.weights):
        raise UsageError(f"--reward {config.reward}: expected a preset with .funcs and as many .weights")
    return preset


def to_dataset(samples: Sequence[Mapping], method: str) -> Any:
    from datasets import Dataset

    keep = ("prompt", "completion") if method == "sft" else None
    rows = [{k: v for k, v in s.items() if keep is None or k in keep}
            for s in samples if method != "sft" or "completion" in s]
    if method == "grpo":
        rows = [{k: v for k, v in r.items() if k != "completion"} for r in rows]
    return Dataset.from_list(rows)


def train_once(config: Any, model: Any, tokenizer: Any, samples: Sequence[Mapping], *, work: Path,
               resume: bool, provenance: Callable[[], dict], held: Any = None,
               callbacks: Sequence[Any] = (), step_offset: int = 0, round_no: int | None = None) -> dict:
    """One TRL run on ``samples`` in ``work`` (its checkpoints); returns history and evals."""
    trainer_box: list[Any] = []
    evals: list[dict] = []
    rows = lambda state: metrics_table(state.log_history, step_offset=step_offset, round_no=round_no)  # noqa: E731
    cbs = [_artifacts_callback(provenance, rows), *callbacks]
    if held and config.eval_every:
        cbs.append(_eval_callback(held, config.eval_every, lambda: trainer_box[0], evals))
    config.output_dir = str(work)
    dataset = to_dataset(samples, config.method)
    if config.method == "grpo":
        preset = reward_preset(config)
        config.reward_weights = list(preset.weights)
        trainer = _grpo_trainer_class()(model=model, reward_funcs=list(preset.funcs), args=config,
                                        train_dataset=dataset, processing_class=tokenizer,
                                        peft_config=peft_config(config), callbacks=cbs, entropy=config.entropy,
                                        stop=QUESTION_END)
    else:
        trainer = _sft_trainer_class()(model=model, args=config, train_dataset=dataset,
                                       processing_class=tokenizer, peft_config=peft_config(config),
                                       callbacks=cbs)
    trainer_box.append(trainer)
    checkpoint = last_checkpoint(work) if resume else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return {"trainer": trainer, "history": rows(trainer.state), "evals": evals,
            "resumed_from": checkpoint.name if checkpoint else None}


def final_model(trainer: Any) -> Any:
    """The trained model with LoRA adapters merged (a plain HF model every stage can load)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


def save_checkpoint(output: Path, model: Any, tokenizer: Any, provenance: Mapping, rows: Sequence[Mapping]) -> None:
    """The final checkpoint, atomically: HF model folder + tokenizer + provenance.json + metrics.parquet."""
    import torch

    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = model.to(torch.float32) if next(model.parameters()).dtype != torch.float32 and \
        next(model.parameters()).device.type == "cpu" else model
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_metrics(tmp / "metrics.parquet", rows)
    write_provenance(tmp, provenance)
    if output.exists():
        shutil.rmtree(output)
    os.replace(tmp, output)


def library_versions() -> dict:
    import peft
    import torch
    import transformers
    import trl

    return {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "peft": peft.__version__}


def describe_preset(config: Any) -> dict | None:
    if config.method != "grpo":
        return None
    preset = reward_preset(config)
    return {"name": config.reward, "functions": [f.__name__ for f in preset.funcs], "weights": list(preset.weights)}


def dump(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def __getattr__(name: str) -> Any:
    # The composed config classes are built on first use; pickling (Trainer saves its args with
    # torch.save) finds them here by name.
    for method in ("grpo", "sft"):
        if name == f"Intent{'GRPOConfig' if method == 'grpo' else 'SFTConfig'}":
            return config_class(method)
    raise AttributeError(name)
