"""``irtk simulate``: play clarification dialogues against simulated users and score them.

For each trajectory (``irtk expand`` output) a clarifier policy asks up to ``max_turns``
questions; the simulated user (``simulator``) judges each with the embedding gate and answers;
every turn is scored with the same reward code the trainers use (``rewards``); after the last
turn the summary agent writes the fine-grained query (``summary``). One output row per
trajectory: its input columns plus the DIALOGUE fields.

Batching (continuous, over dialogues): as many dialogues as the backend asks (``_Parts.slots``;
hf: its batch and the rows it frees before waiting ones join where turns are streamed, twice its
batch per call otherwise) are in play at once. On a backend that streams (hf) with
the template user, each dialogue moves on by itself: its question is judged and answered as soon
as it is written, and its next question joins the backend's running batch at once. Otherwise they
advance together, one turn per step — one policy call for every live dialogue's next question,
one gate pass, one user call. A dialogue that ends leaves at once and the next waiting
trajectory takes its place; an ended dialogue's summary joins the same running batch (a summary
agent on the policy's backend; the dialogue holds its slot until the summary is written), else
ended dialogues get their summaries that many at a time, in one summary call. Output rows keep
the input order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain
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


# Dialogues played at once without a generation backend (oracle/random policy, template agents).
DEFAULT_SLOTS = 64


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
                                                batch_size=c.batch_size, seed=c.seed, **c.backend_args)
        return self._backends[model]

    @property
    def streams(self) -> bool:
        """Whether ``play`` asks for a stream of the policy's turns: its backend has one
        (``ModelPolicy.open_stream``) and the user answers without a model. The backend may
        still decline (hf in ``lockstep`` opens none; its ``stream_size`` is then its
        ``call_size``), and ``play`` then goes turn by turn."""
        backend = getattr(self.policy, "backend", None)
        return (hasattr(self.policy, "open_stream") and hasattr(backend, "open_stream")
                and getattr(self.user, "backend", None) is None)

    def slots(self) -> int:
        """Dialogues to play at once: what the run's backends ask (the smallest: the policy's
        ``stream_size`` where its turns are streamed, else ``call_size``, else ``batch_size``;
        all follow ``--batch-size``), else ``--batch-size``, else ``DEFAULT_SLOTS``."""
        streamed = getattr(self.policy, "backend", None) if self.streams else None
        sizes = [(b is streamed and getattr(b, "stream_size", None)) or getattr(b, "call_size", None)
                 or b.batch_size for b in self._backends.values() if getattr(b, "batch_size", None)]
        return min(sizes, default=self.config.batch_size or DEFAULT_SLOTS)


def play_turn(live: Sequence[Episode], parts: _Parts, max_turns: int) -> None:
    """Advance every live episode by one turn, each at its own turn number: one policy call, one
    gate pass and one user call for all of them (``apply_moves``)."""
    turns = [len(e.turns) + 1 for e in live]
    apply_moves(live, turns, parts.policy.ask(live, turns), parts, max_turns)


def apply_moves(live: Sequence[Episode], turns: Sequence[int], moves: Sequence[Ask], parts: _Parts,
                max_turns: int) -> None:
    """Play the policy's ``moves`` (one per episode, at turn number ``turns``): one gate pass and
    one user call for all of them. An episode ends (``done``) when it stops, has nothing left to
    ask, or has played ``max_turns`` turns."""
    policy, user, rewards = parts.policy, parts.user, parts.rewards
    asking: list[tuple[Episode, int, Ask]] = []
    for e, turn, move in zip(live, turns, moves, strict=True):
        e.tokens_in += move.prompt_tokens
        e.tokens_out += move.completion_tokens
        if move.text is None or move.stop:
            e.done = True
            # The no-clarification baseline never starts; any other policy chose to end.
            e.stopped_early = policy.name != "none"
            if move.stop:
                e.turns.append(_stop_turn(turn, move, e.target_intents(turn)))
            continue
        asking.append((e, turn, move))
    if asking:
        targets = [e.target_intents(turn) for e, turn, _ in asking]
        scores = rewards.score(None, [m.text for _, _, m in asking], target_intents=targets,
                               intents=[e.intents for e, _, _ in asking],
                               history=[e.questions() for e, _, _ in asking],
                               simple_query=[e.query for e, _, _ in asking],
                               matched_intents=[e.matched() for e, _, _ in asking],
                               graph=[e.graph for e, _, _ in asking], path=[e.path for e, _, _ in asking])
        replies = user.answer([e for e, _, _ in asking], [m.text for _, _, m in asking],
                              [s.verdict for s in scores])
        for (e, turn, move), target, score, reply in zip(asking, targets, scores, replies, strict=True):
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
    for e in live:
        if len(e.turns) >= max_turns:
            e.done = True


def summarize(episodes: Sequence[Episode], parts: _Parts) -> None:
    """Write every episode's summary query: one summary-agent call for all of them."""
    for e, reply in zip(episodes, parts.summarizer.summarize(episodes), strict=True):
        write_summary(e, reply, parts)


