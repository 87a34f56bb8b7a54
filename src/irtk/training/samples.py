"""Turn-level training samples: expert trajectories (Stage I) and rollouts (Stage II) cut into
one sample per agent turn, prompted exactly as ``simulate --policy model`` prompts the agent.

A sample is a dict with TRL's conversational ``prompt`` (the model policy's conversation:
instructions, the request, then the dialogue so far) and the columns the reward presets read
(``target_intents``, ``intents``, ``history``, ``simple_query``, ``rollout``,
``matched_intents``), plus bookkeeping (``id``, ``seed_id``, ``turn``, ``prefix_turns``,
``source``) and, for expert turns, the expert's question as ``completion`` (the SFT target).

Seeds split the data: ``split_by_seed`` holds out whole seeds (never single dialogues), and
``check_disjoint`` refuses an evaluation file that shares a seed with the training data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from irtk.dialogue.episode import Episode
from irtk.dialogue.gate import ANSWERED
from irtk.dialogue.policies import ModelPolicy
from irtk.dialogue.prompts import STOP_WORD
from irtk.errors import UsageError
from irtk.generation import SamplingParams
from irtk.graphs.render import template_answer, template_question

# Columns every sample carries (the reward presets read the first six).
COLUMNS = ("prompt", "target_intents", "intents", "history", "simple_query", "rollout",
           "matched_intents", "id", "seed_id", "turn", "prefix_turns", "source")


def seed_of(row: Mapping) -> str:
    """The seed a trajectory grew from (its own id when it has no ``seed_id``)."""
    return str(row.get("seed_id") or row["id"])


def expert_turns(row: Mapping) -> list[dict]:
    """The trajectory's expert dialogue as simulate's turn dicts (question, answer, matched intent).

    Questions and answers come from the rendered ``dialogue`` when it has them, else from the
    path's templates, so prompts show what the expert dialogue shows.
    """
    path = list(row.get("path") or [])
    messages = list(row.get("dialogue") or [])
    asked = [m["content"] for m in messages if m.get("role") == "assistant"]
    answered = [m["content"] for m in messages if m.get("role") == "user"]
    turns = []
    for i, step in enumerate(path):
        question = asked[i] if i < len(asked) else template_question(step)
        answer = answered[i] if i < len(answered) else template_answer(step)
        turns.append({"turn": i + 1, "question": str(question), "answer": str(answer), "verdict": ANSWERED,
                      "matched_intent": step.get("intent"), "similarity": None,
                      "target_intents": list(step.get("target_intents") or []), "content": None,
                      "format": None, "penalty": None, "reward": None, "prompt_tokens": 0,
                      "completion_tokens": 0})
    return turns


def _policy(allow_stop: bool) -> ModelPolicy:
    # The prompt builder of ``simulate --policy model``; no backend needed to build prompts.
    return ModelPolicy(None, SamplingParams(), allow_stop=allow_stop)


def episode_with(row: Mapping, turns: Sequence[dict]) -> Episode:
    """An episode of ``row`` whose dialogue so far is ``turns``."""
    return Episode(dict(row), turns=[dict(t) for t in turns])


def turn_sample(row: Mapping, turns: Sequence[dict], turn: int, targets: Sequence[str], *,
                policy: ModelPolicy, rollout: bool, prefix_turns: int, source: str) -> dict:
    """The sample for the agent's turn ``turn`` after the dialogue ``turns`` (turns before it)."""
    episode = episode_with(row, turns)
    return {
        "prompt": policy.conversation(episode),
        "target_intents": [str(t) for t in targets],
        "intents": episode.intents,
        "history": episode.questions(),
        "simple_query": episode.query,
        "rollout": rollout,
        "matched_intents": list(dict.fromkeys(episode.matched())),
        "id": episode.id,
        "seed_id": seed_of(row),
        "turn": turn,
        "prefix_turns": prefix_turns,
        "source": source,
    }


