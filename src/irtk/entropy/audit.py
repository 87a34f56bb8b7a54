"""``irtk entropy-audit``: per-token entropy, discriminator and predicted entropy change of a
policy-gradient step, for a model on given prompts and completions.

Input rows (one or several samples each):

- ``irtk simulate`` dialogues (a ``turns`` list): one sample per asked turn; the prompt is the
  clarifier's conversation before that turn, exactly as the model policy sends it, the
  completion is the turn's question and the reward is the turn's reward.
- ``{prompt, completion}`` rows (field names configurable; TRL's layout): the prompt is text or a
  list of chat messages, the completion text or a list of assistant messages.
- ``{messages}`` rows: the last assistant message is the completion, the messages before it the
  prompt.

Optional ``advantage`` and ``reward`` columns; with rewards and ``group_by`` columns, GRPO group
advantages (r - group mean) / (group std + 1e-6) are computed (the input is then held in memory,
since a group is complete only at the end; otherwise samples stream batch by batch).

Scored tokens: with the chat template (``template`` chat/auto) the prompt is rendered with the
generation prompt and the completion is tokenized on its own followed by EOS, the token sequence a
TRL trainer generates and scores; with ``raw`` the prompt text (with the tokenizer's BOS, if any)
is followed by the completion text. Only completion tokens are scored. Each batch runs the
model's decoder once and the streaming pass (``irtk.entropy.math``) over the LM head's vocabulary
tiles, so the [tokens, V] logits are never materialised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from irtk.entropy.config import AuditConfig
from irtk.errors import InputError, UsageError

GROUP_EPS = 1e-6


# --- samples ------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One prompt/completion pair to score."""

    id: str
    row: int
    prompt: str | list[dict]
    completion: str
    reward: float | None = None
    advantage: float | None = None
    turn: int | None = None
    group: tuple | None = None


def _number(value: Any, source: str, row: int, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"expected a finite number, got {value!r}", source=source, row=row, field=name)
    return float(value)


def _messages(value: Any, source: str, row: int, name: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(m, Mapping) and "content" in m for m in value):
        raise InputError("expected a list of chat messages ({role, content})", source=source, row=row, field=name)
    return [{"role": str(m.get("role", "user")), "content": str(m["content"] or "")} for m in value]


def _completion_text(value: Any, source: str, row: int, name: str) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):  # TRL's conversational completion: assistant message(s)
        text = "".join(m["content"] for m in _messages(value, source, row, name))
    else:
        raise InputError(f"expected text or assistant messages, got {type(value).__name__}",
                         source=source, row=row, field=name)
    if not text:
        raise InputError("empty completion: nothing to score", source=source, row=row, field=name)
    return text


def _dialogue_samples(row: Mapping, row_no: int, source: str) -> Iterator[tuple[Sample, dict]]:
    from irtk.dialogue.episode import Episode
    from irtk.dialogue.gate import STOP
    from irtk.dialogue.policies import ModelPolicy
    from irtk.generation import SamplingParams

    policy = ModelPolicy(None, SamplingParams())  # only its prompt rendering is used
    turns = row.get("turns") or []
    rid = str(row.get("id", row_no))
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or turn.get("verdict") == STOP or not turn.get("question"):
            continue
        prompt = policy.conversation(Episode(dict(row), turns=[dict(t) for t in turns[:i]]))
        number = int(turn.get("turn") or i + 1)
        sample = Sample(rid, row_no, prompt, str(turn["question"]),
                        reward=_number(turn.get("reward"), source, row_no, f"turns[{i}].reward"),
                        turn=number)
        yield sample, {**row, "turn": number}


