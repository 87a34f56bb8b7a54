"""``irtk simulate``: play clarification dialogues against simulated users and score them.

For each trajectory (``irtk expand`` output) a clarifier policy asks up to ``max_turns``
questions; the simulated user (``simulator``) judges each with the embedding gate and answers;
every turn is scored with the same reward code the trainers use (``rewards``); after the last
turn the summary agent writes the fine-grained query (``summary``). One output row per
trajectory: its input columns plus the DIALOGUE fields.

Batching: trajectories are taken ``batch_size`` at a time and advance together — one policy call
for every live dialogue's next question, one gate pass, one user call, and at the end one
summary call — so a backend sees whole batches, never single prompts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from irtk.dialogue import metrics as metric_lib
from irtk.dialogue.config import SimulateConfig
from irtk.dialogue.episode import Episode
from irtk.dialogue.gate import STOP
from irtk.dialogue.policies import Ask, make_policy
from irtk.dialogue.rewards import IntentRewards
from irtk.dialogue.summary import make_summarizer
from irtk.dialogue.user import make_user
from irtk.errors import InputError
from irtk.records import DIALOGUE, TRAJECTORY, RecordType


@dataclass(frozen=True)
class SimulateInput(RecordType):
    """A trajectory that can be simulated: TRAJECTORY plus latent intents and a non-empty graph."""

    def validate(self, row: Mapping, *, source: str | None = None, row_no: int | None = None) -> None:
        super().validate(row, source=source, row_no=row_no)
        if not row["intents"]:
            raise InputError("no latent intents (empty list): nothing to simulate the user from",
                             source=source, row=row_no, field="intents")
        graph = row.get("graph")
        if graph is None:
            raise InputError("missing the trajectory's C-DAG (irtk expand writes it)",
                             source=source, row=row_no, field="graph")
        if not graph.get("nodes"):
            raise InputError("empty graph: no question nodes", source=source, row=row_no,
                             field="graph.nodes")


SIMULATE_INPUT = SimulateInput(TRAJECTORY.name, TRAJECTORY.schema, TRAJECTORY.required, TRAJECTORY.doc)


def output_schema() -> Any:
    """DIALOGUE's fields, then the trajectory fields passed through with their Arrow types."""
    import pyarrow as pa

    names = set(DIALOGUE.schema.names)
    return pa.schema([*DIALOGUE.schema, *(f for f in TRAJECTORY.schema if f.name not in names)])


class _Parts:
    """The policy, user, summary agent and rewards of a run, built on the first batch."""

    def __init__(self, config: SimulateConfig, backends: Mapping[str, Any] | None = None) -> None:
        self.config = config
        # ``backends``: models already loaded, by name (a trainer's live policy plays rollouts).
        self._backends: dict[str, Any] = dict(backends or {})
        self.rewards = IntentRewards(config.embedder, thresholds=config.gate_thresholds(),
                                     mode=config.gate, beta=config.beta, gamma=config.gamma)
        self.policy = make_policy(
            config.policy, backend=self.backend(config.model) if config.policy == "model" else None,
            params=config.sampling(config.max_tokens), allow_stop=config.allow_stop, seed=config.seed)
        self.user = make_user(
            config.user, backend=self.backend(config.user_model or config.model) if config.user == "llm" else None,
            params=config.sampling(config.user_max_tokens))
        self.summarizer = make_summarizer(
            config.summary,
            backend=self.backend(config.summary_model or config.model) if config.summary == "llm" else None,
            params=replace(config.sampling(config.summary_max_tokens), temperature=0.0))

    def backend(self, model: str) -> Any:
        if model not in self._backends:
            from irtk.generation import get_backend

            c = self.config
            self._backends[model] = get_backend(c.backend, model, base_url=c.base_url, dtype=c.dtype,
                                                batch_size=c.batch_size, seed=c.seed)
        return self._backends[model]


