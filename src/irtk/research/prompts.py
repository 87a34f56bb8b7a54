"""Prompts of the research agent's own LLM calls: the assumptions of ``--clarify auto``, the
demonstration and reply openings of the clarifier at a terminal, and the report writer. The
clarifier's system prompt and the summary agent use the dialogue package's prompts."""

from __future__ import annotations

from collections.abc import Sequence

ASSUMPTIONS_SYSTEM = """\
You prepare a deep-research request without asking the user anything. State the assumptions you \
make about what the user most likely wants: the scope, the focus, the level of detail and the \
audience of the report.
Write 2 to 4 assumptions, one per line, each a single sentence starting with "I assume". \
Write nothing else."""

ASSUMPTIONS_REQUEST = "Research request: {query}"

# The clarifier at a terminal is shown one exchange in the required format, on a topic of its own,
# before the person's request: a small untrained model (the embedded 135M one) given the format
# only in words answers the request instead of asking; one worked turn is what it imitates.
CLARIFIER_DEMONSTRATION = (
    "Tell me about electric cars.",
    "Question: Which aspect of electric cars matters most to you?\n"
    "Options: A) Cost of ownership; B) Charging and range; C) Environmental impact",
)

# The openings of the clarifier's reply at a terminal, given as a generation prefix so the model
# writes on in format: the whole turn, and the options of a question that came without any.
QUESTION_OPENING = "Question:"
OPTIONS_OPENING = "Options: A)"

WRITER_SYSTEM = """\
You write a short research report from the evidence given, and from nothing else.
Rules:
- Answer the research brief; address each of its points that the evidence supports.
- After every sentence that uses the evidence, cite the evidence id in square brackets, for \
example [json.dumps]. Cite only ids from the evidence list. Never invent an id.
- If the evidence does not cover a point, say so briefly.
- Plain prose in a few short paragraphs, in the language of the brief."""

WRITER_REQUEST = """\
Research brief: {brief}
{points}
Evidence:
{evidence}

Report:"""


def writer_request(brief: str, points: Sequence[str], evidence: Sequence[tuple[str, str]]) -> str:
    """The writer's user message: the brief, its points and the evidence as ``[id] text`` lines."""
    listed = "".join(f"- {p}\n" for p in points)
    return WRITER_REQUEST.format(
        brief=brief, points=f"Points to address:\n{listed}" if listed else "",
        evidence="\n".join(f"[{doc_id}] {text}" for doc_id, text in evidence))
