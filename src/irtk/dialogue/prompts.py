"""Prompts of the clarification loop: the clarifier agent, the simulated user and the summary agent.

They follow the IntentRL paper's description of its agent prompt ("ask the single most critical
missing piece of information; never repeat a question; if the user says a question is
unimportant, re-think from another angle; do not merely restate or decompose the request; answer
in the user's language") and of its user simulator and summary agent. Kept apart from
``prompts.py`` (graph expansion) so the two halves of ``intent/`` evolve independently.
"""

from __future__ import annotations

CLARIFIER_SYSTEM = """\
You help a user prepare a deep-research request. Before the research starts, you ask the user \
clarification questions, one per turn, to uncover what they really want.

Rules:
- Ask exactly one concise question per turn, about the single most critical piece of information \
that is still missing.
- Offer 2 or 3 short answer options.
- Never repeat a question you already asked.
- If the user says a question is not important to them, think again from another angle.
- Do not merely restate the request or split it into sub-tasks.
- Write in the user's language.

Answer in this format and nothing else:
Question: <one question ending with ?>
Options: A) <option>; B) <option>; C) <option>"""

# Where a clarifier's turn ends (stop strings for every backend): its two lines, "Question:" and
# "Options:", are the whole turn, so a blank line or a second "Question:" after them is the model
# running on (small models go on to write essays) and is neither generated nor kept.
QUESTION_END = ("\n\n", "\nQuestion:")

STOP_RULE = """
- If you already know enough to write a precise research brief, reply with exactly STOP."""

STOP_WORD = "STOP"

CLARIFIER_REQUEST = "My research request: {query}"

USER_SYSTEM = """\
You are a person who asked a research assistant for a report on: "{query}".
What you want (never say anything beyond it): {intent}
Answer the assistant's question in one or two short declarative sentences, grounded only in what \
you want. Do not ask questions back. Answer in the language of the question."""

SUMMARY_SYSTEM = """\
You turn a clarification dialogue into one detailed research request for a research agent.
Merge the user's original request with every preference the user stated in the dialogue into a \
single fine-grained query. Keep every constraint the user gave; add nothing the user did not say. \
Write the query only, as one paragraph, in the user's language."""

SUMMARY_REQUEST = """\
Original request: {query}

Clarifications:
{exchanges}

Fine-grained research query:"""

# What the simulated user says when the gate rejects a question (the paper's negative feedback).
NEGATIVE_FEEDBACK = {
    "redundant": "You already asked me about this. It is not important to me.",
    "restates": "That is just my request again. It is not important to me.",
    "irrelevant": "This is not important to me.",
}


def format_exchanges(pairs: list[tuple[str, str]]) -> str:
    """Question/answer pairs as the summary agent reads them."""
    return "\n".join(f"Q: {q}\nA: {a}" for q, a in pairs)
