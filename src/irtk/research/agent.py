"""``irtk research``: clarify the intent, retrieve evidence, write a cited report.

Per batch of requests (and per seed of ``--repeats``), every stage advances all requests
together — one clarifier call per turn, one summary call, one encoder call for every sub-query,
one writer call:

1. clarify (``research.clarify``): interactive / simulate / auto / none; the summary agent
   (``dialogue.summary``) turns a dialogue into the brief's query, the user's kept answers (or
   the agent's assumptions) become its points;
2. plan and retrieve (``research.evidence``): the brief's query and one sub-query per point,
   searched in the index with its own encoder, deduplicated, doc ids and scores kept;
3. write (``research.writers``): LLM with checked ``[docid]`` citations, or extractive;
4. evaluate (``research.evaluate``) when the request carries latent intents.

One output record per (request, seed): the input's columns, then the REPORT fields.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from irtk.dialogue.episode import Episode
from irtk.errors import InputError, UsageError
from irtk.records import REPORT, TRAJECTORY
from irtk.research import evaluate as ev
from irtk.research.clarify import Terminal, TerminalClarifier, assume, interview
from irtk.research.config import ResearchConfig
from irtk.research.evidence import EvidenceIndex, gather, plan
from irtk.research.requests import user_row
from irtk.research.writers import Brief, check_citations, extractive_report, llm_reports


def output_schema() -> Any:
    """REPORT's fields, then the request (trajectory) fields passed through with their types."""
    import pyarrow as pa

    names = set(REPORT.schema.names)
    return pa.schema([*REPORT.schema, *(f for f in TRAJECTORY.schema if f.name not in names)])


class LazyBackend:
    """A generation backend built on its first ``chat`` call: a run that never needs a model
    (``--clarify none --writer extractive``) never loads one."""

    def __init__(self, config: ResearchConfig, model: str) -> None:
        self.config = config
        self.model = model
        self.name = config.backend
        self._backend: Any = None

    def chat(self, conversations: Any, params: Any) -> Any:
        if self._backend is None:
            from irtk.generation import get_backend

            c = self.config
            self._backend = get_backend(c.backend, self.model, base_url=c.base_url, dtype=c.dtype,
                                        batch_size=c.batch_size, seed=c.seed)
        return self._backend.chat(conversations, params)


class Agent:
    """The models of a run: the ``irtk simulate`` parts (clarifier policy, simulated user, summary
    agent, gate and rewards) on backends that load on first use, and the gate for coverage."""

    def __init__(self, config: ResearchConfig, evidence: EvidenceIndex, terminal: Terminal | None = None) -> None:
        from irtk.dialogue.simulate import _Parts

        self.config = config
        self.evidence = evidence
        self.terminal = terminal
        self.backends = {m: LazyBackend(config, m) for m in (config.clarifier, config.model)}
        self.parts = _Parts(config.dialogue(), backends=self.backends)
        self.gate = self.parts.rewards.gate
        self.fallbacks = {"assumptions": 0, "writer": 0}

    @property
    def policy(self) -> Any:
        return self.parts.policy

    @property
    def summarizer(self) -> Any:
        return self.parts.summarizer

    def reseed(self, seed: int) -> None:
        """Sampling seeds of the clarifier for one repeat."""
        self.parts.policy.params = replace(self.parts.policy.params, seed=seed)


def _brief(episode: Episode, assumptions: list[str]) -> tuple[Brief, list[tuple[str, str | None]]]:
    """The brief and, per point, the question it answers (None for an assumption)."""
    kept = episode.kept_exchanges()
    query = (episode.summary or "").strip() or episode.query
    if kept:
        return Brief(query, [a for _, a in kept]), [(a, q) for q, a in kept]
    return Brief(query, list(assumptions)), [(_assumed(a), None) for a in assumptions]


def _assumed(text: str) -> str:
    """An assumption as search text, without its "I assume (that)" preamble."""
    return re.sub(r"^i assume( that)?\s+", "", text.strip(), flags=re.IGNORECASE) or text


