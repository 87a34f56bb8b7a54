"""The summary agent: merge a clarification dialogue into one fine-grained research query.

Exchanges the user called irrelevant or redundant are dropped before the agent sees the
dialogue (the paper's summary agent drops them; doing it here makes it hold for any model).

- ``llm`` (default): a backend writes the query, one batched call for every dialogue (or, in
  ``simulate`` with the policy's backend, each dialogue's summary joins the backend's running
  stream as soon as the dialogue ends); a dialogue with nothing kept is its request as it
  stands, and an empty or degenerate reply (a loop) falls back to the template (counted).
- ``template``: the request followed by the user's kept answers — deterministic, for tests and
  baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from irtk.dialogue import prompts
from irtk.dialogue.episode import Episode
from irtk.dialogue.user import BackendAgent, Reply
from irtk.generation import Conversation, Generation, SamplingParams, chat_once, usable_text
from irtk.registry import Registry

# Factories take ``backend`` and ``params`` (keyword) and use what they need.
SUMMARIES = Registry("summary agent", "--summary", {
    "llm": "irtk.dialogue.summary:LLMSummarizer.create",
    "template": "irtk.dialogue.summary:TemplateSummarizer.create",
})


def template_summary(query: str, kept: Sequence[tuple[str, str]]) -> str:
    answers = " ".join(a.strip() for _, a in kept if a.strip())
    return f"{query.strip()} {answers}".strip()


class TemplateSummarizer:
    name = "template"
    fallbacks = 0

    @classmethod
    def create(cls, **_: Any) -> TemplateSummarizer:
        return cls()

    def summarize(self, episodes: Sequence[Episode]) -> list[Reply]:
        return [Reply(template_summary(e.query, e.kept_exchanges())) for e in episodes]


class LLMSummarizer(BackendAgent):
    name = "llm"
    option = "--summary llm"

    def conversation(self, episode: Episode) -> Conversation | None:
        """The summary agent's prompt for ``episode``; None where nothing was kept (the query is
        the request as it stands, no call needed)."""
        kept = episode.kept_exchanges()
        if not kept:
            return None
        return [
            {"role": "system", "content": prompts.SUMMARY_SYSTEM},
            {"role": "user", "content": prompts.SUMMARY_REQUEST.format(
                query=episode.query, exchanges=prompts.format_exchanges(kept))},
        ]

    def reply(self, episode: Episode, generation: Generation | None) -> Reply:
        """The summary from the agent's ``generation`` for ``episode`` (None: nothing was kept,
        the request as it stands); an empty or degenerate one falls back to the template
        (counted)."""
        if generation is None:
            return Reply(episode.query)
        text = usable_text(generation)
        if text is None:
            self.fallbacks += 1
            text = template_summary(episode.query, episode.kept_exchanges())
        return Reply(text, generation.prompt_tokens, generation.completion_tokens)

    def summarize(self, episodes: Sequence[Episode]) -> list[Reply]:
        """One batched call for every episode that needs one (``simulate`` streams them instead
        where the policy's backend is this agent's: ``conversation`` and ``reply``)."""
        prompted = {i: c for i, e in enumerate(episodes) if (c := self.conversation(e)) is not None}
        generations = chat_once(self.backend, list(prompted.values()), self.params) if prompted else []
        got = dict(zip(prompted, generations, strict=True))
        return [self.reply(e, got.get(i)) for i, e in enumerate(episodes)]


def make_summarizer(name: str, *, backend: Any = None, params: SamplingParams | None = None) -> Any:
    """A summary agent by registry name or ``module:attr``; ``llm`` needs a backend."""
    return SUMMARIES.create(name, backend=backend, params=params)
