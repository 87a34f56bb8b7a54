"""The clarifier at a terminal: how its turn is prompted (demonstration, reply opened with
``Question:``), how a question without options is completed, and what is kept of a reply. The
backend is a double replaying fixed replies: these tests are about the prompting and parsing
around the model, not about what a model writes (the embedded model's test is in
test_interactive.py)."""

from __future__ import annotations

from irtk.dialogue import prompts as dialogue_prompts
from irtk.dialogue.episode import Episode
from irtk.dialogue.policies import ModelPolicy
from irtk.generation import Generation, SamplingParams
from irtk.research import prompts
from irtk.research.clarify import TerminalClarifier

REQUEST = "How do I copy files?"


class Replies:
    """Returns the given replies in order; keeps every conversation and parameters it was sent."""

    name = "replies"

    def __init__(self, *texts: str, finish: str = "stop") -> None:
        self.texts, self.finish, self.seen = list(texts), finish, []

    def chat(self, conversations, params):
        self.seen.append((conversations, params))
        return [Generation(text=self.texts.pop(0), prompt_tokens=10, completion_tokens=5,
                           finish_reason=self.finish) for _ in conversations]


def ask(backend: Replies, turn: int = 1, allow_stop: bool = False):
    policy = ModelPolicy(backend, SamplingParams(max_tokens=96, temperature=0.0, seed=3), allow_stop=allow_stop)
    return TerminalClarifier(policy).ask(Episode({"id": "r", "query": REQUEST}), turn)


def test_the_reply_is_opened_in_format_after_one_demonstration():
    backend = Replies(" Which files do you copy?\nOptions: A) One file; B) A whole folder")
    q = ask(backend, turn=2)
    assert (q.stem, q.options) == ("Which files do you copy?", ("One file", "A whole folder"))
    assert q.text == "Which files do you copy? Options: A) One file; B) A whole folder"
    [conversation], params = backend.seen[0]
    demo_request, demo_reply = prompts.CLARIFIER_DEMONSTRATION
    assert conversation == [
        {"role": "system", "content": dialogue_prompts.CLARIFIER_SYSTEM},
        {"role": "user", "content": dialogue_prompts.CLARIFIER_REQUEST.format(query=demo_request)},
        {"role": "assistant", "content": demo_reply},
        {"role": "user", "content": dialogue_prompts.CLARIFIER_REQUEST.format(query=REQUEST)},
        {"role": "assistant", "content": "Question:"},
    ]
    assert params.seed == 5 and params.temperature == 0.0  # the policy's seed + the turn
    assert {"; D)", "\n\n"} <= set(params.stop)  # a fourth option or a blank line ends the turn


def test_a_question_without_options_is_continued_from_options_once():
    backend = Replies(" Which files do you copy?", " One file; B) A whole folder")
    q = ask(backend)
    assert q.options == ("One file", "A whole folder")
    assert backend.seen[1][0][0][-1] == {"role": "assistant",
                                         "content": "Question: Which files do you copy?\nOptions: A)"}
    assert (q.prompt_tokens, q.completion_tokens) == (20, 10)


def test_a_question_still_without_options_is_asked_for_free_text():
    q = ask(Replies(" Which files do you copy?", " "))
    assert (q.stem, q.options, q.stop) == ("Which files do you copy?", (), False)
    assert q.text == "Which files do you copy?"


def test_unfinished_and_surplus_options_are_dropped():
    q = ask(Replies(" Which? Options: A) Files; B) Folders; C) Links that", finish="length"))
    assert q.options == ("Files", "Folders")  # cut at max_tokens: the last option is unfinished
    q = ask(Replies(" Which?\n1. Files\n2. Folders\n3. files\n4. Links\n5. Devices"))
    assert q.options == ("Files", "Folders", "Links")  # distinct, at most three


def test_with_allow_stop_the_reply_is_left_open_and_stop_is_read():
    backend = Replies("STOP")
    q = ask(backend, allow_stop=True)
    assert q.stop and not q.stem
    assert backend.seen[0][0][0][-1]["role"] == "user"
    q = ask(Replies("Question: Which files? Options: A) One; B) Many"), allow_stop=True)
    assert (q.stem, q.options, q.stop) == ("Which files?", ("One", "Many"), False)