def clarify(agent: Agent, episodes: list[Episode], mode: str) -> list[list[str]]:
    """Run one clarification mode on a batch; returns each episode's assumptions."""
    from irtk.dialogue.simulate import simulate_batch

    c = agent.config
    assumptions: list[list[str]] = [[] for _ in episodes]
    if mode == "simulate":
        simulate_batch(episodes, agent.parts, c.max_turns)  # also writes each episode's summary
    elif mode == "interactive":
        clarifier = TerminalClarifier(agent.policy)
        for e in episodes:
            interview(e, clarifier, c.max_turns, agent.terminal or Terminal())
        for e, reply in zip(episodes, agent.summarizer.summarize(episodes), strict=True):
            e.summary = reply.text
            e.tokens_in += reply.prompt_tokens
            e.tokens_out += reply.completion_tokens
    elif mode == "auto":
        assumptions, empty = assume(episodes, agent.backends[c.clarifier], agent.policy.params, c.max_turns)
        agent.fallbacks["assumptions"] += empty
    return assumptions


def research_batch(agent: Agent, rows: list[dict], seed: int, mode: str) -> list[dict]:
    """Clarify, retrieve, write and evaluate one batch of request rows under one seed."""
    c = agent.config
    episodes = [Episode(user_row(r, seed)) for r in rows]
    agent.reseed(seed)
    assumptions = clarify(agent, episodes, mode)
    briefs, subqueries = [], []
    for e, assumed in zip(episodes, assumptions, strict=True):
        brief, points = _brief(e, assumed)
        briefs.append(brief)
        subqueries.append(plan(brief.query, points))
    flat = [q for qs in subqueries for q in qs]
    hits = agent.evidence.search(flat, c.k)
    evidence, start = [], 0
    for qs in subqueries:
        evidence.append(gather(hits[start:start + len(qs)], c.max_evidence))
        start += len(qs)
    texts = agent.evidence.texts({e["docid"] for ev_ in evidence for e in ev_})
    for ev_ in evidence:
        for e in ev_:
            e["text"] = texts[e["docid"]]
    if c.writer == "extractive":
        reports = [extractive_report(b, ev_, c.report_sentences) for b, ev_ in zip(briefs, evidence, strict=True)]
    else:
        reports, generations, empty = llm_reports(
            briefs, evidence, agent.backends[c.model], c.sampling(c.writer_max_tokens, seed, greedy=True),
            c.report_sentences)
        agent.fallbacks["writer"] += empty
        for e, g in zip(episodes, generations, strict=True):
            e.tokens_in += g.prompt_tokens
            e.tokens_out += g.completion_tokens
    records = []
    for e, row, brief, qs, ev_, text, assumed in zip(episodes, rows, briefs, subqueries, evidence, reports,
                                                      assumptions, strict=True):
        ids = [x["docid"] for x in ev_]
        text, counts = check_citations(text, ids)
        coverage, covered = ev.intent_coverage(text, ids, e.intents, agent.gate)
        records.append({
            **row,
            "id": e.id, "request": e.query, "clarify": mode, "seed": seed, "turns": e.turns,
            "assumptions": assumed, "brief": brief.as_record(), "subqueries": qs, "evidence": ev_,
            "writer": c.writer, "report": text, "citations": counts, "coverage": coverage,
            "covered_intents": covered, "intents": e.intents, "tokens_in": e.tokens_in,
            "tokens_out": e.tokens_out,
            **({"path": e.path, "graph": e.row.get("graph")} if e.path else {}),
        })
    return records


def interactive_possible(terminal: Terminal | None) -> bool:
    inp = terminal.inp if terminal is not None else None
    try:
        return bool(inp.isatty()) if inp is not None else os.isatty(0)
    except (AttributeError, ValueError, OSError):
        return False


