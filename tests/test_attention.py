"""irtk's CPU decode-attention kernel against torch's attention, alone and in the hf loop."""

from __future__ import annotations

import shutil

import pytest

from irtk.generation import SamplingParams, attention, get_backend

SYSTEM = {"role": "system", "content": "You answer briefly."}


def kernel_or_skip():
    if attention.library() is None:
        pytest.skip(f"decode kernel not built here: {attention.build_error()}")


@pytest.fixture(scope="session")
def head64_llama(tmp_path_factory, smollm2_path) -> str:
    """A tiny peaked random Llama with heads of 64 (the kernel's size), 3 query heads per
    key/value head as SmolLM2 has."""
    from tests.conftest import _random_llama

    return _random_llama(tmp_path_factory.mktemp("head64-llama"), smollm2_path, hidden_size=192,
                         num_attention_heads=3, num_key_value_heads=1, intermediate_size=128,
                         initializer_range=0.5)


@pytest.fixture
def fresh_library(monkeypatch):
    """``attention.library()`` found again on its next call, and again after the test."""
    attention.library.cache_clear()
    yield
    attention.library.cache_clear()


def count_kernel_calls(monkeypatch) -> list[bool]:
    """Whether each attention call from now on goes to the kernel."""
    seen: list[bool] = []
    real = attention._applies

    def applies(*args):  # noqa: ANN002, ANN202
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(attention, "_applies", applies)
    return seen


def slab_views(rows: int, kv_heads: int, width: int, dtype):
    """Keys and values as the hf loop hands them over: views on a wider slab (positions in front
    and behind), not contiguous tensors."""
    import torch

    k = torch.randn(rows, kv_heads, width + 13, 64, dtype=dtype)
    v = torch.randn(rows, kv_heads, width + 13, 64, dtype=dtype)
    return k[:, :, 5:5 + width], v[:, :, 5:5 + width]


def reference(q, k, v, mask):
    """Attention in fp64 from the same inputs: softmax(q k / 8) v over the positions ``mask`` keeps."""
    import torch

    group = q.shape[1] // k.shape[1]
    k, v = (t.double().repeat_interleave(group, dim=1) for t in (k, v))
    scores = q.double() @ k.transpose(-1, -2) / 8.0
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, -1) @ v).transpose(1, 2)  # [rows, 1, heads, 64]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("group", [1, 3, 8])
@pytest.mark.parametrize("masking", ["padded", "none", "one-row"])
def test_decode_kernel_attends_as_torch_does(dtype, group, masking, monkeypatch):
    """Left padding and a hole of padding mid-row (``[pad][cached][pad][new]``), no mask, or one
    mask row for all: within fp32 rounding of fp64 attention, and in bf16 no further from it than
    torch's own kernel."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kernel_or_skip()
    torch.manual_seed(0)
    dtype = getattr(torch, dtype)
    rows, kv_heads, width = 5, 2, 70
    q = torch.randn(rows, kv_heads * group, 1, 64, dtype=dtype)
    k, v = slab_views(rows, kv_heads, width, dtype)
    mask = torch.ones(rows, 1, 1, width, dtype=torch.bool)
    for r, (pad, hole) in enumerate([(0, 0), (9, 0), (30, 4), (3, 17), (69, 0)]):
        mask[r, ..., :pad] = False
        mask[r, ..., pad + 20:pad + 20 + hole] = False
    mask = {"padded": mask, "none": None, "one-row": mask[3:4]}[masking]
    module = type("Attn", (), {"num_key_value_groups": group, "is_causal": True})()
    calls = count_kernel_calls(monkeypatch)
    with torch.no_grad():
        got, _ = attention.decode_attention(module, q, k, v, mask, scaling=1 / 8)
        torch_out, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=1 / 8)
    assert calls == [True] and got.shape == (rows, 1, kv_heads * group, 64) and got.dtype == dtype
    want = reference(q, k, v, mask)
    error = (got.double() - want).abs().max().item()
    if dtype == torch.float32:
        assert error < 1e-5
    else:
        assert error <= (torch_out.double() - want).abs().max().item() + 1e-3


def test_decode_kernel_leaves_other_calls_to_torch():
    """Pre-fills (more than one position per row), gradients, other head sizes and float masks are
    torch's sdpa."""
    import torch

    kernel_or_skip()
    q = torch.randn(2, 3, 1, 64)
    k, v = slab_views(2, 1, 10, torch.float32)
    assert attention._applies(q, k, v, None, 0.0, {})
    assert not attention._applies(torch.randn(2, 3, 4, 64), k, v, None, 0.0, {})
    assert not attention._applies(q.requires_grad_(), k, v, None, 0.0, {})
    assert not attention._applies(torch.randn(2, 3, 1, 32), k[..., :32], v[..., :32], None, 0.0, {})
    assert not attention._applies(q.detach(), k, v, torch.zeros(2, 1, 1, 10), 0.0, {})
    assert not attention._applies(q.detach(), k, v, None, 0.0, {"sliding_window": 4})