def samples_from_row(row: Mapping, row_no: int, config: AuditConfig, source: str) -> Iterator[tuple[Sample, dict]]:
    """The samples of one input row, each with the columns its group key is read from."""
    if isinstance(row.get("turns"), list) and config.completion_field not in row:
        yield from _dialogue_samples(row, row_no, source)
        return
    rid = str(row.get("id", row_no))
    reward = _number(row.get("reward"), source, row_no, "reward")
    advantage = _number(row.get("advantage"), source, row_no, "advantage")
    if config.completion_field in row:
        if config.prompt_field not in row:
            raise InputError("missing the prompt column", source=source, row=row_no, field=config.prompt_field)
        raw_prompt = row[config.prompt_field]
        prompt = raw_prompt if isinstance(raw_prompt, str) else _messages(raw_prompt, source, row_no,
                                                                         config.prompt_field)
        completion = _completion_text(row[config.completion_field], source, row_no, config.completion_field)
    elif "messages" in row:
        messages = _messages(row["messages"], source, row_no, "messages")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            raise InputError("no assistant message to score", source=source, row=row_no, field="messages")
        prompt = messages[:last]
        completion = _completion_text(messages[last]["content"], source, row_no, "messages")
    else:
        raise InputError(f"no completion column: expected '{config.completion_field}' (with "
                         f"'{config.prompt_field}'), 'messages', or simulate's 'turns'",
                         source=source, row=row_no, field=config.completion_field)
    yield Sample(rid, row_no, prompt, completion, reward=reward, advantage=advantage), row


def group_advantages(rewards: Sequence[float], groups: Sequence[Hashable], eps: float = GROUP_EPS) -> list[float]:
    """GRPO advantages: (r - mean of the group) / (sample std of the group + eps). A group of one
    has no baseline to compare with: its advantage is 0."""
    by_group: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    out = [0.0] * len(rewards)
    for members in by_group.values():
        if len(members) < 2:
            continue
        values = np.array([rewards[i] for i in members], dtype=np.float64)
        mean, std = values.mean(), values.std(ddof=1)
        for i, v in zip(members, values, strict=True):
            out[i] = float((v - mean) / (std + eps))
    return out


def read_samples(rows: Iterable[dict], config: AuditConfig, source: str,
                 warn: Callable[[str], None] = lambda _: None) -> Iterator[Sample]:
    """Samples of every row, up to ``config.limit``; group advantages when ``group_by`` is set
    (then every sample is read before the first is yielded)."""
    def generate() -> Iterator[tuple[Sample, dict]]:
        count = 0
        for row_no, row in enumerate(rows, 1):
            for sample, columns in samples_from_row(row, row_no, config, source):
                if config.limit is not None and count >= config.limit:
                    return
                count += 1
                yield sample, columns

    if not config.group_by:
        for sample, _ in generate():
            yield sample
        return
    samples: list[Sample] = []
    for sample, columns in generate():
        missing = [c for c in config.group_by if c not in columns]
        if missing:
            raise InputError("missing a --group-by column", source=source, row=sample.row, field=missing[0])
        sample.group = tuple(_hashable(columns[c]) for c in config.group_by)
        samples.append(sample)
    scored = [s for s in samples if s.advantage is None and s.reward is not None]
    if scored:
        advantages = group_advantages([s.reward for s in scored], [s.group for s in scored])
        for s, a in zip(scored, advantages, strict=True):
            s.advantage = a
        sizes: dict[tuple | None, int] = {}
        for s in scored:
            sizes[s.group] = sizes.get(s.group, 0) + 1
        singles = sum(1 for n in sizes.values() if n == 1)
        if singles:
            warn(f"{singles} group(s) of one sample: advantage 0 (no group baseline)")
        if all(a == 0.0 for a in advantages):
            warn("every advantage is 0: rewards are equal within each group")
    yield from samples


def _hashable(value: Any) -> Hashable:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


# --- tokens -------------------------------------------------------------------------------------


@dataclass
class Encoded:
    sample: Sample
    prompt_ids: list[int]
    completion_ids: list[int]


class Encoder:
    """Prompt and completion token ids, by the chat template or as raw text."""

    def __init__(self, tokenizer: Any, template: str, context: int | None, source: str,
                 completion_field: str) -> None:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_template:
            raise UsageError("--template chat: the model's tokenizer has no chat template")
        self.chat = template == "chat" or (template == "auto" and has_template)
        self.tokenizer = tokenizer
        self.context = context
        self.source = source
        self.completion_field = completion_field

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def encode(self, sample: Sample) -> Encoded:
        tok = self.tokenizer
        if self.chat:
            messages = sample.prompt if isinstance(sample.prompt, list) else [
                {"role": "user", "content": sample.prompt}]
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            prompt_ids = self._ids(text, special=False)
            completion_ids = self._ids(sample.completion, special=False)
            if tok.eos_token_id is not None:
                completion_ids.append(int(tok.eos_token_id))
        else:
            if isinstance(sample.prompt, list):
                raise InputError("chat messages need a chat template (this is --template raw)",
                                 source=self.source, row=sample.row, field="prompt")
            prompt_ids = self._ids(sample.prompt, special=True)
            completion_ids = self._ids(sample.completion, special=False)
        if not prompt_ids:  # the first completion token needs a position that predicts it
            prompt_ids = [int(tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)]
        total = len(prompt_ids) + len(completion_ids)
        if self.context is not None and total > self.context:
            raise InputError(f"prompt + completion is {total} tokens, longer than the model's context "
                             f"of {self.context}", source=self.source, row=sample.row,
                             field="turns" if sample.turn is not None else self.completion_field)
        return Encoded(sample, prompt_ids, completion_ids)