def write_summary(e: Episode, reply: Any, parts: _Parts) -> None:
    """The summary agent's ``reply`` becomes ``e``'s query."""
    e.summary = reply.text
    e.tokens_in += reply.prompt_tokens
    e.tokens_out += reply.completion_tokens


def forget(episodes: Sequence[Episode], parts: _Parts) -> None:
    """Ended ``episodes`` ask nothing more: the policy drops what it keeps for them (random
    state; a model policy's backend, their stored key/values) as they end, not after their
    summaries."""
    if hasattr(parts.policy, "forget"):
        parts.policy.forget(episodes)


class _Outbox:
    """Where ``play`` keeps episodes from joining to leaving: ended ones are summarised ``slots``
    at a time (the rest once the input runs out) and released in input order."""

    def __init__(self, parts: _Parts, slots: int, max_turns: int) -> None:
        self.parts, self.slots, self.max_turns = parts, slots, max_turns
        self.order: dict[int, int] = {}  # input position by episode
        self.ended: list[tuple[int, Episode]] = []
        self.ready: dict[int, Episode] = {}
        self.joined = self.released = 0

    def join(self, e: Episode) -> bool:
        """Take ``e`` in; False when it has nothing left to play (``done``, or ``max_turns``
        turns played already: it is marked done)."""
        self.order[id(e)] = self.joined
        self.joined += 1
        e.done = e.done or len(e.turns) >= self.max_turns
        return not e.done

    def end(self, episodes: Iterable[Episode]) -> None:
        """Episodes that ended, to be summarised here (``release``)."""
        episodes = list(episodes)
        forget(episodes, self.parts)
        self.ended.extend((self.order.pop(id(e)), e) for e in episodes)

    def summarised(self, e: Episode) -> None:
        """An episode that ended and has its summary already (written in the stream)."""
        self.ready[self.order.pop(id(e))] = e

    def release(self, *, last: bool) -> Iterator[Episode]:
        """Summarise full chunks of ended episodes (every one when ``last``: nothing else will
        end), then yield the ready ones whose turn in input order has come."""
        while len(self.ended) >= self.slots or (last and self.ended):
            chunk, self.ended = self.ended[:self.slots], self.ended[self.slots:]
            summarize([e for _, e in chunk], self.parts)
            self.ready.update(chunk)
        while self.released in self.ready:
            yield self.ready.pop(self.released)
            self.released += 1


def play(episodes: Iterable[Episode], parts: _Parts, max_turns: int, slots: int) -> Iterator[Episode]:
    """Continuous batching over dialogues: up to ``slots`` episodes are in play at once; one that
    ends leaves at once and the next waiting one takes its place. Ended episodes are summarised
    ``slots`` at a time, then yielded in input order. An episode may start from played turns
    (Stage II's expert prefix): it joins at its next turn.

    Where the policy's backend streams (``ModelPolicy.open_stream``: hf) and the user answers
    without a model, each episode moves on by itself: its turn is judged and answered as soon as
    its question is written, and its next question joins the backend's running batch at once
    (``_play_streaming``); where the summary agent writes with that backend, an ended
    episode's summary joins the batch too, the episode keeping its slot until it is written.
    Else every live episode plays one turn per step, one
    policy call for all of them (``_play_in_turns``)."""
    stream = parts.policy.open_stream() if parts.streams else None
    if stream is None:
        return _play_in_turns(episodes, parts, max_turns, slots)
    return _play_streaming(stream, episodes, parts, max_turns, slots)


def _play_in_turns(episodes: Iterable[Episode], parts: _Parts, max_turns: int, slots: int) -> Iterator[Episode]:
    waiting = iter(episodes)
    out = _Outbox(parts, slots, max_turns)
    pool: list[Episode] = []
    exhausted = False
    while True:
        while len(pool) < slots and not exhausted:
            e = next(waiting, None)
            if e is None:
                exhausted = True
                break
            out.join(e)
            pool.append(e)
        live = [e for e in pool if not e.done]
        if live:
            play_turn(live, parts, max_turns)
        out.end(e for e in pool if e.done)
        pool = [e for e in pool if not e.done]
        yield from out.release(last=exhausted and not pool)
        if exhausted and not pool and not out.ended:
            return


