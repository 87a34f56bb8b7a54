"""``simulate``'s batched loop around a model being trained: held-out evaluation and Stage II
rollouts, with no second dialogue loop.

``LiveHFBackend`` is the ``hf`` backend on a model object already in memory (the trainer's),
so ``irtk.dialogue.simulate`` plays dialogues with the current weights without saving them.
Its prefix cache lives for one ``chat`` call or one stream (a round's rollouts, a held-out batch:
each dialogue's next turn pre-fills only what it adds): the trainer changes the weights only
between calls, so the store is emptied as each starts, and a cached prefix is never stale.
Its decode steps attend through irtk's CPU kernel as the ``hf`` backend's do
(``irtk.generation.attention``); the trainer's own forwards (gradients, whole sequences) are
calls the kernel does not cover and stay with torch's ``sdpa``.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from irtk.dialogue import metrics as metric_lib
from irtk.dialogue.config import SimulateConfig
from irtk.dialogue.episode import Episode
from irtk.dialogue.gate import STOP
from irtk.dialogue.simulate import _Parts, dialogue_record, metric_row, simulate_batch
from irtk.generation import Conversation, Generation, SamplingParams, attention
from irtk.generation.hf import ChatStream, HFBackend
from irtk.training.config import TrainSettings
from irtk.training.samples import expert_turns, rollout_samples

LIVE_MODEL = "<model being trained>"


class LiveHFBackend(HFBackend):
    """The transformers backend on an in-memory model (no loading; ``prefix_cache``: within a call
    or a stream only; ``decode_kernel``: decode steps through irtk's CPU attention kernel where
    it applies, as in ``HFBackend``)."""

    def __init__(self, lm: Any, tokenizer: Any, *, batch_size: int = 16, prefix_cache: bool = True,
                 decode_kernel: bool = True) -> None:
        tokenizer = copy.copy(tokenizer)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # The decoding loop (finished rows leave the batch); the store's budget is the device's default.
        self._attach(LIVE_MODEL, lm, tokenizer, next(lm.parameters()).device, batch_size=batch_size,
                     prefix_cache=prefix_cache, cache_bytes=None, lockstep=False)
        self.decode_kernel = decode_kernel

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        """``HFBackend.chat`` on the current weights: nothing cached before the call is used, and
        nothing stays cached after it (the trainer's memory while it trains)."""
        self.kv_store.clear()
        try:
            return super().chat(conversations, params)
        finally:
            self.kv_store.clear()

    def open_stream(self, params: SamplingParams) -> ChatStream | None:
        """``HFBackend.open_stream`` on the current weights: nothing cached before it is used, and
        nothing stays cached once it is played out."""
        self.kv_store.clear()
        return _LiveStream(self, params) if self.own_loop else None

    @contextlib.contextmanager
    def _generating(self) -> Iterator[None]:
        """Eval mode (no dropout) for every forward of ``chat`` and of a stream, then back; the
        kernel turned on for the model decoding now (the trainer may have handed over a new
        object since: LoRA merged)."""
        if self.decode_kernel:
            attention.enable(self.lm)
        was_training = self.lm.training
        self.lm.eval()
        try:
            yield
        finally:
            self.lm.train(was_training)


class _LiveStream(ChatStream):
    """A stream that empties its backend's store once played out, or left and closed: entries a
    next turn did not continue exactly (its text re-tokenised otherwise) would otherwise hold
    memory while the trainer trains."""

    def __iter__(self) -> Iterator[list[tuple[Any, Generation]]]:
        try:
            yield from super().__iter__()
        finally:
            self.backend.kv_store.clear()


def simulate_config(settings: TrainSettings, *, model: str, max_turns: int, temperature: float,
                    max_tokens: int, batch_size: int, seed: int, limit: int | None = None) -> SimulateConfig:
    """The simulate settings training uses: the model policy, the template user (deterministic
    answers from the matched intent) and template summaries (the metrics do not read them)."""
    return SimulateConfig(policy="model", model=model, dtype=settings.model_dtype, user="template",
                          summary="template", embedder=settings.embedder, tau_rep=settings.tau_rep,
                          tau_rel=settings.tau_rel, beta=settings.content_weight, gamma=settings.penalty_weight,
                          max_turns=max_turns, allow_stop=settings.allow_stop, temperature=temperature,
                          max_tokens=max_tokens, seed=seed, batch_size=batch_size, limit=limit, bootstrap=200)


def stop_metrics(records: Sequence[Mapping]) -> dict:
    """How well the policy stops: a STOP is right when every intent of its turn's target set was
    already stated by the user. Precision = right STOPs / STOPs."""
    stops = right = 0
    for r in records:
        matched: set[str] = set()
        for t in r.get("turns") or []:
            if t.get("verdict") == STOP:
                stops += 1
                right += set(t.get("target_intents") or []) <= matched
            elif t.get("matched_intent"):
                matched.add(t["matched_intent"])
    return {"stops": stops, "stop_precision": right / stops if stops else None}


class HeldOut:
    """Evaluates the live policy on held-out trajectories through simulate's loop."""

    def __init__(self, rows: Sequence[Mapping], settings: TrainSettings, *, max_tokens: int, seed: int) -> None:
        self.rows = [dict(r) for r in rows if r.get("intents") and (r.get("graph") or {}).get("nodes")]
        if settings.eval_limit is not None:  # 0: the split is checked and recorded, nothing simulated
            self.rows = self.rows[:settings.eval_limit]
        self.config = simulate_config(settings, model=LIVE_MODEL, max_turns=settings.eval_max_turns,
                                      temperature=0.7, max_tokens=max_tokens,
                                      batch_size=settings.eval_dialogues_batch, seed=seed)
        self._parts: _Parts | None = None

    def __bool__(self) -> bool:
        return bool(self.rows)

    def evaluate(self, lm: Any, tokenizer: Any) -> tuple[dict, list[dict]]:
        """(flat metrics ``eval/<name>``, dialogue records) for the current weights."""
        if self._parts is None:
            backend = LiveHFBackend(lm, tokenizer, batch_size=self.config.batch_size)
            self._parts = _Parts(self.config, backends={LIVE_MODEL: backend})
        else:  # the same simulator and embedder; the model may be a new object (LoRA merged)
            self._parts.policy.backend.lm = lm
        records = []
        for start in range(0, len(self.rows), self.config.batch_size):
            episodes = [Episode(r) for r in self.rows[start:start + self.config.batch_size]]
            simulate_batch(episodes, self._parts, self.config.max_turns)
            records.extend(dialogue_record(e, "model") for e in episodes)
        agg = metric_lib.aggregate([metric_row(r) for r in records], resamples=0)
        flat = {f"eval/{k}": v["mean"] for k, v in agg.items() if k in ("precision", "recall", "f1", "quality",
                                                                          "redundant", "irrelevant", "turns_used")}
        rewards = [t["reward"] for r in records for t in r["turns"] if t.get("reward") is not None]
        flat["eval/reward"] = sum(rewards) / len(rewards) if rewards else None
        stop = stop_metrics(records)
        flat["eval/stops"] = stop["stops"]
        flat["eval/stop_precision"] = stop["stop_precision"]
        return flat, records


def prefix_lengths(rows: Sequence[Mapping], settings: TrainSettings, round_no: int, seed: int) -> list[int]:
    """One expert-prefix length per rollout: uniform in [prefix_min, min(prefix_max, len - 1)],
    seeded by trajectory and round so a resumed run draws the same."""
    out = []
    for row in rows:
        n = len(row.get("path") or [])
        for k in range(settings.rollouts_per_trajectory):
            high = max(0, n - 1) if settings.prefix_max is None else min(settings.prefix_max, max(0, n - 1))
            low = min(settings.prefix_min, high)
            out.append(random.Random(f"{seed}:{round_no}:{row['id']}:{k}").randint(low, high))
    return out


def play_rollouts(rows: Sequence[Mapping], settings: TrainSettings, *, model: str, backend: Any | None,
                  round_no: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Stage II rollouts: each training trajectory starts from an expert prefix of random length
    and the policy asks ``rollout_turns`` more questions against the simulated user. Returns
    (dialogue records, turn samples). ``backend``: a live backend, else ``model`` is loaded."""
    rows = [dict(r) for r in rows if r.get("path")]
    if settings.rollout_limit is not None and len(rows) > settings.rollout_limit:
        keep = sorted(random.Random(f"rollouts:{seed}:{round_no}").sample(range(len(rows)), settings.rollout_limit))
        rows = [rows[i] for i in keep]
    expanded = [r for r in rows for _ in range(settings.rollouts_per_trajectory)]
    lengths = prefix_lengths(rows, settings, round_no, seed)
    by_prefix: dict[int, list[tuple[dict, int]]] = defaultdict(list)
    for row, k in zip(expanded, lengths, strict=True):
        by_prefix[k].append((row, k))
    config = simulate_config(settings, model=model, max_turns=1, temperature=settings.rollout_temperature,
                             max_tokens=settings.rollout_max_tokens, batch_size=settings.rollout_batch_size,
                             seed=seed + round_no)
    parts = _Parts(config, backends={model: backend} if backend is not None else None)
    records, samples = [], []
    # Episodes of one prefix length end at the same turn, so they share simulate's batches.
    for k in sorted(by_prefix):
        group = by_prefix[k]
        for start in range(0, len(group), config.batch_size):
            chunk = group[start:start + config.batch_size]
            episodes = [Episode(dict(row), turns=expert_turns(row)[:k]) for row, _ in chunk]
            simulate_batch(episodes, parts, k + settings.rollout_turns)
            for e in episodes:
                rec = dialogue_record(e, "model")
                rec["prefix_turns"] = k
                records.append(rec)
                samples.extend(rollout_samples(e.row, e.turns, k, allow_stop=settings.allow_stop))
    return records, samples
