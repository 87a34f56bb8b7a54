"""The two training stages as library calls (the CLI is a thin skin over these).

- ``run_offline`` (Stage I): expert trajectories cut into turn samples with hindsight targets,
  GRPO on the ``stage1`` preset (or ``--method sft`` on the expert questions).
- ``run_online`` (Stage II): rollouts of a policy from expert prefixes of random length against
  the simulated user (simulate's loop), cut into turn samples, mixed with the Stage I samples,
  GRPO on the ``stage2`` preset (penalties on rollout samples only); ``rounds`` alternates.

Both write one checkpoint folder (``output``): the model (LoRA merged), tokenizer,
``provenance.json`` and ``metrics.parquet``. Trainer checkpoints live in ``<output>.work/`` until
the run succeeds, so a killed run continues with ``resume=True``.
"""

from __future__ import annotations

import collections
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from irtk.errors import UsageError
from irtk.io import dumps, make_provenance, write_text
from irtk.training import samples as sample_lib
from irtk.training.live import HeldOut, LiveHFBackend, play_rollouts
from irtk.training.trainer import (
    describe_preset,
    dump,
    final_model,
    library_versions,
    load_model,
    save_checkpoint,
    train_once,
    trl_fields,
)

Log = Callable[[str], None]


def work_dir(output: Path) -> Path:
    return output.with_name(f"{output.name}.work")


def _prepare_work(output: Path, resume: bool) -> Path:
    work = work_dir(output)
    if work.exists() and not resume and any(work.rglob("checkpoint-*")):
        raise UsageError(f"{work} holds checkpoints of an earlier run: add --resume to continue it, "
                         "or remove the folder")
    work.mkdir(parents=True, exist_ok=True)
    return work


def _token_counter(tokenizer: Any) -> Callable[[list[dict]], int]:
    def count(messages: list[dict]) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return count


def _eval_tokens(config: Any) -> int:
    return int(getattr(config, "max_completion_length", None) or 96)


def stage1_samples(config: Any, train_rows: Sequence[Mapping], tokenizer: Any) -> tuple[list[dict], dict]:
    """Stage I samples (fitted to the prompt budget, subsampled to ``max_samples``) and counts."""
    samples = sample_lib.expert_samples(train_rows, allow_stop=config.allow_stop)
    if not samples:
        raise UsageError("no training samples: the training trajectories have no path steps (irtk expand writes them)")
    total = len(samples)
    samples = sample_lib.subsample(samples, config.max_samples, config.seed)
    cut = sample_lib.fit_prompts(samples, _token_counter(tokenizer), config.max_prompt_length)
    return samples, {"expert_samples": len(samples), "expert_samples_available": total, "prompts_cut": cut}


def _provenance(stage: str, config: Any, path: str, extra: Mapping) -> dict:
    return make_provenance(stage, model=config.model, model_path=path, method=config.method,
                           settings=dump(config.settings()), trl=dump(trl_fields(config)),
                           libraries=library_versions(), **dump(dict(extra)))


def _process() -> Any:
    """This process under ``accelerate launch`` / torchrun (a single process otherwise)."""
    from accelerate import PartialState

    return PartialState()


def _finish(output: Path, work: Path, trainer: Any, tokenizer: Any, held: HeldOut | None, rows: list[dict],
            provenance: dict, config: Any, log: Log) -> dict:
    model = final_model(trainer)
    final_eval = None
    state = _process()
    # One process evaluates and writes; the others wait so every rank returns with the folder there.
    if state.is_main_process:
        if held:
            log(f"held-out evaluation: {len(held.rows)} dialogue(s)")
            final_eval, _ = held.evaluate(model, tokenizer)
            rows.append({"step": rows[-1]["step"] if rows else 0, **final_eval})
    provenance = {**provenance, "final_eval": final_eval, "global_step": rows[-1]["step"] if rows else 0}
    if state.is_main_process:
        save_checkpoint(output, model, tokenizer, provenance, rows)
        if not config.keep_checkpoints:
            shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    return {"output": str(output), "final_eval": final_eval, "steps": provenance["global_step"],
            "provenance": provenance}


def run_offline(config: Any, train_rows: Sequence[Mapping], held_rows: Sequence[Mapping], *, output: Path,
                split: Mapping, resume: bool = False, callbacks: Sequence[Any] = (), log: Log = lambda _: None) -> dict:
    """Stage I: train ``config.model`` on the expert turns of ``train_rows``; evaluate on
    ``held_rows`` (other seeds) during and after training; write the checkpoint ``output``."""
    work = _prepare_work(output, resume)
    model, tokenizer, path = load_model(config.model, config)
    samples, counts = stage1_samples(config, train_rows, tokenizer)
    log(f"Stage I ({config.method}): {counts['expert_samples']} turn sample(s) from {len(train_rows)} trajectories")
    held = HeldOut(held_rows, config, max_tokens=_eval_tokens(config), seed=config.seed) if held_rows else None
    prov = _provenance("train-offline", config, path, {"data": counts, "split": split,
                                                       "reward": describe_preset(config)})
    result = train_once(config, model, tokenizer, samples, work=work, resume=resume,
                        provenance=lambda: prov, held=held, callbacks=callbacks)
    prov["resumed_from"] = result["resumed_from"]
    return _finish(output, work, result["trainer"], tokenizer, held, list(result["history"]), prov, config, log)