def test_hf_loop_with_the_decode_kernel_gives_the_tokens_of_torchs_attention(head64_llama, monkeypatch):
    """Dialogues over two turns through the hf loop (cached prefixes, rows joining and leaving,
    stop strings): with the kernel, greedy fp32 gives the tokens and log-probs of ``generate``
    with torch's attention throughout."""
    kernel_or_skip()
    applied = count_kernel_calls(monkeypatch)
    params = SamplingParams(max_tokens=12, temperature=0.0, logprobs=True, stop=("e", "a"))
    plain = get_backend("hf", head64_llama, prefix_cache=False, lockstep=True, dtype="float32", batch_size=1,
                        decode_kernel=False)
    fast = get_backend("hf", head64_llama, dtype="float32", batch_size=2)
    assert plain.lm.config._attn_implementation == "sdpa"
    assert fast.lm.config._attn_implementation == attention.NAME
    words = ["rivers", "the history of mountain passes", "why", "glaciers and sea level", "tides"]
    convs = [[SYSTEM, {"role": "user", "content": w}] for w in words]
    for _ in range(2):
        want, got = plain.chat(convs, params), fast.chat(convs, params)
        for p, g in zip(want, got, strict=True):
            assert (g.text, g.completion_tokens, g.finish_reason) == (p.text, p.completion_tokens, p.finish_reason)
            assert g.logprobs == pytest.approx(p.logprobs, abs=1e-4)
        convs = [c + [{"role": "assistant", "content": g.text}, {"role": "user", "content": "and then?"}]
                 for c, g in zip(convs, want, strict=True)]
    assert applied.count(True) > 0  # decode steps went through the kernel
    assert applied.count(False) > 0  # pre-fills did not


def test_without_a_compiler_attention_stays_torchs(head64_llama, monkeypatch, tmp_path, fresh_library):
    """No C++ compiler: no kernel, a reason, and the backend runs on torch's attention."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("IRTK_CACHE", str(tmp_path))
    assert attention.library() is None
    assert "no-such-compiler" in attention.build_error()
    backend = get_backend("hf", head64_llama, dtype="float32")
    assert backend.lm.config._attn_implementation == "sdpa"
    assert backend.chat([[SYSTEM, {"role": "user", "content": "rivers"}]],
                        SamplingParams(max_tokens=3, temperature=0.0))[0].completion_tokens == 3


def test_the_kernel_is_built_once_per_machine(monkeypatch, tmp_path, fresh_library):
    """A second process (a cleared cache here) loads the build the first left in the irtk cache."""
    monkeypatch.setenv("IRTK_CACHE", str(tmp_path))
    kernel_or_skip()
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    attention.library.cache_clear()
    real_run = attention.subprocess.run

    def version_only(cmd, **kwargs):  # noqa: ANN001, ANN202
        assert cmd[1:] == ["--version"], "the kernel was compiled again"
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(attention.subprocess, "run", version_only)
    assert attention.library() is not None
    assert attention.build_error() is None
    assert [p.stat().st_mtime_ns for p in (tmp_path / "kernels").iterdir()] == [stamp]


def test_an_unwritable_cache_leaves_attention_to_torch(monkeypatch, tmp_path, fresh_library):
    """Where the irtk cache cannot hold the build (here a file stands where its folder would be):
    no kernel and a reason, not an error."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler here")
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IRTK_CACHE", str(blocker))
    assert attention.library() is None
    assert attention.build_error()
    assert blocker.read_text() == "not a folder"  # nothing of the user's touched