def simulate_batch(episodes: list[Episode], parts: _Parts, max_turns: int) -> None:
    """Play every episode to its end, all live ones advancing one turn per backend call."""
    policy, user, rewards = parts.policy, parts.user, parts.rewards
    for turn in range(1, max_turns + 1):
        if all(e.done for e in episodes):
            break
        # An episode that starts from k played turns (Stage II's expert prefix) joins at turn k+1.
        live = [e for e in episodes if not e.done and len(e.turns) < turn]
        if not live:
            continue
        asking: list[tuple[Episode, Ask]] = []
        for e, move in zip(live, policy.ask(live, turn), strict=True):
            e.tokens_in += move.prompt_tokens
            e.tokens_out += move.completion_tokens
            if move.text is None or move.stop:
                e.done = True
                # The no-clarification baseline never starts; any other policy chose to end.
                e.stopped_early = policy.name != "none"
                if move.stop:
                    e.turns.append(_stop_turn(turn, move, e.target_intents(turn)))
                continue
            asking.append((e, move))
        if not asking:
            continue
        targets = [e.target_intents(turn) for e, _ in asking]
        scores = rewards.score(None, [m.text for _, m in asking], target_intents=targets,
                               intents=[e.intents for e, _ in asking],
                               history=[e.questions() for e, _ in asking],
                               simple_query=[e.query for e, _ in asking])
        replies = user.answer([e for e, _ in asking], [m.text for _, m in asking],
                              [s.verdict for s in scores])
        for (e, move), target, score, reply in zip(asking, targets, scores, replies, strict=True):
            e.tokens_in += reply.prompt_tokens
            e.tokens_out += reply.completion_tokens
            if move.node_id is not None:
                e.asked_nodes.append(move.node_id)
            v = score.verdict
            e.turns.append({
                "turn": turn, "question": move.text, "answer": reply.text, "verdict": v.verdict,
                "matched_intent": v.matched_intent, "similarity": round(v.similarity, 6),
                "target_intents": target, "content": round(score.content, 6), "format": score.format,
                "penalty": score.penalty, "reward": round(score.reward, 6),
                "prompt_tokens": move.prompt_tokens, "completion_tokens": move.completion_tokens,
            })
    for e, reply in zip(episodes, parts.summarizer.summarize(episodes), strict=True):
        e.summary = reply.text
        e.tokens_in += reply.prompt_tokens
        e.tokens_out += reply.completion_tokens
    if hasattr(policy, "forget"):
        policy.forget(episodes)


def _stop_turn(turn: int, move: Ask, targets: list[str]) -> dict:
    return {"turn": turn, "question": move.text, "answer": "", "verdict": STOP, "matched_intent": None,
            "similarity": None, "target_intents": targets, "content": None, "format": None,
            "penalty": None, "reward": None, "prompt_tokens": move.prompt_tokens,
            "completion_tokens": move.completion_tokens}


def dialogue_record(episode: Episode, policy: str) -> dict:
    """The output row: the trajectory's columns, then the dialogue and its metrics."""
    m = metric_lib.dialogue_metrics(episode.turns, episode.intents)
    return {
        **episode.row,
        "policy": policy,
        "turns": episode.turns,
        **m,
        "stopped_early": episode.stopped_early,
        "summary": episode.summary,
        "tokens_in": episode.tokens_in,
        "tokens_out": episode.tokens_out,
    }


def metric_row(record: Mapping) -> dict:
    """The per-dialogue numbers the aggregate needs (kept in memory instead of whole rows)."""
    row = {name: record.get(name) for name in metric_lib.PER_DIALOGUE}
    row["seed"] = metric_lib.seed_of(record)  # the bootstrap resamples seeds, not dialogues
    if row["stopped_early"] is not None:
        row["stopped_early"] = float(bool(row["stopped_early"]))
    return row


def run_simulate(config: SimulateConfig, reader: Any, writer: Any, *,
                 prior_rows: Iterable[Mapping] = (), progress: Callable[[int], None] | None = None,
                 parts: _Parts | None = None) -> dict:
    """Simulate every trajectory ``reader`` yields, write one dialogue per trajectory to
    ``writer`` and return the aggregate report (``prior_rows``: dialogues already written by an
    earlier run, included in the aggregate; ``parts``: a prebuilt policy, user, summary agent and
    rewards, e.g. around a model being trained)."""
    started = time.perf_counter()
    collected = [metric_row(r) for r in prior_rows]
    prior = len(collected)
    skipped = written = 0
    for batch in reader.batches():
        episodes = []
        for row in batch:
            if str(row["id"]) in config.skip_ids:
                skipped += 1
                continue
            if config.limit is not None and written + len(episodes) >= config.limit:
                break
            episodes.append(Episode(row))
        if episodes:
            # Models load only once the first batch has been read and validated: bad input fails fast.
            parts = parts or _Parts(config)
            simulate_batch(episodes, parts, config.max_turns)
            records = [dialogue_record(e, config.policy) for e in episodes]
            writer.write_rows(records)
            collected.extend(metric_row(r) for r in records)
            written += len(records)
            if progress is not None:
                progress(len(records))
        if config.limit is not None and written >= config.limit:
            break
    return {
        "stage": "simulate",
        "policy": config.policy,
        "dialogues": len(collected),
        "new_dialogues": written,
        "resumed_dialogues": prior,
        "skipped_inputs": skipped,
        "metrics": metric_lib.aggregate(collected, resamples=config.bootstrap, seed=config.seed),
        "fallbacks": {"user": getattr(parts.user, "fallbacks", 0) if parts else 0,
                      "summary": getattr(parts.summarizer, "fallbacks", 0) if parts else 0},
        "seconds": round(time.perf_counter() - started, 3),
        "config": config.recorded(),
    }