def batches_of(encoded: Iterable[Encoded], batch_size: int, max_tokens: int) -> Iterator[list[Encoded]]:
    """At most ``batch_size`` samples and ``max_tokens`` padded tokens per batch (a longer sample
    goes alone)."""
    batch: list[Encoded] = []
    longest = 0
    for e in encoded:
        n = len(e.prompt_ids) + len(e.completion_ids)
        if batch and (len(batch) >= batch_size or max(longest, n) * (len(batch) + 1) > max_tokens):
            yield batch
            batch, longest = [], 0
        batch.append(e)
        longest = max(longest, n)
    if batch:
        yield batch


# --- the model ----------------------------------------------------------------------------------


class ScoringModel:
    """A causal LM split into its decoder and its head, for the streaming statistics."""

    def __init__(self, lm: Any, tokenizer: Any, device: str, temperature: float, tile_size: int) -> None:
        self.lm = lm
        self.tokenizer = tokenizer
        self.device = device
        self.decoder = getattr(lm, getattr(lm, "base_model_prefix", "model"), None)
        if self.decoder is None or self.decoder is lm:
            raise UsageError(f"{type(lm).__name__}: cannot separate the decoder from the LM head")
        self.head = lm.get_output_embeddings()
        cfg = lm.config
        # Heads that rescale logits before sampling (Granite divides, Cohere multiplies).
        scale = 1.0 / float(getattr(cfg, "logits_scaling", 1.0) or 1.0) * float(getattr(cfg, "logit_scale", 1.0) or 1.0)
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.temperature = temperature / scale
        self.tile_size = tile_size
        context = getattr(cfg, "max_position_embeddings", None)
        self.context = int(context) if context else None

    def tensors(self, batch: Sequence[Encoded]) -> tuple[Any, Any, Any]:
        """Right-padded input ids, attention mask and completion mask [B, L]."""
        import torch

        longest = max(len(e.prompt_ids) + len(e.completion_ids) for e in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), longest), int(pad), dtype=torch.long)
        attention = torch.zeros((len(batch), longest), dtype=torch.long)
        completion = torch.zeros((len(batch), longest), dtype=torch.bool)
        for b, e in enumerate(batch):
            p, c = len(e.prompt_ids), len(e.completion_ids)
            ids[b, :p + c] = torch.tensor(e.prompt_ids + e.completion_ids)
            attention[b, :p + c] = 1
            completion[b, p:p + c] = True
        return ids.to(self.device), attention.to(self.device), completion.to(self.device)

    def hidden(self, ids: Any, attention: Any) -> Any:
        return self.decoder(input_ids=ids, attention_mask=attention).last_hidden_state

    def stats(self, batch: Sequence[Encoded], keep_hidden: bool = False) -> list[dict[str, np.ndarray]]:
        """Per-sample arrays (entropy, logp, s, expected_s, d, token_id; with ``keep_hidden`` the
        final hidden state that predicts each token) of the completion tokens, in order."""
        import torch

        from irtk.entropy.math import sequence_stats

        ids, attention, completion = self.tensors(batch)
        with torch.no_grad():
            hidden = self.hidden(ids, attention)
            stats = sequence_stats(ids, completion, hidden=hidden, weight=self.head.weight,
                                   bias=self.head.bias, softcap=self.softcap, temperature=self.temperature,
                                   tile_size=self.tile_size)
        columns = {**stats.as_dict(), "token_id": ids}
        if keep_hidden:
            predicting = torch.zeros_like(hidden, dtype=torch.float32)
            predicting[:, 1:] = hidden[:, :-1].float()  # the state at t-1 predicts token t
            columns["hidden"] = predicting
        return [{k: v[b][completion[b]].cpu().numpy() for k, v in columns.items()} for b in range(len(batch))]


