"""Clarification before research: ask the user (at a terminal, or a simulated one), state
assumptions, or nothing; then the summary agent turns the dialogue into a research brief.

- ``interactive``: the clarifier (the dialogue package's model policy) asks up to T questions at
  the terminal, each with numbered options. The person answers with a number, free text, ``skip``
  (the question is not important: recorded as irrelevant, so the clarifier rethinks and the
  summary drops it) or ``done``; end of input ends the dialogue. Prompts go to stderr.
- ``simulate``: the ``irtk simulate`` loop itself (``dialogue.simulate.simulate_batch``), the
  simulated user answering from the request's latent intents through the embedding gate.
- ``auto``: no questions; the model states the assumptions it makes, which become the brief's
  points.
- ``none``: the request as it stands.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from irtk.dialogue.episode import Episode
from irtk.dialogue.gate import ANSWERED, IRRELEVANT
from irtk.dialogue.prompts import NEGATIVE_FEEDBACK
from irtk.generation import chat_or_template
from irtk.research import prompts

_OPTIONS = re.compile(r"\boptions?\s*:", re.IGNORECASE)
_MARKER = re.compile(r"(?:^|(?<=\s)|(?<=;))\(?(?:[A-Fa-f]|[1-9])[).:]\s+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[A-Fa-f][.)])\s*")


def split_question(text: str) -> tuple[str, list[str]]:
    """The question stem and its answer options, from the clarifier's ``Question: ...
    Options: A) x; B) y`` (or the graph template's ``... Options: x; y.``)."""
    parts = _OPTIONS.split(text, maxsplit=1)
    stem = parts[0].strip()
    if len(parts) == 1:
        return stem, []
    rest = parts[1].strip()
    chunks = [c for c in _MARKER.split(rest) if c.strip()] if _MARKER.search(rest) else rest.split(";")
    if len(chunks) == 1 and ";" in chunks[0]:
        chunks = chunks[0].split(";")
    options = [c.strip().strip(";,").strip().rstrip(".").strip() for c in chunks]
    return stem, [o for o in options if o]


def question_stem(text: str) -> str:
    return split_question(text)[0]


def parse_assumptions(text: str, limit: int) -> list[str]:
    """The model's assumption lines, without bullets; lines of fewer than three words dropped."""
    out = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if len(line.split()) >= 3 and line not in out:
            out.append(line)
    return out[:limit]


def assume(episodes: Sequence[Episode], backend: Any, params: Any, limit: int) -> tuple[list[list[str]], int]:
    """``--clarify auto``: one batched call stating each request's assumptions. Returns the
    assumption lists and how many replies held none."""
    conversations = [[{"role": "system", "content": prompts.ASSUMPTIONS_SYSTEM},
                      {"role": "user", "content": prompts.ASSUMPTIONS_REQUEST.format(query=e.query)}]
                     for e in episodes]
    pairs, _ = chat_or_template(backend, conversations, params, lambda k: "")
    out = [parse_assumptions(text, limit) for text, _ in pairs]
    for e, (_, g) in zip(episodes, pairs, strict=True):
        e.tokens_in += g.prompt_tokens
        e.tokens_out += g.completion_tokens
    return out, sum(not a for a in out)


class Terminal:
    """A person at a terminal: prompts on ``out`` (stderr), answers read line by line from ``inp``.

    ``input()`` is not used: it writes its prompt to stdout, which carries data only.
    """

    def __init__(self, inp: TextIO | None = None, out: TextIO | None = None) -> None:
        self.inp = inp or sys.stdin
        self.out = out or sys.stderr

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def read(self, prompt: str) -> str | None:
        """One line without its newline; None at end of input."""
        self.out.write(prompt)
        self.out.flush()
        line = self.inp.readline()
        if not line:
            self.say()
            return None
        return line.rstrip("\r\n")


HELP = "Answer with an option number or your own words; 'skip' if it does not matter, 'done' to start the research."


def _turn(turn: int, question: str, answer: str, verdict: str, move: Any) -> dict:
    return {"turn": turn, "question": question, "answer": answer, "verdict": verdict,
            "matched_intent": None, "similarity": None, "target_intents": [], "content": None,
            "format": None, "penalty": None, "reward": None, "prompt_tokens": move.prompt_tokens,
            "completion_tokens": move.completion_tokens}


def interview(episode: Episode, policy: Any, max_turns: int, terminal: Terminal) -> None:
    """Ask the person up to ``max_turns`` questions, recording each exchange on ``episode``."""
    terminal.say(f"Request {episode.id}: {episode.query}")
    terminal.say(HELP)
    for turn in range(1, max_turns + 1):
        [move] = policy.ask([episode], turn)
        episode.tokens_in += move.prompt_tokens
        episode.tokens_out += move.completion_tokens
        if move.text is None or move.stop or not move.text.strip():
            terminal.say("The clarifier has no further questions.")
            break
        stem, options = split_question(move.text)
        terminal.say("")
        terminal.say(f"Question {turn}/{max_turns}: {stem}")
        for i, option in enumerate(options, 1):
            terminal.say(f"  {i}) {option}")
        answer = None
        while answer is None:
            line = terminal.read("> ")
            if line is None:  # end of input ends the dialogue
                episode.done = True
                return
            text = line.strip()
            word = text.lower()
            if word == "done":
                episode.done = True
                return
            if word == "skip":
                episode.turns.append(_turn(turn, move.text, NEGATIVE_FEEDBACK[IRRELEVANT], IRRELEVANT, move))
                break
            if not text:
                terminal.say(HELP)
                continue
            if text.isdigit():
                n = int(text)
                if not 1 <= n <= len(options):
                    terminal.say(f"No option {n}: choose 1-{len(options)}, or type your answer."
                                 if options else "This question has no numbered options: type your answer.")
                    continue
                answer = options[n - 1]
            else:
                answer = text
            episode.turns.append(_turn(turn, move.text, answer, ANSWERED, move))
    episode.done = True