def _play_streaming(stream: Any, episodes: Iterable[Episode], parts: _Parts, max_turns: int,
                    slots: int) -> Iterator[Episode]:
    waiting = iter(episodes)
    out = _Outbox(parts, slots, max_turns)
    # Episodes holding a slot: from joining until their summary is written where it is written
    # in the stream, else until their dialogue ends. A summary in the stream holds its slot, so
    # the stream never holds more rows than ``slots``: counted as free, each ended dialogue let
    # one more in while its summary still waited, and every dialogue turn waiting held its
    # stored key/values.
    playing = 0
    conversation = parts.policy.conversation
    summarizer = parts.summarizer
    # Summaries join the stream (no pause of the dialogues' turns, no second batch in memory)
    # where the summary agent writes with the policy's backend.
    streams_summaries = (hasattr(summarizer, "conversation")
                         and getattr(summarizer, "backend", None) is getattr(parts.policy, "backend", None))

    def submit(e: Episode) -> None:
        # A last turn's key/values are not kept for a next one.
        stream.submit(e, conversation(e), last=len(e.turns) + 1 >= max_turns)

    def end(ended: list[Episode]) -> None:
        nonlocal playing
        if not streams_summaries:
            out.end(ended)
            playing -= len(ended)
            return
        forget(ended, parts)
        for e in ended:
            prompt = summarizer.conversation(e)
            if prompt is None:
                summarised(e, None)
            else:
                stream.submit(_SummaryOf(e), prompt, last=True, params=summarizer.params)

    def summarised(e: Episode, generation: Any) -> None:
        nonlocal playing
        write_summary(e, summarizer.reply(e, generation), parts)
        out.summarised(e)
        playing -= 1

    def fill() -> None:
        nonlocal playing
        while playing < slots:
            e = next(waiting, None)
            if e is None:
                return
            playing += 1
            if out.join(e):
                submit(e)
            else:
                end([e])

    fill()
    for finished in stream:
        turns = []
        for key, g in finished:
            if isinstance(key, _SummaryOf):
                summarised(key.episode, g)
            else:
                turns.append((key, g))
        live = [e for e, _ in turns]
        if live:
            apply_moves(live, [len(e.turns) + 1 for e in live], parts.policy.moves([g for _, g in turns]),
                        parts, max_turns)
        for e in live:
            if not e.done:
                submit(e)
        end([e for e in live if e.done])
        fill()
        yield from out.release(last=False)
    yield from out.release(last=True)


@dataclass(frozen=True, eq=False)
class _SummaryOf:
    """A stream key: the summary of ``episode`` (its other keys are episodes, for their turns)."""

    episode: Episode


def simulate_batch(episodes: list[Episode], parts: _Parts, max_turns: int) -> None:
    """Play every episode to its end, all advancing together (``play`` with a slot for each)."""
    for _ in play(episodes, parts, max_turns, slots=max(1, len(episodes))):
        pass


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


def _flush(records: list[dict], writer: Any, collected: list[dict],
           progress: Callable[[int], None] | None) -> int:
    """Write ``records`` (then empty it), keep their metrics; returns how many were written."""
    n = len(records)
    if n:
        writer.write_rows(records)
        collected.extend(metric_row(r) for r in records)
        if progress is not None:
            progress(n)
        records.clear()
    return n


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

    def waiting() -> Iterator[Episode]:
        nonlocal skipped
        taken = 0
        for batch in reader.batches():
            for row in batch:
                if str(row["id"]) in config.skip_ids:
                    skipped += 1
                    continue
                if config.limit is not None and taken >= config.limit:
                    return
                taken += 1
                yield Episode(row)

    episodes = waiting()
    first = next(episodes, None)
    if first is not None:
        # Models load only once the first batch has been read and validated: bad input fails fast.
        parts = parts or _Parts(config)
        slots = parts.slots()
        records: list[dict] = []
        for e in play(chain([first], episodes), parts, config.max_turns, slots):
            records.append(dialogue_record(e, config.policy))
            if len(records) >= slots:
                written += _flush(records, writer, collected, progress)
        written += _flush(records, writer, collected, progress)
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