def load_scoring_model(config: AuditConfig) -> ScoringModel:
    from irtk.generation.hf import load_causal_lm

    dtype = "float32" if config.verify_step is not None else config.dtype
    lm, tokenizer, device = load_causal_lm(config.model, config.device, dtype)
    return ScoringModel(lm, tokenizer, device, config.temperature, config.tile_size)


# --- the one-step check -------------------------------------------------------------------------


def policy_gradient_step(model: ScoringModel, batches: Sequence[Sequence[Encoded]], lr: float,
                         params: str = "head") -> None:
    """One SGD step on -sum_t A_t log p(token_t) over every completion token (a sum, so the
    learning rate has the paper's meaning: with free logits dH = lr * A * D). ``params`` "head"
    steps only the LM head (untied from the input embedding for the step), where the first-order
    law applies with kernel |h|^2 per token; "all" steps every weight."""
    import torch

    from irtk.entropy.math import shift_for_next_token

    lm, head = model.lm, model.head
    if params == "head":
        if head.weight is lm.get_input_embeddings().weight:
            head.weight = torch.nn.Parameter(head.weight.detach().clone())
        lm.requires_grad_(False)
        head.requires_grad_(True)
    else:
        lm.requires_grad_(True)
    lm.zero_grad(set_to_none=True)
    for batch in batches:
        ids, attention, completion = model.tensors(batch)
        advantages = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        for b, e in enumerate(batch):
            advantages[b] = float(e.sample.advantage or 0.0)
        targets, mask = shift_for_next_token(ids, completion)
        with torch.set_grad_enabled(params != "head"):
            hidden = model.hidden(ids, attention)
        logits = head(hidden[mask]).float()
        if model.softcap:
            logits = model.softcap * torch.tanh(logits / model.softcap)
        logp = torch.log_softmax(logits / model.temperature, dim=-1).gather(-1, targets[mask].unsqueeze(-1))
        loss = -(advantages[mask] * logp.squeeze(-1)).sum()
        loss.backward()
    with torch.no_grad():
        for p in lm.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    lm.zero_grad(set_to_none=True)
    lm.requires_grad_(False)


def agreement(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float | int | None]:
    """How well predicted entropy changes track measured ones: Pearson and Spearman correlation,
    least-squares slope and intercept of measured on predicted, sign agreement (over tokens with
    a non-zero prediction)."""
    n = int(predicted.size)
    out: dict[str, float | int | None] = {"n": n, "pearson": None, "spearman": None, "slope": None,
                                          "intercept": None, "sign_agreement": None}
    if n >= 2 and predicted.std() > 0 and measured.std() > 0:
        out["pearson"] = float(np.corrcoef(predicted, measured)[0, 1])
        out["spearman"] = float(np.corrcoef(_ranks(predicted), _ranks(measured))[0, 1])
        slope, intercept = np.polyfit(predicted, measured, 1)
        out["slope"], out["intercept"] = float(slope), float(intercept)
    nonzero = predicted != 0
    if nonzero.any():
        out["sign_agreement"] = float(np.mean(np.sign(predicted[nonzero]) == np.sign(measured[nonzero])))
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[np.argsort(x, kind="stable")] = np.arange(x.size)
    return ranks


# --- the run ------------------------------------------------------------------------------------


TOKEN_FIELDS = ("entropy", "logp", "s", "expected_s", "d")


def output_schema(per_token: bool, verify: bool) -> Any:
    """Arrow schema of the audit's rows."""
    import pyarrow as pa

    f64 = pa.float64()
    head = [pa.field("id", pa.string()), pa.field("turn", pa.int32())]
    tail = [pa.field("reward", f64), pa.field("advantage", f64), pa.field("predicted_dh", f64)]
    if verify:
        tail.append(pa.field("measured_dh", f64))
    if per_token:
        body = [pa.field("position", pa.int32()), pa.field("token_id", pa.int64()), pa.field("token", pa.string()),
                *(pa.field(name, f64) for name in TOKEN_FIELDS)]
    else:
        body = [pa.field("prompt_tokens", pa.int32()), pa.field("completion_tokens", pa.int32()),
                pa.field("mean_entropy", f64), pa.field("max_entropy", f64), pa.field("sum_logp", f64),
                pa.field("mean_s", f64), pa.field("mean_d", f64)]
    return pa.schema([*head, *body, *tail])


