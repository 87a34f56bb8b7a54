"""Report writers and the citation check.

- ``extractive``: ranked evidence sentences organised under the brief's points, each cited
  ``[docid]``. A fixed budget of sentences is shared round-robin between an overview (the brief's
  query) and the points, so reports from different clarification modes have comparable length.
  Deterministic (score, then doc id, then sentence order), no model: a baseline that always runs.
- ``llm``: a backend writes the report from the brief and the evidence with inline ``[docid]``
  citations; every citation is then checked against the evidence and invented ones are removed
  and counted (``check_citations``). An empty reply falls back to the extractive report (counted).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from irtk.generation import chat_or_template
from irtk.research import prompts

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(`*])")
# "Claim. [id] Next" -> "Claim [id]. Next": a citation after the full stop belongs to the sentence before.
# Brackets of the evidence itself ("gmtime([seconds])") are escaped (\[ \]) by the writers, as
# Markdown allows, so they are never read as citations.
_TRAILING_CITATION = re.compile(r"([.!?])[ \t]*((?<!\\)\[[^\[\]\n]{1,300}(?<!\\)\])(?!\()")
_CITATION = re.compile(r"(?<!\\)\[([^\[\]\n]{1,300})(?<!\\)\](?!\()")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([.,;:!?])")
NO_EVIDENCE = "The evidence found does not address this point."
EVIDENCE_CHARS = 400  # per document in the writer's prompt: small models have short contexts


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (a split after . ! ? followed by a capital, digit or quote)."""
    out = []
    for line in text.splitlines():
        out.extend(s.strip() for s in _SENTENCE_END.split(line.strip()) if s.strip())
    return out


def _title(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


@dataclass(frozen=True)
class Brief:
    """What the research is for: a query and the points the user stated (or the agent assumed)."""

    query: str
    points: list[str] = field(default_factory=list)

    def as_record(self) -> dict:
        return {"query": self.query, "points": list(self.points)}


def escape_brackets(text: str) -> str:
    """Evidence text with its square brackets escaped for Markdown: not citations."""
    return re.sub(r"(?<!\\)([\[\]])", r"\\\1", text)


def cite(sentence: str, doc_id: str) -> str:
    """``sentence`` (brackets escaped) with ``[doc_id]`` before its final punctuation."""
    body = escape_brackets(sentence).rstrip()
    end = body[-1] if body[-1:] in ".!?" else "."
    return f"{body.rstrip('.!?').rstrip()} [{doc_id}]{end}"


def extractive_report(brief: Brief, evidence: Sequence[dict], sentences: int) -> str:
    """The extractive report: ``sentences`` cited evidence sentences, shared round-robin among the
    overview (sub-query 0) and each point (sub-query i + 1) in order."""
    sections: list[tuple[str, int]] = [("Overview", 0)] + [(_title(p), i + 1) for i, p in enumerate(brief.points)]
    candidates: list[list[tuple[str, str]]] = []
    for _, qi in sections:
        ranked = sorted(
            ((e["subquery_scores"][e["subqueries"].index(qi)], e) for e in evidence if qi in e["subqueries"]),
            key=lambda pair: (-pair[0], pair[1]["docid"]))
        candidates.append([(e["docid"], s) for _, e in ranked for s in split_sentences(e.get("text") or "")])
    chosen: list[list[str]] = [[] for _ in sections]
    used: set[tuple[str, str]] = set()
    cursors = [0] * len(sections)
    budget = sentences
    progress = True
    while budget > 0 and progress:
        progress = False
        for si in range(len(sections)):
            while cursors[si] < len(candidates[si]) and candidates[si][cursors[si]] in used:
                cursors[si] += 1
            if budget == 0 or cursors[si] >= len(candidates[si]):
                continue
            doc_id, sentence = candidates[si][cursors[si]]
            used.add((doc_id, sentence))
            chosen[si].append(cite(sentence, doc_id))
            budget -= 1
            progress = True
    lines = [f"# {_title(brief.query, 120)}", ""]
    for (title, _), picked in zip(sections, chosen, strict=True):
        lines += [f"## {title}", "", " ".join(picked) if picked else NO_EVIDENCE, ""]
    return "\n".join(lines).rstrip() + "\n"


def llm_reports(briefs: Sequence[Brief], evidence: Sequence[Sequence[dict]], backend: Any, params: Any,
                sentences: int) -> tuple[list[str], list[Any], int]:
    """One batched call writing every report; returns texts, generations and the number of empty
    replies that fell back to the extractive report."""
    conversations = [[
        {"role": "system", "content": prompts.WRITER_SYSTEM},
        {"role": "user", "content": prompts.writer_request(
            b.query, b.points, [(e["docid"], escape_brackets(_title(e.get("text") or "", EVIDENCE_CHARS)))
                                for e in ev])},
    ] for b, ev in zip(briefs, evidence, strict=True)]
    pairs, empty = chat_or_template(backend, conversations, params,
                                    lambda k: extractive_report(briefs[k], evidence[k], sentences))
    return [text for text, _ in pairs], [g for _, g in pairs], empty


def _tokens(inner: str) -> list[str] | None:
    """The doc ids of a bracket's content, or None when it is not a citation (e.g. ``[see
    above]``: ids hold no spaces)."""
    tokens = [t.strip() for t in re.split(r"[,;]", inner)]
    if not tokens or any(not t or re.search(r"\s", t) for t in tokens):
        return None
    return tokens


def check_citations(text: str, valid_ids: Sequence[str]) -> tuple[str, dict]:
    """Remove citations of doc ids that are not in the evidence; return the cleaned text and the
    counts: ``total`` citations, ``valid``, ``invalid`` and the distinct ``invalid_ids``."""
    valid = set(valid_ids)
    counts = {"total": 0, "valid": 0, "invalid": 0, "invalid_ids": []}

    def keep_valid(match: re.Match) -> str:
        tokens = _tokens(match.group(1))
        if tokens is None:
            return match.group(0)
        kept = [t for t in tokens if t in valid]
        counts["total"] += len(tokens)
        counts["valid"] += len(kept)
        for t in tokens:
            if t not in valid:
                counts["invalid"] += 1
                if t not in counts["invalid_ids"]:
                    counts["invalid_ids"].append(t)
        return f"[{', '.join(kept)}]" if kept else ""

    cleaned = _CITATION.sub(keep_valid, text)
    if counts["invalid"]:
        cleaned = "\n".join(re.sub(r"  +", " ", _SPACE_BEFORE_PUNCT.sub(r"\1", line)).rstrip()
                            for line in cleaned.splitlines())
    return cleaned, counts


def cited_sentences(text: str, valid_ids: Sequence[str]) -> list[str]:
    """The report's sentences that cite the evidence, citations stripped (headings and uncited
    prose excluded: they restate the brief rather than report evidence)."""
    valid = set(valid_ids)
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for sentence in split_sentences(_TRAILING_CITATION.sub(r" \2\1", line)):
            cites = [t for m in _CITATION.finditer(sentence) for t in (_tokens(m.group(1)) or [])]
            if any(t in valid for t in cites):
                bare = _CITATION.sub(lambda m: "" if _tokens(m.group(1)) else m.group(0), sentence)
                bare = " ".join(_SPACE_BEFORE_PUNCT.sub(r"\1", bare).split()).replace("\\[", "[").replace("\\]", "]")
                if bare:
                    out.append(bare)
    return out