def mixed_counts(expert: Sequence[Mapping], rollout: Sequence[Mapping]) -> dict:
    """What Stage II trains on: sample counts by source and the rollouts' prefix lengths."""
    return {"expert_samples": len(expert), "rollout_samples": len(rollout),
            "prefix_turns": dict(sorted(collections.Counter(s["prefix_turns"] for s in rollout).items()))}


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_jsonl(path: Path, rows: Sequence[Mapping]) -> None:
    write_text(path, "".join(dumps(dict(r)) + "\n" for r in rows))


def run_online(config: Any, train_rows: Sequence[Mapping], held_rows: Sequence[Mapping], *, output: Path,
               split: Mapping, resume: bool = False, callbacks: Sequence[Any] = (), log: Log = lambda _: None) -> dict:
    """Stage II: for each round, roll out the policy from expert prefixes, mix the rollout turns
    with the Stage I turns and train on the ``stage2`` reward. Round 1 rolls out
    ``config.rollout_model`` (the Stage I checkpoint) while a fresh ``config.model`` trains (the
    paper); with ``config.init`` that checkpoint trains and rolls out. Later rounds roll out the
    policy being trained."""
    from transformers import AutoModelForCausalLM

    work = _prepare_work(output, resume)
    start = config.init or config.model
    model, tokenizer, path = load_model(start, config)
    expert, counts = stage1_samples(config, train_rows, tokenizer)
    held = HeldOut(held_rows, config, max_tokens=_eval_tokens(config), seed=config.seed) if held_rows else None
    rows: list[dict] = []
    rounds: list[dict] = []
    trainer = None
    prov: dict = {}
    for r in range(1, config.rounds + 1):
        rdir = work / f"round-{r}"
        rdir.mkdir(exist_ok=True)
        done = rdir / "model"
        if resume and (done / "config.json").exists():
            log(f"round {r}: done in an earlier run, loading {done}")
            model = AutoModelForCausalLM.from_pretrained(done, dtype=next(model.parameters()).dtype)
            info = json.loads((rdir / "round.json").read_text())
            rows.extend(info["metrics"])
            rounds.append(info["round"])
            continue
        sample_file = rdir / "rollout-samples.jsonl"
        state = _process()
        if resume and sample_file.exists():
            log(f"round {r}: rollout samples from the earlier run")
        elif state.is_main_process:  # one process plays the rollouts; every rank trains on them
            roller = config.rollout_model if (r == 1 and config.rollout_model and not config.init) else None
            log(f"round {r}: rollouts by {roller or 'the policy being trained'} on {len(train_rows)} trajectories")
            backend = None if roller else LiveHFBackend(model, tokenizer, batch_size=config.rollout_batch_size)
            dialogues, rollout = play_rollouts(train_rows, config, model=roller or "live", backend=backend,
                                               round_no=r, seed=config.seed)
            _write_jsonl(rdir / "rollouts.jsonl", dialogues)
            _write_jsonl(sample_file, rollout)
        state.wait_for_everyone()
        rollout = _read_jsonl(sample_file)
        sample_lib.fit_prompts(rollout, _token_counter(tokenizer), config.max_prompt_length)
        mix = mixed_counts(expert, rollout)
        log(f"round {r}: {mix['expert_samples']} expert + {mix['rollout_samples']} rollout sample(s)")
        info = {"round": r, **mix}
        prov = _provenance("train-online", config, path, {
            "init": config.init, "rollout_model": config.rollout_model, "data": {**counts, **mix},
            "split": split, "reward": describe_preset(config), "rounds": [*rounds, info]})
        offset = rows[-1]["step"] if rows else 0
        result = train_once(config, model, tokenizer, [*expert, *rollout], work=rdir / "trainer", resume=resume,
                            provenance=lambda p=prov: p, held=held, callbacks=callbacks, step_offset=offset,
                            round_no=r)
        trainer = result["trainer"]
        rows.extend(result["history"])
        rounds.append(info)
        if r < config.rounds:
            model = final_model(trainer)
            if state.is_main_process:
                model.save_pretrained(done)
                (rdir / "round.json").write_text(json.dumps({"round": info, "metrics": result["history"]},
                                                            default=str))
            state.wait_for_everyone()
    if trainer is None:  # every round was done before the resume
        raise UsageError(f"{work}: every round finished in an earlier run but no final checkpoint was written; "
                         "remove the folder and train again")
    return _finish(output, work, trainer, tokenizer, held, rows, prov, config, log)
