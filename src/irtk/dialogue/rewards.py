"""Turn-level rewards of IntentRL, as TRL reward functions.

One implementation serves ``irtk simulate`` (scoring each simulated turn) and the GRPO trainers
(``GRPOTrainer(reward_funcs=[total_reward])``). Every function has TRL's signature
``fn(prompts, completions, **kwargs) -> list[float]``; ``kwargs`` carry the dataset's columns:

- ``target_intents`` — per sample, the intents this turn should ask about (Stage I's hindsight
  targets; in simulation, the trajectory step's targets, else the intents not yet matched);
- ``intents`` — per sample, the user's whole latent intent set (the deviation test); defaults to
  ``target_intents``;
- ``history`` — per sample, the agent's earlier questions; when absent, the assistant messages of
  a conversational prompt are used;
- ``simple_query`` — per sample, the user's fuzzy request. The paper's history starts with it, so
  a question that merely restates the request counts as a repetition.

Scores (IntentRL, "Rewards"; "[recon]" where the paper gives no formula):

- content ``R_con`` = max cosine of the question to the target intents (0 without targets) [recon];
- format ``R_fmt`` = 1 / 0.5 / 0 for one / two / any other number of questions; answer options do
  not count as questions (the paper used an LLM judge; counting question marks outside the
  options approximates it);
- penalty ``P`` ≥ 0: repetition (cosine to the request or an earlier question > tau_rep) and
  deviation (best
  cosine to the intents < tau_rel), each ``gamma * (n + 1)`` where n counts how often that
  happened earlier in the dialogue, so the first occurrence is penalised and later ones more
  [recon];
- total ``R = beta * R_con * [P == 0] + R_fmt - P`` [recon]; the offline Quality Score is
  ``2 * R_con + R_fmt``.

The paper's third penalty (an LLM judge's "insignificance" verdict) is not implemented.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from irtk.dialogue.gate import DEFAULT_TAU_REL, DEFAULT_TAU_REP, EmbeddingGate, Verdict
from irtk.models import DEFAULT_EMBEDDER

BETA = 2.0
GAMMA = 2.0

# Everything from an "Options:" label on, and lines that are list items, are answer options.
_OPTIONS_LABEL = re.compile(r"\boptions?\s*:", re.IGNORECASE)
_OPTION_LINE = re.compile(r"^\s*(?:[-*\u2022]|\(?[A-Za-z0-9]\)|[A-Za-z0-9][.:]\s)")
_QUESTION_MARKS = re.compile(r"[?\uff1f]+")  # a run such as "?!?" or "？" (CJK) counts once


def count_questions(text: str) -> int:
    """Questions in an agent turn, not counting its answer options."""
    body = _OPTIONS_LABEL.split(text, maxsplit=1)[0]
    lines = [line for line in body.splitlines() if not _OPTION_LINE.match(line)]
    return len(_QUESTION_MARKS.findall("\n".join(lines)))


def format_score(text: str) -> float:
    """1 for one question, 0.5 for two, 0 for none or more than two."""
    return {1: 1.0, 2: 0.5}.get(count_questions(text), 0.0)


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, a message, or a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence):
        return "".join(completion_text(m) for m in completion if not isinstance(m, Mapping)
                       or m.get("role", "assistant") == "assistant")
    return "" if completion is None else str(completion)


def _history_of(prompt: Any) -> list[str]:
    """The assistant turns of a conversational prompt (plain-text prompts carry none)."""
    if isinstance(prompt, Sequence) and not isinstance(prompt, str):
        return [str(m.get("content") or "") for m in prompt
                if isinstance(m, Mapping) and m.get("role") == "assistant"]
    return []


def _column(kwargs: Mapping, name: str, n: int) -> list | None:
    value = kwargs.get(name)
    if value is None:
        return None
    value = list(value)
    if len(value) != n:
        raise ValueError(f"reward column {name!r} has {len(value)} entries for {n} completions")
    return value


@dataclass(frozen=True)
class TurnScore:
    """Every part of one turn's reward, and the gate's verdict behind the penalties."""

    content: float
    format: float
    penalty: float
    reward: float
    repeats: bool
    deviates: bool
    verdict: Verdict

    @property
    def quality(self) -> float:
        return 2.0 * self.content + self.format


class IntentRewards:
    """The reward functions bound to one embedder and one set of thresholds and weights.

    The embedder loads on first use. Pass ``gate`` to share an embedding cache with a
    simulator.
    """

    def __init__(self, embedder: str | Any = DEFAULT_EMBEDDER, *, tau_rep: float = DEFAULT_TAU_REP,
                 tau_rel: float = DEFAULT_TAU_REL, beta: float = BETA, gamma: float = GAMMA,
                 gate: EmbeddingGate | None = None) -> None:
        self.gate = gate or EmbeddingGate(embedder, tau_rep=tau_rep, tau_rel=tau_rel)
        self.beta = beta
        self.gamma = gamma

    def score(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[TurnScore]:
        """Score each completion as the agent's next question."""
        n = len(completions)
        texts = [completion_text(c) for c in completions]
        targets = _column(kwargs, "target_intents", n) or [[] for _ in range(n)]
        intents = _column(kwargs, "intents", n) or targets
        requests = _column(kwargs, "simple_query", n) or [None] * n
        history = _column(kwargs, "history", n)
        if history is None:
            prompts = list(prompts) if prompts is not None else [None] * n
            history = [_history_of(p) for p in prompts]
        targets = [[str(t) for t in (ts or [])] for ts in targets]
        intents = [[str(t) for t in (its or [])] for its in intents]
        history = [[completion_text(h) for h in (hs or [])] for hs in history]
        # What a question must not repeat: the request, then every earlier question.
        context = [([str(q)] if q else []) + h for q, h in zip(requests, history, strict=True)]
        gate = self.gate
        gate.prefetch([t for i in range(n) for t in (texts[i], *targets[i], *intents[i], *context[i])])
        scores = []
        for text, tgt, its, hist, ctx in zip(texts, targets, intents, history, context, strict=True):
            verdict = gate.judge(text, ctx, its)
            repeats = bool(ctx) and verdict.history_similarity > gate.tau_rep
            deviates = verdict.similarity < gate.tau_rel or not its
            skip = len(ctx) - len(hist)  # earlier questions start after the request
            prior_repeats = sum(gate.best(ctx[i], ctx[:i])[0] > gate.tau_rep
                                for i in range(skip, len(ctx)) if i)
            prior_deviations = sum(gate.best(h, its)[0] < gate.tau_rel for h in hist)
            penalty = (self.gamma * (prior_repeats + 1) if repeats else 0.0) + (
                self.gamma * (prior_deviations + 1) if deviates else 0.0)
            content = gate.best(text, tgt)[0] if tgt else 0.0
            fmt = format_score(text)
            reward = (self.beta * content if penalty == 0 else 0.0) + fmt - penalty
            scores.append(TurnScore(content, fmt, penalty, reward, repeats, deviates, verdict))
        return scores

    # TRL reads ``__name__`` to label each reward in its logs: keep these method names.
    def content_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """R_con: max cosine of the question to the turn's target intents."""
        return [s.content for s in self.score(prompts, completions, **kwargs)]

    def format_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """R_fmt: 1 / 0.5 / 0 for one / two / other numbers of questions (no embedder needed)."""
        return [format_score(completion_text(c)) for c in completions]

    def penalty_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """-P: the repetition and deviation penalties, as a (non-positive) reward."""
        return [-s.penalty for s in self.score(prompts, completions, **kwargs)]

    def total_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """R = beta * R_con (only when no penalty fires) + R_fmt - P."""
        return [s.reward for s in self.score(prompts, completions, **kwargs)]

    def quality_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """The offline Quality Score 2 * R_con + R_fmt (max 3)."""
        return [s.quality for s in self.score(prompts, completions, **kwargs)]


# Module-level functions on the default embedder and thresholds, for
# ``GRPOTrainer(reward_funcs=[irtk.dialogue.rewards.total_reward])`` or ``module:attr`` registries.
DEFAULT_REWARDS = IntentRewards()
content_reward = DEFAULT_REWARDS.content_reward
format_reward = DEFAULT_REWARDS.format_reward
penalty_reward = DEFAULT_REWARDS.penalty_reward
total_reward = DEFAULT_REWARDS.total_reward
quality_reward = DEFAULT_REWARDS.quality_reward
