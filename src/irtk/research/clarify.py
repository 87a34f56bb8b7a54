"""Clarification before research: ask the user (at a terminal, or a simulated one), state
assumptions, or nothing; then the summary agent turns the dialogue into a research brief.

- ``interactive``: the clarifier (the dialogue package's model policy, prompted for a terminal by
  ``TerminalClarifier``) asks up to T questions at the terminal, each with numbered options. The
  person answers with a number, free text, ``skip`` (the question is not important: recorded as
  irrelevant, so the clarifier rethinks and the summary drops it) or ``done``; end of input ends
  the dialogue. Prompts go to stderr.
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
from dataclasses import dataclass, replace
from typing import Any, TextIO

from irtk.dialogue import prompts as dialogue_prompts
from irtk.dialogue.episode import Episode
from irtk.dialogue.gate import ANSWERED, IRRELEVANT
from irtk.dialogue.policies import clean_question, is_stop
from irtk.dialogue.prompts import NEGATIVE_FEEDBACK
from irtk.generation import chat_or_template
from irtk.research import prompts

_OPTIONS = re.compile(r"\b(?:answer\s+)?(?:options?|choices)\s*:", re.IGNORECASE)
# An option's label ("A)", "(b)", "1.", "c:") after a line start, a blank or a semicolon, or a
# bullet at a line start: the ways small models number options.
_MARKER = re.compile(r"(?:(?:^|(?<=[\s;]))\(?(?:[A-Fa-f]|[1-9])[).:]|^[ \t]*[-*•])(?:\s+|$)", re.MULTILINE)
# Options with no "Options:" label begin at a first label ("...? A) x B) y", lines "1. x") or bullet.
_FIRST = re.compile(r"(?:(?:^|(?<=[\s?:]))\(?(?:A|a|1)[).]|^[ \t]*[-*•])\s+", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[A-Fa-f][.)])\s*")


def split_question(text: str) -> tuple[str, list[str]]:
    """The question stem and its distinct answer options, from the clarifier's ``Question: ...
    Options: A) x; B) y`` (or the graph template's ``... Options: x; y.``), also as small models
    vary it: options on lines of their own, numbered or bulleted, or with no ``Options:`` label."""
    text = clean_question(text.replace("**", ""))
    label = _OPTIONS.search(text)
    if label is not None:
        stem, rest = text[:label.start()], text[label.end():]
    else:
        first = _FIRST.search(text)
        if first is None or not text[:first.start()].strip():
            return " ".join(text.split()), []
        stem, rest = text[:first.start()], text[first.start():]
    chunks = [c for c in (_MARKER.split(rest) if _MARKER.search(rest) else re.split(r"[;\n]", rest)) if c.strip()]
    if len(chunks) == 1 and ";" in chunks[0]:
        chunks = chunks[0].split(";")
    options: list[str] = []
    for chunk in chunks:
        option = chunk.strip().split("\n", 1)[0].strip(" \t;,").rstrip(".").strip()
        if option and option.lower() not in {o.lower() for o in options}:
            options.append(option)
    return " ".join(stem.split()), options


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


# The format asks for two or three options; small models go on listing (D, E, F, ...).
MAX_OPTIONS = 3
OPTIONS_END = ("; D)", "\nD)")


@dataclass(frozen=True)
class Question:
    """One clarifier turn at a terminal: the question's stem and its options (none: answer in
    one's own words), or ``stop`` when the clarifier knows enough."""

    stem: str
    options: tuple[str, ...] = ()
    stop: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def text(self) -> str:
        """The question as recorded and as the clarifier reads its own earlier turns."""
        listed = "; ".join(f"{chr(ord('A') + i)}) {o}" for i, o in enumerate(self.options))
        return f"{self.stem} Options: {listed}" if listed else self.stem


class TerminalClarifier:
    """The dialogue package's model policy, prompted so that even a small untrained model asks
    a question with options rather than answering the request: the policy's own system prompt
    and dialogue, with one demonstration exchange before the request, and the reply opened with
    ``Question:`` (a generation prefix the model continues in format). A reply with a question
    but no options is continued once more from ``Options: A)``; one still without options is
    asked as it is, for a free-text answer. With ``allow_stop`` the reply is not opened (the
    prefix would take away the STOP answer)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def conversation(self, episode: Episode, opening: str = "") -> list[dict]:
        """The policy's conversation with the demonstration before the request and, when given,
        ``opening`` as the start of the reply."""
        messages = self.policy.conversation(episode)
        request, reply = prompts.CLARIFIER_DEMONSTRATION
        messages[1:1] = [{"role": "user", "content": dialogue_prompts.CLARIFIER_REQUEST.format(query=request)},
                         {"role": "assistant", "content": reply}]
        if opening:
            messages.append({"role": "assistant", "content": opening})
        return messages

    def ask(self, episode: Episode, turn: int) -> Question:
        """The clarifier's question for ``turn`` of ``episode`` (an empty stem: nothing to ask)."""
        base = self.policy.params
        # A seed per turn, as the model policy draws them.
        params = replace(base, seed=None if base.seed is None else base.seed + turn,
                         stop=tuple(dict.fromkeys((*base.stop, *OPTIONS_END))))
        opening = "" if self.policy.allow_stop else prompts.QUESTION_OPENING
        text, used = self._reply(episode, opening, params)
        if self.policy.allow_stop and is_stop(clean_question(text)):
            return Question("", stop=True, prompt_tokens=used[0], completion_tokens=used[1])
        stem, options = self._parse(text, used[2])
        if stem and not options:
            opening = f"{prompts.QUESTION_OPENING} {stem}\n{prompts.OPTIONS_OPENING}"
            more, extra = self._reply(episode, opening, params)
            _, options = self._parse(more, extra[2])
            used = (used[0] + extra[0], used[1] + extra[1], extra[2])
        return Question(stem, tuple(options[:MAX_OPTIONS]), prompt_tokens=used[0], completion_tokens=used[1])

    def _reply(self, episode: Episode, opening: str, params: Any) -> tuple[str, tuple[int, int, bool]]:
        """The reply with its opening, and (prompt tokens, completion tokens, cut at max_tokens)."""
        [g] = self.policy.backend.chat([self.conversation(episode, opening)], params)
        return opening + g.text, (g.prompt_tokens, g.completion_tokens, g.finish_reason == "length")

    @staticmethod
    def _parse(text: str, cut: bool) -> tuple[str, list[str]]:
        stem, options = split_question(text)
        return stem, options[:-1] if cut else options  # a reply cut at max_tokens ends mid-option


HELP = "Answer with an option number or your own words; 'skip' if it does not matter, 'done' to start the research."


def _turn(turn: int, question: str, answer: str, verdict: str, move: Any) -> dict:
    return {"turn": turn, "question": question, "answer": answer, "verdict": verdict,
            "matched_intent": None, "similarity": None, "target_intents": [], "content": None,
            "format": None, "penalty": None, "reward": None, "prompt_tokens": move.prompt_tokens,
            "completion_tokens": move.completion_tokens}


def interview(episode: Episode, clarifier: TerminalClarifier, max_turns: int, terminal: Terminal) -> None:
    """Ask the person up to ``max_turns`` questions, recording each exchange on ``episode``."""
    terminal.say(f"Request {episode.id}: {episode.query}")
    terminal.say(HELP)
    for turn in range(1, max_turns + 1):
        move = clarifier.ask(episode, turn)
        episode.tokens_in += move.prompt_tokens
        episode.tokens_out += move.completion_tokens
        if move.stop or not move.stem:
            terminal.say("The clarifier has no further questions.")
            break
        options = move.options
        terminal.say("")
        terminal.say(f"Question {turn}/{max_turns}: {move.stem}")
        for i, option in enumerate(options, 1):
            terminal.say(f"  {i}) {option}")
        if not options:
            terminal.say("  (no options offered: answer in your own words)")
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
