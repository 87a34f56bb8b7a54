"""The trainer's live backend: its prefix cache serves the turns of one stream, never a stream
after the weights changed, and holds nothing once a stream is played out."""

from __future__ import annotations

import pytest

from irtk.generation import SamplingParams

SYSTEM = {"role": "system", "content": "You answer briefly."}
WORDS = ["rivers", "the history of mountain passes", "tides", "why glaciers retreat"]
PARAMS = SamplingParams(max_tokens=6, temperature=0.0, logprobs=True)


def live(model_path: str, **options):
    from irtk.generation.hf import load_causal_lm
    from irtk.training.live import LiveHFBackend

    lm, tokenizer, _ = load_causal_lm(model_path, "cpu", "float32")
    return LiveHFBackend(lm, tokenizer, batch_size=2, **options)


def play(backend, turns: int = 3, conversations=None) -> dict:
    """Every conversation ``turns`` turns deep through one stream, each next turn submitted as
    its last one ends (as ``simulate`` does): the generations by conversation."""
    stream = backend.open_stream(PARAMS)
    convs = conversations or {i: [SYSTEM, {"role": "user", "content": w}] for i, w in enumerate(WORDS)}
    out: dict[int, list] = {}
    for key, conv in convs.items():
        stream.submit(key, conv, last=turns == 1)
    for finished in stream:
        for key, g in finished:
            out.setdefault(key, []).append(g)
            if len(out[key]) < turns:
                convs[key] = convs[key] + [{"role": "assistant", "content": g.text},
                                           {"role": "user", "content": "and then?"}]
                stream.submit(key, convs[key], last=len(out[key]) == turns - 1)
    return out


def same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert [g.text for g in got[key]] == [g.text for g in want[key]]
        for g, w in zip(got[key], want[key], strict=True):
            assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)


def test_a_stream_reuses_each_dialogues_turns_with_the_uncached_tokens(tiny_llama):
    """Greedy fp32: the turns of a stream with the prefix cache are those without it, later turns
    served mostly from the cache, and nothing is left stored once the stream is played out."""
    cached, plain = live(tiny_llama), live(tiny_llama, prefix_cache=False)
    got, want = play(cached), play(plain)
    same(got, want)
    assert all(g.cached_tokens == 0 for gs in want.values() for g in gs)
    later = [g for gs in got.values() for g in gs[1:]]
    assert all(g.cached_tokens > g.prompt_tokens // 2 for g in later)
    assert cached.kv_store.bytes == 0 and len(cached.kv_store) == 0


def test_a_stream_after_the_weights_changed_uses_nothing_cached_before(tiny_llama):
    """A stream left mid-way (its turns stored for next ones), then a training step: the next
    stream's turns are those of the new weights, not continued from the old key/values."""
    import torch

    backend = live(tiny_llama)
    stream = backend.open_stream(PARAMS)
    convs = {i: [SYSTEM, {"role": "user", "content": w}] for i, w in enumerate(WORDS)}
    for key, conv in convs.items():
        stream.submit(key, conv)
    first, turns = {}, iter(stream)
    while len(first) < len(convs):  # not played out: left before it ends
        first.update(next(turns))
    assert len(backend.kv_store) > 0  # the first turns wait for their next ones
    with torch.no_grad():  # the trainer's step: the weights change in place
        for p in backend.lm.parameters():
            p.mul_(1.05)
    nexts = {k: c + [{"role": "assistant", "content": first[k].text}, {"role": "user", "content": "and then?"}]
             for k, c in convs.items()}
    got = play(backend, turns=1, conversations={k: list(c) for k, c in nexts.items()})
    plain = live(tiny_llama, prefix_cache=False)
    plain.lm.load_state_dict(backend.lm.state_dict())
    want = play(plain, turns=1, conversations={k: list(c) for k, c in nexts.items()})
    same(got, want)
    assert all(g.cached_tokens == 0 for gs in got.values() for g in gs)


def test_a_stream_left_and_closed_keeps_nothing(tiny_llama):
    """A stream its caller leaves mid-way (an error in a trainer's round) and closes: its stored
    turns go then, not at the next call."""
    backend = live(tiny_llama)
    stream = backend.open_stream(PARAMS)
    for i, w in enumerate(WORDS):
        stream.submit(i, [SYSTEM, {"role": "user", "content": w}])
    turns, ended = iter(stream), 0
    while ended < len(WORDS):
        ended += len(next(turns))
    assert len(backend.kv_store) > 0
    turns.close()
    assert len(backend.kv_store) == 0 and backend.kv_store.bytes == 0


def test_chat_keeps_nothing_between_calls(tiny_llama):
    """``chat`` (a trainer's other calls): the same generations as without the cache, and an empty
    store after."""
    cached, plain = live(tiny_llama), live(tiny_llama, prefix_cache=False)
    convs = [[SYSTEM, {"role": "user", "content": w}] for w in WORDS]
    got, want = cached.chat(convs, PARAMS), plain.chat(convs, PARAMS)
    assert [g.text for g in got] == [g.text for g in want]
    assert len(cached.kv_store) == 0
