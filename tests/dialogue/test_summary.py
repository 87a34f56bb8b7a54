"""The summary agent: a degenerate or empty LLM reply falls back to the template, counted."""

from __future__ import annotations

from irtk.dialogue.episode import Episode
from irtk.dialogue.gate import ANSWERED
from irtk.dialogue.summary import LLMSummarizer, template_summary
from irtk.generation import Generation, SamplingParams, degenerate


class Replies:
    """A backend double answering each conversation with the next scripted text (the test is
    about what the summary agent does with a reply, not about generation)."""

    def __init__(self, texts):
        self.texts = list(texts)

    def chat(self, conversations, params):
        return [Generation(self.texts.pop(0), 10, 5) for _ in conversations]


def episode(i: int) -> Episode:
    return Episode({"id": f"d{i}", "query": f"heat pumps {i}"},
                   turns=[{"question": "Which climate?", "answer": "A cold one.", "verdict": ANSWERED}])


def test_degenerate_and_empty_replies_fall_back_to_the_template():
    loop = "A: " * 40
    agent = LLMSummarizer(Replies(["Heat pumps in cold climates for a detached house.", loop, "  "]),
                          SamplingParams())
    eps = [episode(i) for i in range(3)]
    texts = [r.text for r in agent.summarize(eps)]
    assert texts[0] == "Heat pumps in cold climates for a detached house."
    assert texts[1:] == [template_summary(e.query, e.kept_exchanges()) for e in eps[1:]]
    assert agent.fallbacks == 2


def test_degenerate_is_a_loop_not_prose():
    assert degenerate("A: " * 40) and degenerate("heat pumps in cold climates, " * 6)
    assert not degenerate("Heat pumps in cold climates: running costs, grants and noise for a detached "
                          "house built before 1970, compared with a gas boiler over fifteen years.")
    assert not degenerate("yes yes yes")  # too short to call
