"""The simulated user: an embedding gate, then an answer grounded in the matched intent.

The gate (``irtk.dialogue.gate``, the same one the rewards use) calls a question *redundant*,
*restates* (the request) or *irrelevant* and the user answers with negative feedback; otherwise
the user answers about the intent the question matched — by default the intent the user chose
at the graph node the question asks (the path gate), else the most similar intent:

- ``template`` (the default): the option the user chose at that graph node followed by the
  intent, exactly as ``irtk expand`` renders expert dialogues ("Europe. I want the report to
  focus on Europe."), or the intent alone where no path step holds it. Deterministic, never
  strays from the latent intents, and costs no generation.
- ``llm``: a backend role-plays the user from the request and the matched intent, one batched
  call per turn for every answered question (the paper's setup, with a strong model). An empty
  reply falls back to the template answer and is counted.

The template user is the default because the simulator's job is to be faithful to the latent
intents: with the embedded 135M model as the user, answers drift from (or contradict) the intent
they were grounded in, which then misleads the clarifier's next turn and the summary, and the
intent metrics — decided by the gate, not by the answer — would not change. Use ``--user llm``
with a strong ``--user-model`` to reproduce the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from irtk.dialogue import prompts
from irtk.dialogue.episode import Episode
from irtk.dialogue.gate import ANSWERED, EmbeddingGate, Verdict
from irtk.errors import UsageError
from irtk.generation import SamplingParams, chat_or_template
from irtk.graphs.render import template_answer
from irtk.registry import Registry

# Factories take ``backend`` and ``params`` (keyword) and use what they need.
USERS = Registry("user", "--user", {
    "template": "irtk.dialogue.user:TemplateUser.create",
    "llm": "irtk.dialogue.user:LLMUser.create",
})

# Re-exported: the gate is the first half of the simulated user.
__all__ = ["USERS", "EmbeddingGate", "LLMUser", "Reply", "TemplateUser", "make_user", "template_reply"]


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def llm_replies(backend: Any, params: SamplingParams, conversations: list,
                fallback: Callable[[int], str]) -> tuple[list[Reply], int]:
    """One batched chat call as ``Reply`` records; an empty completion k becomes ``fallback(k)``.
    Returns the replies and how many fell back. No later prompt continues these conversations
    (``chat_once``: an hf backend keeps no key/values of them)."""
    pairs, empty = chat_or_template(backend, conversations, params, fallback, once=True)
    return [Reply(text, g.prompt_tokens, g.completion_tokens) for text, g in pairs], empty


def negative_feedback(verdict: Verdict) -> str:
    return prompts.NEGATIVE_FEEDBACK[verdict.verdict]


def template_reply(episode: Episode, intent: str) -> str:
    """The user's answer about ``intent``: their chosen option and the intent, as in expand."""
    for step in episode.path:
        if step.get("intent") == intent and step.get("choice"):
            return template_answer(step)
    return intent if intent.endswith((".", "!", "?")) else intent + "."


class TemplateUser:
    name = "template"
    fallbacks = 0

    @classmethod
    def create(cls, **_: Any) -> TemplateUser:
        return cls()

    def answer(self, episodes: Sequence[Episode], questions: Sequence[str],
               verdicts: Sequence[Verdict]) -> list[Reply]:
        return [Reply(template_reply(e, v.matched_intent) if v.verdict == ANSWERED else negative_feedback(v))
                for e, v in zip(episodes, verdicts, strict=True)]


class BackendAgent:
    """What the LLM user and the LLM summary agent share: a backend, sampling parameters, a
    count of empty or degenerate replies replaced by the template, and the registry factory."""

    option = "--user llm"  # what a user typed to get this agent (for the error without a backend)

    def __init__(self, backend: Any, params: SamplingParams) -> None:
        self.backend = backend
        self.params = params
        self.fallbacks = 0

    @classmethod
    def create(cls, *, backend: Any = None, params: SamplingParams | None = None, **_: Any) -> Any:
        if backend is None:
            raise UsageError(f"{cls.option} needs a generation backend")
        return cls(backend, params or SamplingParams())


class LLMUser(BackendAgent):
    """A backend role-playing each user, grounded in the intent the gate matched."""

    name = "llm"

    def answer(self, episodes: Sequence[Episode], questions: Sequence[str],
               verdicts: Sequence[Verdict]) -> list[Reply]:
        replies: list[Reply | None] = [None if v.verdict == ANSWERED else Reply(negative_feedback(v))
                                       for v in verdicts]
        todo = [i for i, r in enumerate(replies) if r is None]
        if todo:
            conversations = [[
                {"role": "system", "content": prompts.USER_SYSTEM.format(
                    query=episodes[i].query, intent=verdicts[i].matched_intent)},
                {"role": "user", "content": questions[i]},
            ] for i in todo]
            generated, empty = llm_replies(
                self.backend, self.params, conversations,
                lambda k: template_reply(episodes[todo[k]], verdicts[todo[k]].matched_intent or ""))
            self.fallbacks += empty
            for i, reply in zip(todo, generated, strict=True):
                replies[i] = reply
        return replies  # type: ignore[return-value]


def make_user(name: str, *, backend: Any = None, params: SamplingParams | None = None) -> Any:
    """A simulated user by registry name or ``module:attr``; ``llm`` needs a backend."""
    return USERS.create(name, backend=backend, params=params)
