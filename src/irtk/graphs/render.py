"""Dialogues along trajectories: a deterministic template, or LLM role-play of agent and user.

The LLM rendering is batched across trajectories: at turn t one ``backend.chat`` call writes the
agent's question for every trajectory that has a turn t, then one call writes every user's
answer. A reply that comes back empty falls back to the template text for that message (counted,
so a run with a weak model says how often that happened).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from irtk.generation import SamplingParams, chat_or_template
from irtk.graphs import prompts


def template_question(step: Mapping) -> str:
    options = "; ".join(step["options"])
    return f"{step['question']} Options: {options}."


def template_answer(step: Mapping) -> str:
    intent = step.get("intent") or ""
    # An explicit "I want ..." intent is the user's own voice; the fallback phrasing is not.
    if intent.startswith("I want") and not intent.startswith("I want:"):
        return f"{step['choice']}. {intent}"
    return f"{step['choice']}."


def template_dialogue(steps: Sequence[Mapping]) -> list[dict]:
    """The assistant asks each question with its options; the user names the chosen option."""
    dialogue = []
    for step in steps:
        dialogue.append({"role": "assistant", "content": template_question(step)})
        dialogue.append({"role": "user", "content": template_answer(step)})
    return dialogue


@dataclass
class RenderCounts:
    calls: int = 0  # backend.chat calls
    messages: int = 0
    fallbacks: int = 0  # empty replies replaced by the template
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the backend's prefix cache did not pre-fill again
    completion_tokens: int = 0


def _transcript(dialogue: Sequence[Mapping]) -> str:
    names = {"assistant": "Assistant", "user": "User"}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in dialogue)


def _with_history(dialogue: Sequence[Mapping], text: str) -> str:
    if not dialogue:
        return text
    return f"Conversation so far:\n{_transcript(dialogue)}\n\n{text}"


def llm_dialogues(backend: Any, items: Sequence[tuple[str, Sequence[Mapping], Sequence[str]]],
                  params: SamplingParams, counts: RenderCounts | None = None,
                  batched: bool = True) -> list[list[dict]]:
    """Role-play a dialogue for each ``(simple_query, steps, intents)``.

    The user is told only the current turn's choice and intent, so each answer reveals exactly
    the intent its question asked about.

    ``batched=False`` sends one trajectory per call (the baseline the benchmark compares with);
    the output is the same kind, only the call pattern differs.
    """
    counts = counts if counts is not None else RenderCounts()
    dialogues: list[list[dict]] = [[] for _ in items]
    longest = max((len(steps) for _, steps, _ in items), default=0)
    for t in range(longest):
        live = [i for i, (_, steps, _) in enumerate(items) if len(steps) > t]
        agent = []
        for i in live:
            simple, steps, _ = items[i]
            step = steps[t]
            ask = prompts.agent_turn(simple, step["question"], step["options"])
            agent.append([{"role": "system", "content": prompts.AGENT_SYSTEM},
                          {"role": "user", "content": _with_history(dialogues[i], ask)}])
        questions = _chat(backend, agent, params, counts, batched,
                          lambda k: template_question(items[live[k]][1][t]))  # noqa: B023 - called at once
        for i, text in zip(live, questions, strict=True):
            dialogues[i].append({"role": "assistant", "content": text})
        users = []
        for i in live:
            simple, steps, _ = items[i]
            step = steps[t]
            history = dialogues[i][:-1]
            ask = prompts.user_turn(simple, dialogues[i][-1]["content"], step["choice"], step["intent"])
            users.append([{"role": "system", "content": prompts.USER_SYSTEM},
                          {"role": "user", "content": _with_history(history, ask)}])
        answers = _chat(backend, users, params, counts, batched,
                        lambda k: template_answer(items[live[k]][1][t]))  # noqa: B023 - called at once
        for i, text in zip(live, answers, strict=True):
            dialogues[i].append({"role": "user", "content": text})
    return dialogues


def _chat(backend: Any, conversations: list, params: SamplingParams, counts: RenderCounts,
          batched: bool, fallback: Callable[[int], str]) -> list[str]:
    groups = [list(range(len(conversations)))] if batched else [[k] for k in range(len(conversations))]
    texts = []
    for group in groups:
        pairs, empty = chat_or_template(backend, [conversations[k] for k in group], params,
                                        lambda j: fallback(group[j]))  # noqa: B023 - called at once
        counts.calls += 1
        counts.fallbacks += empty
        for text, g in pairs:
            counts.prompt_tokens += g.prompt_tokens
            counts.cached_tokens += g.cached_tokens
            counts.completion_tokens += g.completion_tokens
            texts.append(text)
    counts.messages += len(texts)
    return texts