@dataclass
class Scored:
    """One sample's per-token arrays after the pass."""

    encoded: Encoded
    arrays: dict[str, np.ndarray]
    measured: np.ndarray | None = None


@dataclass
class Collected:
    """Every scored token, for the summary, the plots and the step check."""

    entropy: list[np.ndarray] = field(default_factory=list)
    logp: list[np.ndarray] = field(default_factory=list)
    s: list[np.ndarray] = field(default_factory=list)
    d: list[np.ndarray] = field(default_factory=list)
    advantage: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    samples: int = 0

    def add(self, scored: Scored) -> None:
        a = scored.arrays
        n = a["entropy"].size
        adv = scored.encoded.sample.advantage
        for name in ("entropy", "logp", "s", "d"):
            getattr(self, name).append(a[name].astype(np.float64))
        self.advantage.append(np.full(n, np.nan if adv is None else adv))
        if scored.encoded.sample.reward is not None:
            self.rewards.append(scored.encoded.sample.reward)
        self.samples += 1

    def array(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0)


def _rows(scored: Scored, per_token: bool, decode: Callable[[list[int]], list[str]]) -> list[dict]:
    e, a = scored.encoded, scored.arrays
    s = e.sample
    adv = s.advantage
    predicted = None if adv is None else adv * a["d"]
    common = {"id": s.id, "turn": s.turn}
    if per_token:
        tokens = decode(a["token_id"].tolist())
        rows = []
        for i in range(a["entropy"].size):
            row = {**common, "position": i, "token_id": int(a["token_id"][i]), "token": tokens[i],
                   **{k: float(a[k][i]) for k in TOKEN_FIELDS}, "reward": s.reward, "advantage": adv,
                   "predicted_dh": None if predicted is None else float(predicted[i])}
            if scored.measured is not None:
                row["measured_dh"] = float(scored.measured[i])
            rows.append(row)
        return rows
    row = {**common, "prompt_tokens": len(e.prompt_ids), "completion_tokens": len(e.completion_ids),
           "mean_entropy": float(a["entropy"].mean()), "max_entropy": float(a["entropy"].max()),
           "sum_logp": float(a["logp"].sum()), "mean_s": float(a["s"].mean()), "mean_d": float(a["d"].mean()),
           "reward": s.reward, "advantage": adv,
           "predicted_dh": None if predicted is None else float(predicted.sum())}
    if scored.measured is not None:
        row["measured_dh"] = float(scored.measured.sum())
    return [row]


def rule_fractions(collected: Collected, config: AuditConfig) -> dict[str, Any]:
    """The fraction of the audited tokens each entropy-control rule would clip, all tokens taken
    as one batch (the controls of ``irtk.entropy.control`` themselves run on them)."""
    import torch

    from irtk.entropy.control import CONTROLS
    from irtk.entropy.math import TokenStats

    entropy = torch.from_numpy(collected.array("entropy")).float().unsqueeze(0)
    logp = torch.from_numpy(collected.array("logp")).float().unsqueeze(0)
    s = torch.from_numpy(collected.array("s")).float().unsqueeze(0)
    d = torch.from_numpy(collected.array("d")).float().unsqueeze(0)
    adv = torch.from_numpy(collected.array("advantage")).float().unsqueeze(0)
    mask = torch.ones_like(entropy, dtype=torch.bool)
    stats = TokenStats(entropy=entropy, logp=logp, s=s, expected_s=d + s, d=d)
    has_adv = bool(mask.numel()) and not torch.isnan(adv).any().item()
    generator = torch.Generator().manual_seed(config.seed)
    out: dict[str, Any] = {}
    names = ("clipb", "clipv", "clip-cov", "top-entropy") if has_adv else ("top-entropy",)
    for name in names:
        result = CONTROLS.load(name)(stats=stats, advantages=adv if has_adv else torch.zeros_like(adv),
                                     mask=mask, logps=logp, config=config.control, generator=generator)
        out[name] = result.stats
    return out


