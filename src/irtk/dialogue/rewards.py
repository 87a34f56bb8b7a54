"""Turn-level rewards of IntentRL, as TRL reward functions, and the per-stage reward presets.

One implementation serves ``irtk simulate`` (scoring each simulated turn) and the GRPO trainers.
Every reward function has TRL's signature ``fn(prompts, completions, **kwargs) -> list[float]``;
``kwargs`` carry the dataset's columns. What each function reads:

===================  ==========================================================================
function             columns
===================  ==========================================================================
content              ``target_intents`` (required): per sample, the intents this turn should ask
                     about (Stage I's hindsight targets; in simulation the trajectory step's
                     targets, else the intents not yet matched)
format               none
penalty              ``intents`` (required): the user's whole latent intent set (the deviation
                     test); ``history``: the agent's earlier questions (when absent, the
                     assistant messages of a conversational prompt); ``simple_query``
                     (optional): the user's fuzzy request, for the restatement test;
                     ``graph`` and ``path`` (optional): the user's C-DAG and path, for the
                     path gate's deviation test (without them, the intents decide)
gated content        as content and penalty, plus ``rollout``
(Stage II)
penalty (Stage II)   as penalty, plus ``rollout`` (optional, default false): true for turns cut
                     from an online rollout; the penalties apply only there (a sample without
                     the column, or with it false, is an expert-prefix sample)
stop                 ``target_intents`` (required), ``matched_intents`` (optional): intents the
                     user already stated in the prefix
===================  ==========================================================================

A function called without a column it requires raises ``InputError`` naming the column (never a
silent -1 for every sample).

Scores (IntentRL, "Rewards"; "[recon]" where the paper gives no formula):

- content ``R_con`` = max cosine of the question to the target intents (0 without targets) [recon];
  ``content="answered"`` (beyond the paper) counts it only when the simulated user's gate answers
  the question with an intent not stated earlier in the dialogue (``matched_intents``), else 0:
  the cosine alone rewards topicality (a question that restates the request, or repeats what the
  user already said, is as close to the intents as one that asks about them), the gate's verdict
  is what intent precision and recall count;
- format ``R_fmt`` = 1 / 0.5 / 0 for one / two / any other number of questions. Every run of
  question marks counts, wherever it stands — "Q: ...?", "1. ...?", and anything after an
  "Options:" label — so extra questions cannot hide among the options (answer options are
  statements; the paper used an LLM judge, counting question marks approximates it);
- penalty ``P`` >= 0: repetition (cosine to an earlier question > tau_rep), restatement (cosine
  to the request > tau_req, its own calibrated threshold: a proxy for the paper's LLM-judged
  "insignificance" of a question that only restates the request) and deviation (best cosine to
  the intents < tau_rel), each ``gamma * (n + 1)`` where n counts how often that happened
  earlier in the dialogue, so the first occurrence is penalised and later ones more [recon];
- total ``R = beta * R_con * [P == 0] + R_fmt - P`` [recon]; the offline Quality Score is
  ``2 * R_con + R_fmt``.

Presets (``REWARD_PRESETS``, ``--reward``): ``stage1`` = beta * content + format (the paper applies
penalties only in Stage II); ``stage2`` = beta * content * [no penalty] + format - penalty, with
the penalties on rollout samples only. With ``allow_stop`` both add a stop reward: a STOP
completion scores +1 when nothing is left to ask (no target, or every target already in
``matched_intents``), -1 otherwise, and no content, format or penalty.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from irtk.dialogue.gate import ANSWERED, IRRELEVANT, EmbeddingGate, Thresholds, Verdict
from irtk.dialogue.policies import is_stop
from irtk.errors import InputError, UsageError
from irtk.models import DEFAULT_EMBEDDER
from irtk.registry import Registry

BETA = 2.0
GAMMA = 2.0
# How R_con is scored: the paper's cosine [recon], or that cosine only for questions the simulated
# user answers with an intent it has not stated yet (module docstring).
CONTENT_MODES = ("cosine", "answered")

# A run such as "??", "?!?" or "？" (CJK) is one question.
_QUESTION_MARKS = re.compile(r"[?\uff1f][?!\uff1f\uff01\s]*")


def count_questions(text: str) -> int:
    """Questions in an agent turn: every run of question marks, wherever it stands.

    Numbered or labelled lines ("1. ...?", "Q: ...?") are questions like any other, and so is a
    question written after the "Options:" label — answer options are statements, so a question
    mark among them is an extra question."""
    return len(_QUESTION_MARKS.findall(text))


def answers_new(verdict: Verdict, stated: Sequence[str]) -> bool:
    """Whether the simulated user answers the question with an intent it has not stated yet (what
    ``content="answered"`` counts, and what raises intent recall)."""
    return verdict.verdict == ANSWERED and verdict.matched_intent not in stated


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


def _column(kwargs: Mapping, name: str, n: int, *, required_by: str | None = None) -> list | None:
    """Column ``name`` of the batch; ``required_by`` names the reward that cannot do without it."""
    value = kwargs.get(name)
    if value is None:
        if required_by is not None:
            raise InputError(f"the {required_by} reward needs the dataset column {name!r} "
                             f"(columns given: {', '.join(sorted(kwargs)) or 'none'})", field=name)
        return None
    value = list(value)
    if len(value) != n:
        raise InputError(f"reward column {name!r} has {len(value)} entries for {n} completions",
                         field=name)
    return value


def _texts(column: list) -> list[list[str]]:
    return [[str(t) for t in (ts or [])] for ts in column]


@dataclass(frozen=True)
class TurnScore:
    """Every part of one turn's reward, and the gate's verdict behind the penalties."""

    content: float
    format: float
    penalty: float
    reward: float
    repeats: bool
    restates: bool
    deviates: bool
    verdict: Verdict

    @property
    def quality(self) -> float:
        return 2.0 * self.content + self.format


class IntentRewards:
    """The reward functions bound to one embedder and one set of thresholds and weights.

    The embedder loads on first use. Thresholds and ``mode`` (path or embedding gate) as in
    ``EmbeddingGate``. Pass ``gate`` to share an embedding cache (and thresholds) with a
    simulator. ``content`` is one of ``CONTENT_MODES``.
    """

    def __init__(self, embedder: str | Any = DEFAULT_EMBEDDER, *, thresholds: Thresholds | None = None,
                 tau_rep: float | None = None, tau_rel: float | None = None, tau_req: float | None = None,
                 mode: str = "path", beta: float = BETA, gamma: float = GAMMA,
                 gate: EmbeddingGate | None = None, content: str = "cosine") -> None:
        if content not in CONTENT_MODES:
            raise UsageError(f"--content must be one of {', '.join(CONTENT_MODES)}, got {content!r}")
        self.content = content
        self.gate = gate or EmbeddingGate(embedder, thresholds=thresholds, tau_rep=tau_rep, tau_rel=tau_rel,
                                          tau_req=tau_req, mode=mode)
        self.beta = beta
        self.gamma = gamma

    def contents(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """R_con per completion (needs ``target_intents``; with ``content="answered"`` also what
        ``score`` reads, since the gate decides)."""
        if self.content == "answered":
            _column(kwargs, "intents", len(completions), required_by="answered content")
            return [s.content for s in self.score(None, completions, **kwargs)]
        texts = [completion_text(c) for c in completions]
        targets = _texts(_column(kwargs, "target_intents", len(texts), required_by="content"))
        self.gate.prefetch([t for i, text in enumerate(texts) for t in (text, *targets[i])])
        return [self.gate.best(text, tgt)[0] if tgt else 0.0 for text, tgt in zip(texts, targets, strict=True)]

    def score(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[TurnScore]:
        """Score each completion as the agent's next question: content, format, every penalty
        (needs ``target_intents`` and ``intents``; ``matched_intents``, the intents the user
        already stated, for ``content="answered"``; see the module docstring)."""
        n = len(completions)
        texts = [completion_text(c) for c in completions]
        targets = _texts(_column(kwargs, "target_intents", n, required_by="content"))
        intents = _texts(_column(kwargs, "intents", n, required_by="penalty"))
        requests = _column(kwargs, "simple_query", n) or [None] * n
        history = _column(kwargs, "history", n)
        if history is None:
            prompts = list(prompts) if prompts is not None else [None] * n
            history = [_history_of(p) for p in prompts]
        history = [[completion_text(h) for h in (hs or [])] for hs in history]
        requests = [str(q) if q else None for q in requests]
        graphs = _column(kwargs, "graph", n) or [None] * n
        paths = _column(kwargs, "path", n) or [None] * n
        stated = _texts(_column(kwargs, "matched_intents", n) or [[] for _ in range(n)])
        gate = self.gate
        gate.prefetch([t for i in range(n) for t in (*gate.texts_for(texts[i], history[i], intents[i],
                                                                        requests[i], graphs[i]), *targets[i])])
        scores = []
        for text, tgt, its, hist, req, graph, path, said in zip(texts, targets, intents, history, requests,
                                                                 graphs, paths, stated, strict=True):
            verdict = gate.judge(text, hist, its, req, graph=graph, path=path)
            repeats = verdict.repeats  # the gate checks redundancy first, before every other verdict
            restates = req is not None and verdict.request_similarity > gate.tau_req
            deviates = gate.relevance(text, its, graph=graph, path=path).verdict == IRRELEVANT
            # How often each already happened in this dialogue: the penalty grows with it.
            prior_repeats = sum(gate.redundancy(hist[i], hist[:i], graph)[0] for i in range(1, len(hist)))
            prior_restates = sum(gate.best(h, [req])[0] > gate.tau_req for h in hist) if req else 0
            prior_deviations = sum(gate.relevance(h, its, graph=graph, path=path).verdict == IRRELEVANT
                                   for h in hist)
            penalty = sum(self.gamma * (prior + 1) for fired, prior in (
                (repeats, prior_repeats), (restates, prior_restates), (deviates, prior_deviations)) if fired)
            content = gate.best(text, tgt)[0] if tgt else 0.0
            if self.content == "answered" and not answers_new(verdict, said):
                content = 0.0
            fmt = format_score(text)
            reward = (self.beta * content if penalty == 0 else 0.0) + fmt - penalty
            scores.append(TurnScore(content, fmt, penalty, reward, repeats, restates, deviates, verdict))
        return scores

    # TRL reads ``__name__`` to label each reward in its logs: keep these method names.
    def content_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """R_con: max cosine of the question to the turn's target intents."""
        return self.contents(completions, **kwargs)

    def format_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """R_fmt: 1 / 0.5 / 0 for one / two / other numbers of questions (no embedder needed)."""
        return [format_score(completion_text(c)) for c in completions]

    def penalty_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """-P: the repetition, restatement and deviation penalties, as a (non-positive) reward."""
        return [-s.penalty for s in self.score(prompts, completions, **kwargs)]

    def total_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """R = beta * R_con (only when no penalty fires) + R_fmt - P."""
        return [s.reward for s in self.score(prompts, completions, **kwargs)]

    def quality_reward(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """The offline Quality Score 2 * R_con + R_fmt (max 3)."""
        return [2.0 * c + format_score(completion_text(x))
                for c, x in zip(self.contents(completions, **kwargs), completions, strict=True)]


# ----------------------------------------------------------------------------- presets

RewardFunc = Callable[..., list[float]]


@dataclass(frozen=True)
class RewardPreset:
    """A stage's reward as TRL wants it: ``GRPOTrainer(reward_funcs=p.funcs)`` with
    ``GRPOConfig(reward_weights=p.weights)``; the weighted sum is the stage's total reward and
    each function logs under its own ``__name__``."""

    name: str
    funcs: list[RewardFunc]
    weights: list[float]

    def total(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """The weighted sum of every component, per completion."""
        parts = [f(prompts, completions, **kwargs) for f in self.funcs]
        return [sum(w * p[i] for w, p in zip(self.weights, parts, strict=True)) for i in range(len(completions))]


def _named(name: str, fn: RewardFunc, doc: str) -> RewardFunc:
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


def _stops(completions: Sequence[Any], allow_stop: bool) -> list[bool]:
    return [allow_stop and is_stop(completion_text(c)) for c in completions]


def _rollouts(kwargs: Mapping, n: int) -> list[bool]:
    return [bool(r) for r in (_column(kwargs, "rollout", n) or [False] * n)]


def stop_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """+1 for STOP when nothing is left to ask (no target, or every target already in
    ``matched_intents``), -1 for STOP otherwise, 0 for a question."""
    n = len(completions)
    targets = _texts(_column(kwargs, "target_intents", n, required_by="stop"))
    matched = _texts(_column(kwargs, "matched_intents", n) or [[] for _ in range(n)])
    return [(1.0 if set(t) <= set(m) else -1.0) if stop else 0.0
            for stop, t, m in zip(_stops(completions, True), targets, matched, strict=True)]


def _question_reward(fn: RewardFunc, stops_allowed: bool) -> RewardFunc:
    """``fn`` scored on the questions only: a STOP completion (when stopping is allowed) gets 0."""
    def wrapped(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        stops = _stops(completions, stops_allowed)
        keep = [i for i, s in enumerate(stops) if not s]
        out = [0.0] * len(completions)
        if keep:
            sub = {k: ([v[i] for i in keep] if isinstance(v, Sequence) and not isinstance(v, str)
                       and len(v) == len(completions) else v) for k, v in kwargs.items()}
            sub_prompts = [prompts[i] for i in keep] if prompts is not None else None
            for i, value in zip(keep, fn(sub_prompts, [completions[i] for i in keep], **sub), strict=True):
                out[i] = value
        return out
    return wrapped


def stage1(*, rewards: IntentRewards | None = None, allow_stop: bool = False, **_: Any) -> RewardPreset:
    """Stage I (offline, expert prefixes): beta * content + format, no penalties."""
    r = rewards or DEFAULT_REWARDS
    funcs = [
        _named("content_reward", _question_reward(r.content_reward, allow_stop), r.content_reward.__doc__),
        _named("format_reward", _question_reward(r.format_reward, allow_stop), r.format_reward.__doc__),
    ]
    weights = [r.beta, 1.0]
    if allow_stop:
        funcs.append(stop_reward)
        weights.append(1.0)
    return RewardPreset("stage1", funcs, weights)


def stage2(*, rewards: IntentRewards | None = None, allow_stop: bool = False, **_: Any) -> RewardPreset:
    """Stage II (rollouts mixed with expert prefixes): beta * content * [no penalty] + format -
    penalty, the penalties only on samples whose ``rollout`` column is true."""
    r = rewards or DEFAULT_REWARDS

    def gated_content(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        rollout = _rollouts(kwargs, len(completions))
        if not any(rollout):
            return r.contents(completions, **kwargs)
        return [s.content if not (ro and s.penalty > 0) else 0.0
                for s, ro in zip(r.score(prompts, completions, **kwargs), rollout, strict=True)]

    def penalty(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        rollout = _rollouts(kwargs, len(completions))
        if not any(rollout):
            return [0.0] * len(completions)
        return [-s.penalty if ro else 0.0
                for s, ro in zip(r.score(prompts, completions, **kwargs), rollout, strict=True)]

    funcs = [
        _named("gated_content_reward", _question_reward(gated_content, allow_stop),
               "R_con, zeroed on a rollout sample that draws a penalty."),
        _named("format_reward", _question_reward(r.format_reward, allow_stop), r.format_reward.__doc__),
        _named("penalty_reward", _question_reward(penalty, allow_stop),
               "-P on rollout samples (repetition, restatement, deviation); 0 on expert-prefix samples."),
    ]
    weights = [r.beta, 1.0, 1.0]
    if allow_stop:
        funcs.append(stop_reward)
        weights.append(1.0)
    return RewardPreset("stage2", funcs, weights)


# ``REWARD_PRESETS.create(name, rewards=IntentRewards(...), allow_stop=False)`` -> RewardPreset.
REWARD_PRESETS = Registry("reward preset", "--reward", {
    "stage1": "irtk.dialogue.rewards:stage1",
    "stage2": "irtk.dialogue.rewards:stage2",
})

# Module-level functions on the default embedder and thresholds, for
# ``GRPOTrainer(reward_funcs=[irtk.dialogue.rewards.total_reward])`` or ``module:attr`` registries.
DEFAULT_REWARDS = IntentRewards()
content_reward = DEFAULT_REWARDS.content_reward
format_reward = DEFAULT_REWARDS.format_reward
penalty_reward = DEFAULT_REWARDS.penalty_reward
total_reward = DEFAULT_REWARDS.total_reward
quality_reward = DEFAULT_REWARDS.quality_reward
