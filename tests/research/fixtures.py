"""A scripted generation backend for tests about terminal handling and the citation check (not
about what a model writes)."""

from __future__ import annotations

import re

from irtk.generation import Generation

QUESTION = "Question: Which part of copying matters most? Options: A) Whole directory trees; B) Single files"
INVENTED = "made.up_doc"


class ScriptedBackend:
    """Asks one fixed question with two options (continuing a reply the caller opened); writes
    reports citing the first evidence id, an id that is not in the evidence and a bracket that is
    no citation; states two assumptions."""

    name = "scripted"

    def __init__(self, model: str, **_: object) -> None:
        self.model = model

    def chat(self, conversations, params):
        out = []
        for conv in conversations:
            system = conv[0]["content"]
            if system.startswith("You write a short research report"):
                first = re.search(r"^\[([^\]]+)\]", conv[-1]["content"].split("Evidence:", 1)[1].strip(), re.M)
                text = (f"Copying is covered by the evidence [{first.group(1)}]. A second claim cites a "
                        f"document that does not exist [{INVENTED}]. See the notes [as above].")
            elif system.startswith("You prepare a deep-research request"):
                text = "I assume the user wants to copy whole directory trees.\nI assume a short report."
            elif system.startswith("You turn a clarification dialogue"):
                text = "How do I copy files, with a focus on the user's answers."
            else:
                text = QUESTION
            if conv[-1]["role"] == "assistant":  # a reply opened by the caller: continue it
                text = text.removeprefix(conv[-1]["content"])
            out.append(Generation(text=text, prompt_tokens=10, completion_tokens=5))
        return out