def test_trainer_rollouts_decode_through_the_kernel_and_training_stays_torchs(head64_llama, monkeypatch):
    """The trainer's live backend: its decode steps go to the kernel (greedy fp32: the tokens and
    log-probs of the hf backend on torch's attention); a training forward on the same model
    object (gradients, whole sequences) is torch's ``sdpa``, logits and gradients as before."""
    import torch

    from irtk.generation.hf import load_causal_lm
    from irtk.training.live import LiveHFBackend

    kernel_or_skip()
    lm, tokenizer, _ = load_causal_lm(head64_llama, "cpu", "float32")
    plain = get_backend("hf", head64_llama, prefix_cache=False, dtype="float32", decode_kernel=False)
    live = LiveHFBackend(lm, tokenizer, batch_size=2)
    assert lm.config._attn_implementation == "sdpa"  # nothing changes until it decodes
    applied = count_kernel_calls(monkeypatch)
    params = SamplingParams(max_tokens=10, temperature=0.0, logprobs=True)
    convs = [[SYSTEM, {"role": "user", "content": w}] for w in ("rivers", "the history of mountain passes", "tides")]
    lm.train()  # as the trainer leaves it between rollouts
    for want, got in zip(plain.chat(convs, params), live.chat(convs, params), strict=True):
        assert (got.text, got.completion_tokens) == (want.text, want.completion_tokens)
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    assert lm.training and lm.config._attn_implementation == attention.NAME
    assert applied.count(True) > 0

    applied.clear()
    batch = live.tokenizer(["the history of mountain passes", "tides"], return_tensors="pt", padding=True)
    kernel_logits = lm(**batch).logits
    kernel_logits.sum().backward()
    kernel_grad = lm.lm_head.weight.grad.clone()
    assert applied and not any(applied)  # every call of the training forward went to torch
    lm.zero_grad()
    lm.set_attn_implementation("sdpa")
    sdpa_logits = lm(**batch).logits
    sdpa_logits.sum().backward()
    assert torch.equal(kernel_logits, sdpa_logits)
    assert torch.equal(kernel_grad, lm.lm_head.weight.grad)


def test_trainer_rollouts_of_a_lora_model_decode_through_the_kernel(head64_llama, monkeypatch):
    """A LoRA-wrapped policy (``--lora-r``): the kernel reaches the wrapped model, a fresh adapter
    (B = 0) decodes the base model's tokens, and the cache goes by transformers' current name
    (peft's ``forward`` takes any keyword: the backend asks the model inside)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from irtk.generation.hf import load_causal_lm
    from irtk.training.live import LiveHFBackend

    kernel_or_skip()
    lm, tokenizer, _ = load_causal_lm(head64_llama, "cpu", "float32")
    policy = get_peft_model(lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    plain = get_backend("hf", head64_llama, prefix_cache=False, dtype="float32", decode_kernel=False)
    applied = count_kernel_calls(monkeypatch)
    params = SamplingParams(max_tokens=8, temperature=0.0)
    convs = [[SYSTEM, {"role": "user", "content": w}] for w in ("rivers", "tides")]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".past_key_values. is deprecated")
        got = LiveHFBackend(policy, tokenizer, batch_size=2).chat(convs, params)
    assert [g.text for g in got] == [g.text for g in plain.chat(convs, params)]
    assert lm.config._attn_implementation == attention.NAME and applied.count(True) > 0