def summarize(collected: Collected, config: AuditConfig, seconds: float) -> dict[str, Any]:
    """The run's summary: token counts, entropy, rule fractions, predicted dH by advantage sign."""
    h = collected.array("entropy")
    summary: dict[str, Any] = {
        "samples": collected.samples, "tokens": int(h.size), "seconds": round(seconds, 2),
        "mean_entropy": float(h.mean()) if h.size else None,
        "median_entropy": float(np.median(h)) if h.size else None,
        "p90_entropy": float(np.quantile(h, 0.9)) if h.size else None,
        "mean_reward": float(np.mean(collected.rewards)) if collected.rewards else None,
        "rules": rule_fractions(collected, config) if h.size else {},
        "parameters": {"clipb_mu": config.control.clipb_mu, "clipv_mu": config.control.clipv_mu,
                       "clipv_max_frac": config.control.clipv_max_frac, "cov_ratio": config.control.cov_ratio,
                       "clip_cov_band": [config.control.clip_cov_lb, config.control.clip_cov_ub],
                       "top_entropy_quantile": config.control.top_entropy_quantile},
    }
    adv = collected.array("advantage")
    if h.size and not np.isnan(adv).any():
        predicted = adv * collected.array("d")
        summary["predicted_dh_per_lr"] = {
            sign: {"tokens": int(sel.sum()), "sum": float(predicted[sel].sum()),
                   "mean": float(predicted[sel].mean()) if sel.any() else None}
            for sign, sel in (("positive", adv > 0), ("negative", adv < 0), ("all", np.ones_like(adv, bool)))
        }
    return summary


@dataclass
class AuditResult:
    summary: dict[str, Any]
    collected: Collected
    verify: dict[str, Any] | None = None


def run_audit(config: AuditConfig, rows: Iterable[dict], source: str, write: Callable[[list[dict]], None], *,
              model: ScoringModel | None = None, warn: Callable[[str], None] = lambda _: None,
              progress: Callable[[int], None] = lambda n: None, verify_params: str = "head") -> AuditResult:
    """Score every sample and ``write`` its rows; with ``config.verify_step``, take the step and
    measure the entropy change first (the samples are then held until it is done)."""
    start = time.perf_counter()
    model = model or load_scoring_model(config)
    encoder = Encoder(model.tokenizer, config.template, model.context, source, config.completion_field)

    def decode_each(ids: list[int]) -> list[str]:
        return model.tokenizer.batch_decode([[i] for i in ids])

    collected = Collected()
    samples = (encoder.encode(s) for s in read_samples(rows, config, source, warn))
    held: list[tuple[list[Encoded], list[Scored]]] = []
    for batch in batches_of(samples, config.batch_size, config.max_tokens_per_batch):
        arrays = model.stats(batch, keep_hidden=config.verify_step is not None)
        scored = [Scored(e, a) for e, a in zip(batch, arrays, strict=True)]
        for s in scored:
            collected.add(s)
        if config.verify_step is None:
            write([r for s in scored for r in _rows(s, config.per_token, decode_each)])
        else:
            held.append((batch, scored))
        progress(len(batch))
    if collected.samples == 0:
        raise InputError("no samples to score (no completions in the input)", source=source)
    verify = None
    if config.verify_step is not None:
        verify = _verify(model, held, collected, config.verify_step, verify_params)
        for _, scored in held:
            write([r for s in scored for r in _rows(s, config.per_token, decode_each)])
    summary = summarize(collected, config, time.perf_counter() - start)
    if verify is not None:
        summary["verify_step"] = {k: v for k, v in verify.items() if not isinstance(v, np.ndarray)}
    return AuditResult(summary, collected, verify)


