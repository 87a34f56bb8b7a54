"""The streaming entropy statistics against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irtk.entropy.math import (
    sequence_stats,
    shift_for_next_token,
    token_stats,
    token_stats_from_hidden,
)

FIELDS = ("entropy", "logp", "s", "expected_s", "d")


def reference(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Full-softmax statistics in float64, straight from the definitions."""
    z = logits.astype(np.float64) / temperature
    shifted = z - z.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):  # 0 * -inf where the vocabulary is masked: those add 0
        entropy = -np.where(p > 0, p * logp, 0.0).sum(-1)
        s_all = np.where(p > 0, p * (entropy[:, None] + logp), 0.0)
    expected_s = (p * s_all).sum(-1)
    rows = np.arange(len(targets))
    s = s_all[rows, targets]
    return {"entropy": entropy, "logp": logp[rows, targets], "s": s, "expected_s": expected_s,
            "d": expected_s - s}


def assert_matches(stats, ref: dict[str, np.ndarray]) -> None:
    for name in FIELDS:
        got = getattr(stats, name).double().cpu().numpy()
        want = ref[name]
        # Tolerance relative to the field's scale: S and D of a flat distribution are ~1e-4.
        atol = 1e-4 * np.abs(want).max() + 1e-7
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=name)


def logits_batch(vocab: int, kind: str, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = {"peaked": 30.0, "moderate": 4.0, "flat": 0.1}[kind]
    z = torch.randn(n, vocab, generator=g) * scale
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[: n // 2] = z[: n // 2].argmax(-1)  # likely tokens as well as random ones
    return z, targets


@pytest.mark.parametrize("vocab", [49_152, 152_064])
@pytest.mark.parametrize("kind", ["peaked", "flat"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_float64_reference(vocab: int, kind: str, temperature: float) -> None:
    z, targets = logits_batch(vocab, kind)
    stats = token_stats(z, targets, temperature=temperature)
    assert stats.entropy.dtype == torch.float32
    assert_matches(stats, reference(z.numpy(), targets.numpy(), temperature))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_accumulate_in_fp32(dtype: torch.dtype) -> None:
    z, targets = logits_batch(49_152, "moderate")
    half = z.to(dtype)
    stats = token_stats(half, targets, temperature=0.7)
    assert stats.d.dtype == torch.float32
    # The reference sees exactly the rounded inputs; all the error left is accumulation error.
    assert_matches(stats, reference(half.float().numpy(), targets.numpy(), 0.7))


def test_any_tile_size_gives_the_same_answer() -> None:
    z, targets = logits_batch(12_345, "moderate", n=5)
    base = token_stats(z, targets, tile_size=12_345)
    for tile, rows in ((1_000, None), (4_096, 2), (97, 1), (12_344, 3), (50_000, None)):
        stats = token_stats(z, targets, tile_size=tile, rows_per_chunk=rows)
        for name in FIELDS:
            torch.testing.assert_close(getattr(stats, name), getattr(base, name), rtol=1e-5, atol=1e-6)
    small, small_targets = logits_batch(37, "moderate", n=3)
    one_column = token_stats(small, small_targets, tile_size=1)
    assert_matches(one_column, reference(small.numpy(), small_targets.numpy()))


def test_the_max_arriving_in_a_late_tile_rescales_the_sums() -> None:
    z = torch.full((2, 1000), -5.0)
    z[0, 999] = 40.0  # the only large logit sits in the last tile
    z[1, 500:] = 3.0
    targets = torch.tensor([999, 10])
    assert_matches(token_stats(z, targets, tile_size=64), reference(z.numpy(), targets.numpy()))


def test_masked_vocabulary_entries_are_ignored() -> None:
    z, targets = logits_batch(4_000, "moderate", n=4)
    z[:, 3_000:] = float("-inf")
    z[1, :1_000] = float("-inf")  # row 1's first tiles hold nothing but -inf
    targets = targets % 3_000
    targets[1] = 1_500
    stats = token_stats(z, targets, tile_size=512)
    assert_matches(stats, reference(z[:, :3_000].numpy(), targets.numpy()))


def test_hidden_states_and_head_match_the_logits() -> None:
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(7, 32, generator=g)
    weight = torch.randn(3_000, 32, generator=g) * 0.5
    bias = torch.randn(3_000, generator=g)
    targets = torch.randint(0, 3_000, (7,), generator=g)
    logits = hidden @ weight.T + bias
    stats = token_stats_from_hidden(hidden, weight, targets, bias=bias, temperature=0.8, tile_size=1_000)
    assert_matches(stats, reference(logits.numpy(), targets.numpy(), 0.8))
    capped = token_stats_from_hidden(hidden, weight, targets, softcap=5.0, tile_size=999)
    soft = 5.0 * torch.tanh((hidden @ weight.T) / 5.0)
    assert_matches(capped, reference(soft.numpy(), targets.numpy()))


def test_prompt_and_padding_are_masked_with_the_one_position_shift() -> None:
    # Row 0: 3 prompt tokens, 3 completion tokens. Row 1: 2 prompt, 2 completion, 2 padding.
    input_ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    completion = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 50, generator=g) * 3
    stats = sequence_stats(input_ids, completion, logits=logits, tile_size=16)
    for name in FIELDS:
        values = getattr(stats, name)
        assert torch.all(values[completion == 0] == 0), name
    # Token t is scored by the logits at t - 1.
    for b, t in [(0, 3), (0, 4), (0, 5), (1, 2), (1, 3)]:
        ref = reference(logits[b, t - 1:t].numpy(), input_ids[b, t:t + 1].numpy())
        for name in FIELDS:
            assert getattr(stats, name)[b, t].item() == pytest.approx(ref[name][0], rel=1e-4, abs=1e-6)
    targets, mask = shift_for_next_token(input_ids, completion)
    assert targets[0, :5].tolist() == [6, 7, 8, 9, 10]
    assert mask.tolist() == [[False, False, True, True, True, False], [False, True, True, False, False, False]]


def test_a_completion_at_position_zero_is_not_scored() -> None:
    input_ids = torch.tensor([[3, 4, 5]])
    completion = torch.tensor([[1, 1, 1]])  # nothing precedes token 0: it cannot be scored
    stats = sequence_stats(input_ids, completion, logits=torch.randn(1, 3, 10))
    assert stats.entropy[0, 0] == 0 and stats.entropy[0, 1] > 0 and stats.entropy[0, 2] > 0


def test_sequence_stats_from_hidden_states_equal_the_logits_path() -> None:
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 5, 16, generator=g)
    weight = torch.randn(300, 16, generator=g)
    input_ids = torch.randint(0, 300, (2, 5), generator=g)
    completion = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    a = sequence_stats(input_ids, completion, hidden=hidden, weight=weight, tile_size=64)
    b = sequence_stats(input_ids, completion, logits=hidden @ weight.T, tile_size=100)
    for name in FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_matches_the_reference() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    z, targets = logits_batch(152_064, "moderate")
    stats = token_stats(z.cuda().bfloat16(), targets.cuda(), temperature=0.7)
    assert stats.entropy.is_cuda
    assert_matches(stats, reference(z.bfloat16().float().numpy(), targets.numpy(), 0.7))
