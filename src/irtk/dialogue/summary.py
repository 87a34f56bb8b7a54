"""The summary agent: merge a clarification dialogue into one fine-grained research query.

Exchanges the user called irrelevant or redundant are dropped before the agent sees the
dialogue (the paper's summary agent drops them; doing it here makes it hold for any model).

- ``llm`` (default): a backend writes the query, one batched call for every dialogue; a
  dialogue with nothing kept is its request as it stands, and an empty or degenerate reply (a
  loop) falls back to the template (counted).
- ``template``: the request followed by the user's kept answers — deterministic, for tests and
  baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from irtk.dialogue import prompts
from irtk.dialogue.episode import Episode
from irtk.dialogue.user import BackendAgent, Reply, llm_replies
from irtk.generation import SamplingParams
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

    def summarize(self, episodes: Sequence[Episode]) -> list[Reply]:
        replies: list[Reply | None] = [None if e.kept_exchanges() else Reply(e.query) for e in episodes]
        todo = [i for i, r in enumerate(replies) if r is None]
        if todo:
            conversations = [[
                {"role": "system", "content": prompts.SUMMARY_SYSTEM},
                {"role": "user", "content": prompts.SUMMARY_REQUEST.format(
                    query=episodes[i].query,
                    exchanges=prompts.format_exchanges(episodes[i].kept_exchanges()))},
            ] for i in todo]
            generated, empty = llm_replies(
                self.backend, self.params, conversations,
                lambda k: template_summary(episodes[todo[k]].query, episodes[todo[k]].kept_exchanges()))
            self.fallbacks += empty
            for i, reply in zip(todo, generated, strict=True):
                replies[i] = reply
        return replies  # type: ignore[return-value]


def make_summarizer(name: str, *, backend: Any = None, params: SamplingParams | None = None) -> Any:
    """A summary agent by registry name or ``module:attr``; ``llm`` needs a backend."""
    return SUMMARIES.create(name, backend=backend, params=params)