def run_research(config: ResearchConfig, reader: Any, writer: Any, *, terminal: Terminal | None = None,
                 out_dir: Path | None = None, encoder: Any = None, warn: Callable[[str], None] | None = None,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Research every request ``reader`` yields (each under every seed of ``config.seeds``);
    write one REPORT record per (request, seed) to ``writer`` and, with ``out_dir``, one Markdown
    file each; return the aggregate report (metrics with request/seed-bootstrap intervals)."""
    started = time.perf_counter()
    mode = config.clarify
    if mode == "interactive" and config.repeats > 1:
        raise UsageError("--repeats needs a non-interactive --clarify")
    if mode == "interactive" and not interactive_possible(terminal):
        if warn is not None:
            warn("--clarify interactive: stdin is not a terminal, so no questions are asked; using --clarify auto")
        mode = "auto"
    evidence = EvidenceIndex(config.index, docs=config.docs, encoder=encoder, batch_size=64)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    agent: Agent | None = None
    collected: list[dict] = []
    seen: set[str] = set()
    record_no = 0
    for batch in reader.batches():
        rows = []
        for row in batch:
            record_no += 1
            if config.limit is not None and len(seen) >= config.limit:
                break
            rid = str(row["id"])
            if rid in seen:
                raise InputError(f"duplicate request id {rid!r}", source=reader.name, row=record_no, field="id")
            seen.add(rid)
            if mode == "simulate" and not (row.get("intents") or row.get("graph")):
                raise InputError("--clarify simulate needs the user's latent intents (or a graph to draw "
                                 "a user from)", source=reader.name, row=record_no, field="intents")
            rows.append(row)
        if not rows:
            break
        agent = agent or Agent(config, evidence, terminal)  # after the first batch validated
        for seed in config.seeds:
            records = research_batch(agent, rows, seed, mode)
            writer.write_rows(records)
            for r in records:
                collected.append(ev.report_metrics(r))
                if out_dir is not None:
                    write_markdown(out_dir, r, repeats=config.repeats)
        if progress is not None:
            progress(len(rows))
        if config.limit is not None and len(seen) >= config.limit:
            break
    return {
        "stage": "research",
        "label": config.run_label(mode),
        "clarify": mode,
        "clarifier": config.clarifier if mode in ("simulate", "interactive", "auto") else None,
        "writer": config.writer,
        "requests": len(seen),
        "seeds": config.seeds,
        "runs": len(collected),
        "metrics": ev.aggregate(collected, resamples=config.bootstrap, seed=config.seed),
        "per_run": collected,
        "fallbacks": agent.fallbacks | {"summary": getattr(agent.summarizer, "fallbacks", 0)} if agent else {},
        "seconds": round(time.perf_counter() - started, 3),
        "config": config.recorded(),
    }


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def markdown(record: dict) -> str:
    """One request's report as Markdown: the report, then the brief, dialogue, evidence and checks."""
    lines = [record["report"].rstrip(), "", "---", "", f"*Request {record['id']}* ({record['clarify']}, "
             f"seed {record['seed']}): {record['request']}", ""]
    brief = record["brief"]
    lines += ["### Brief", "", brief["query"], ""]
    lines += [f"- {p}" for p in brief["points"]] + ([""] if brief["points"] else [])
    if record["turns"]:
        lines += ["### Clarification", ""]
        for t in record["turns"]:
            lines += [f"{t['turn']}. **Q:** {t['question']}", f"   **A:** {t['answer']} *({t['verdict']})*"]
        lines.append("")
    if record["assumptions"]:
        lines += ["### Assumptions", ""] + [f"- {a}" for a in record["assumptions"]] + [""]
    lines += ["### Evidence", ""]
    lines += [f"- [{e['docid']}] ({e['score']:.3f}) {e['text']}" for e in record["evidence"]] + [""]
    c = record["citations"]
    check = f"{c['valid']}/{c['total']} citations valid"
    if c["invalid"]:
        check += f"; removed {c['invalid']} citing unknown ids: {', '.join(c['invalid_ids'])}"
    if record["coverage"] is not None:
        check += f"; intent coverage {record['coverage']:.2f}"
    lines += [f"*Checks:* {check}.", ""]
    return "\n".join(lines)


def write_markdown(folder: Path, record: dict, *, repeats: int = 1) -> Path:
    """Write ``<id>.md`` (``<id>.seed<N>.md`` with several seeds) atomically."""
    name = _UNSAFE.sub("_", str(record["id"])).strip("._") or "request"
    if repeats > 1:
        name += f".seed{record['seed']}"
    path = folder / f"{name}.md"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(markdown(record), encoding="utf-8")
    os.replace(tmp, path)
    return path