def expert_samples(rows: Iterable[Mapping], *, allow_stop: bool = False) -> list[dict]:
    """Stage I: one sample per expert turn, the prefix before it as the prompt, that turn's
    hindsight intent set as the targets and the expert's question as ``completion``. With
    ``allow_stop`` each dialogue adds a final sample whose right answer is STOP (nothing left)."""
    policy = _policy(allow_stop)
    samples = []
    for row in rows:
        turns = expert_turns(row)
        for t, step in enumerate(turns, start=1):
            targets = step["target_intents"] or _unmatched(row, turns[:t - 1])
            s = turn_sample(row, turns[:t - 1], t, targets, policy=policy, rollout=False,
                            prefix_turns=t - 1, source="expert")
            s["completion"] = [{"role": "assistant", "content": step["question"]}]
            samples.append(s)
        if allow_stop and turns:
            s = turn_sample(row, turns, len(turns) + 1, _unmatched(row, turns), policy=policy,
                            rollout=False, prefix_turns=len(turns), source="expert-stop")
            s["completion"] = [{"role": "assistant", "content": STOP_WORD}]
            samples.append(s)
    return samples


def _unmatched(row: Mapping, turns: Sequence[dict]) -> list[str]:
    matched = {t.get("matched_intent") for t in turns}
    return [str(i) for i in row.get("intents") or [] if i not in matched]


def rollout_samples(row: Mapping, turns: Sequence[dict], prefix_turns: int, *, allow_stop: bool = False) -> list[dict]:
    """Stage II: one sample per turn the policy played after the ``prefix_turns`` expert turns
    (a STOP turn included: it is a state where the policy chose to stop), with the targets
    simulate scored that turn against."""
    policy = _policy(allow_stop)
    out = []
    for i in range(prefix_turns, len(turns)):
        done = turns[:i]
        out.append(turn_sample(row, done, i + 1, turns[i].get("target_intents") or [], policy=policy,
                               rollout=True, prefix_turns=prefix_turns, source="rollout"))
    return out


def fit_prompts(samples: list[dict], count_tokens: Callable[[list[dict]], int], max_tokens: int) -> int:
    """Drop the oldest exchanges of prompts longer than ``max_tokens`` (the instructions and the
    request stay; TRL 1.16 has no prompt truncation of its own). Returns how many were cut."""
    cut = 0
    for s in samples:
        prompt = s["prompt"]
        head, tail = prompt[:2], prompt[2:]
        if count_tokens(prompt) <= max_tokens:
            continue
        cut += 1
        while tail and count_tokens(head + tail) > max_tokens:
            tail = tail[2:]  # one question and its answer
        s["prompt"] = head + tail
    return cut


def subsample(samples: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A seeded subset of at most ``limit`` samples, in their original order."""
    if limit is None or len(samples) <= limit:
        return samples
    keep = sorted(random.Random(seed).sample(range(len(samples)), limit))
    return [samples[i] for i in keep]


# ----------------------------------------------------------------------------- seed split


def split_by_seed(rows: Sequence[Mapping], holdout: float, seed: int) -> tuple[list[Mapping], list[Mapping]]:
    """(train, held-out) trajectories: a seeded ``holdout`` fraction of the seeds (at least one
    when holdout > 0) goes to held-out with every trajectory grown from it."""
    seeds = sorted({seed_of(r) for r in rows})
    if not holdout:
        return list(rows), []
    rng = random.Random(f"holdout:{seed}")
    order = seeds[:]
    rng.shuffle(order)
    n = max(1, round(holdout * len(seeds)))
    if n >= len(seeds):
        raise UsageError(f"--holdout {holdout} leaves no training seed ({len(seeds)} seed(s) in the data)")
    held = set(order[:n])
    return [r for r in rows if seed_of(r) not in held], [r for r in rows if seed_of(r) in held]


def check_disjoint(train: Iterable[Mapping], held: Iterable[Mapping], *, held_name: str) -> None:
    """Fail when a held-out seed also occurs in the training data (the split must be by seed)."""
    shared = sorted({seed_of(r) for r in train} & {seed_of(r) for r in held})
    if shared:
        more = f" (and {len(shared) - 3} more)" if len(shared) > 3 else ""
        raise UsageError(f"{held_name}: evaluation seed(s) {', '.join(shared[:3])}{more} also occur in "
                         "the training data; split by seed")


def split_record(train: Sequence[Mapping], held: Sequence[Mapping], **how: Any) -> dict:
    """The split as provenance: which seeds trained and which evaluated."""
    return {**how, "train_seeds": sorted({seed_of(r) for r in train}),
            "eval_seeds": sorted({seed_of(r) for r in held}),
            "train_trajectories": len(train), "eval_trajectories": len(held)}