def _verify(model: ScoringModel, held: list[tuple[list[Encoded], list[Scored]]], collected: Collected,
            lr: float, params: str) -> dict[str, Any]:
    if any(s.encoded.sample.advantage is None for _, scored in held for s in scored):
        raise UsageError("--verify-step needs advantages: an 'advantage' column, or rewards with --group-by")
    scored_all = [s for _, scored in held for s in scored]
    adv, d = collected.array("advantage"), collected.array("d")
    predicted = lr * adv * d
    out: dict[str, Any] = {"learning_rate": lr, "params": params, "predicted": predicted, "advantage": adv}
    if params == "head":
        hidden = np.concatenate([s.arrays["hidden"] for s in scored_all])
        targets = np.concatenate([s.arrays["token_id"] for s in scored_all])
        # Before the step: the head's exact first-order change, its diagonal being lr*|h|^2*A*D.
        out["kernel_predicted"] = predicted * _head_kernel(model, hidden)
        out["first_order_predicted"] = head_first_order(
            model, hidden, targets, collected.array("entropy"), collected.array("logp"), adv, lr)
    policy_gradient_step(model, [batch for batch, _ in held], lr, params)
    for batch, scored in held:
        for s, after in zip(scored, model.stats(batch), strict=True):
            s.measured = after["entropy"].astype(np.float64) - s.arrays["entropy"].astype(np.float64)
    measured = np.concatenate([s.measured for s in scored_all])
    out["measured"] = measured
    out["paper"] = agreement(predicted, measured)
    for key, name in (("kernel_predicted", "kernel_scaled"), ("first_order_predicted", "first_order")):
        if out.get(key) is not None:
            out[name] = agreement(out[key], measured)
    out["by_sign"] = {sign: {"tokens": int(sel.sum()), "measured_sum": float(measured[sel].sum()),
                             "predicted_sum": float(predicted[sel].sum())}
                      for sign, sel in (("positive", adv > 0), ("negative", adv < 0))}
    return out


def _head_kernel(model: ScoringModel, hidden: np.ndarray) -> np.ndarray:
    """|h|^2 (+1 with a bias) / T^2: how far a head step on one token moves its own logits."""
    bias = 1.0 if model.head.bias is not None else 0.0
    return (np.square(hidden.astype(np.float64)).sum(-1) + bias) / model.temperature ** 2


def head_first_order(model: ScoringModel, hidden: np.ndarray, targets: np.ndarray, entropy: np.ndarray,
                     logp: np.ndarray, advantage: np.ndarray, lr: float) -> np.ndarray | None:
    """First-order entropy change at every token of an SGD step of the LM head alone on
    -sum_s A_s log p(k_s), cross-token terms included (the head is linear, so this is exact to
    first order): dH_t = -lr/T^2 sum_s A_s (h_s . h_t + [bias]) (S_t(k_s) - sum_j S_t(j) p_s(j)).
    The s = t term is lr*|h_t|^2/T^2*A_t*D_t. O(n^2 V) for n tokens, one vocabulary tile at a
    time. None under a final logit soft-cap (the head is then not linear)."""
    import torch

    if model.softcap:
        return None
    weight = model.head.weight.detach().float()
    bias = None if model.head.bias is None else model.head.bias.detach().float()
    device = weight.device
    h = torch.from_numpy(hidden).float().to(device)
    k = torch.from_numpy(targets).long().to(device)
    ent = torch.from_numpy(entropy).float().to(device)
    temp = model.temperature

    def logits(rows: torch.Tensor, cols: torch.Tensor | slice) -> torch.Tensor:
        z = rows @ weight[cols].T
        return (z if bias is None else z + bias[cols]) / temp

    with torch.no_grad():
        own = (h * weight[k]).sum(-1) + (0.0 if bias is None else bias[k])
        log_z = own / temp - torch.from_numpy(logp).float().to(device)
        log_pk = logits(h, k) - log_z[:, None]  # [t, s]: log p_t(k_s)
        s_cross = log_pk.exp() * (ent[:, None] + log_pk)
        m = torch.zeros_like(s_cross)  # [t, s]: sum_j S_t(j) p_s(j)
        vocab = weight.shape[0]
        for v0 in range(0, vocab, model.tile_size):
            log_p = logits(h, slice(v0, min(vocab, v0 + model.tile_size))) - log_z[:, None]
            p = log_p.exp()
            m += (p * (ent[:, None] + log_p)) @ p.T
        kernel = (h @ h.T + (0.0 if bias is None else 1.0)) / temp ** 2
        adv = torch.from_numpy(advantage).float().to(device)
        dh = -lr * ((s_cross - m) * kernel * adv[None, :]).sum(-1)
    return dh.double().cpu().numpy()
