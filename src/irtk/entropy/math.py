"""Streaming per-token entropy statistics: one pass over vocabulary tiles, no [N, V] softmax.

At each scored position with logits z (divided by the sampling temperature), p = softmax(z) and
sampled token k::

    H        = -sum_j p_j log p_j                   entropy
    log p_k  = z_k - log Z                          the token's log-probability
    S_k      = p_k (H + log p_k)                    single-logit discriminant (dH/dz_k = -S_k)
    E_p[S]   = sum_j p_j^2 (H + log p_j)            >= 0
    D_k      = E_p[S] - S_k                         a GRPO step with advantage A: dH ~ eta A D_k

One pass over the vocabulary in tiles keeps a running max m and four sums of the shifted logits
x = z - m (see ``papers/entropy.md``)::

    a = sum e^x,  b = sum x e^x,  c = sum e^{2x},  d = sum x e^{2x}

When a tile raises the max to m' (delta = m - m' <= 0) the sums move to the new shift:
``a <- e^delta a``, ``b <- e^delta (b + delta a)``, ``c <- e^{2 delta} c``,
``d <- e^{2 delta} (d + delta c)``. Then ``log Z = m + log a``, ``H = log a - b/a``,
``E_p[S] = (d a - b c) / a^3``. Keeping the sums relative to the running max (rather than
``sum z e^{z-m}`` as written in the notes) avoids the cancellation of ``log Z - E_p[z]`` when
logits are large; the formulas are the same because ``d a - b c`` does not depend on the shift.

Rows are taken ``rows_per_chunk`` at a time and the vocabulary ``tile_size`` columns at a time,
so the working set is one fp32 tile whatever N and V are, and bf16/fp16 inputs are upcast one
tile at a time (fp32 accumulation: E_p[S] is a difference of close terms). The same pass works
from hidden states and the LM head weight, computing each tile's logits on the fly, so the
[N, V] logits never exist at all. Everything runs under ``no_grad``: these are metrics and mask
inputs, not loss terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

# Elements per tile (rows x vocabulary columns): 16 MB of fp32 on CPU, 64 MB on accelerators.
# Each tile costs ~10 tensor operations, so fewer, larger tiles win when operations are dear
# (kernel launches; thread wake-ups on a busy CPU); the working set stays a few tiles.
CPU_TILE_ELEMENTS = 1 << 22
ACCELERATOR_TILE_ELEMENTS = 1 << 24
DEFAULT_TILE_SIZE = 8192


@dataclass
class TokenStats:
    """Per-token statistics, fp32, all of the same shape (the targets' shape)."""

    entropy: torch.Tensor
    logp: torch.Tensor
    s: torch.Tensor
    expected_s: torch.Tensor
    d: torch.Tensor

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> TokenStats:
        """The same statistics with ``fn`` applied to each tensor (indexing, ``.cpu()``, …)."""
        return TokenStats(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _tile_plan(n_rows: int, vocab: int, device: torch.device, tile_size: int | None,
               rows_per_chunk: int | None) -> tuple[int, int]:
    tile = max(1, min(vocab, tile_size or DEFAULT_TILE_SIZE))
    if rows_per_chunk is None:
        budget = CPU_TILE_ELEMENTS if device.type == "cpu" else ACCELERATOR_TILE_ELEMENTS
        rows_per_chunk = max(1, budget // tile)
    return tile, max(1, min(rows_per_chunk, max(n_rows, 1)))


def _rowdot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products as a batched matmul: no [rows, tile] product tensor is made."""
    return (u.unsqueeze(-2) @ v.unsqueeze(-1)).view(-1)


def _chunk(block: Any, tile_logits: Callable[[Any, int, int], torch.Tensor], tgt: torch.Tensor,
           vocab: int, tile: int, inv_t: float, safe: bool) -> tuple[torch.Tensor, ...]:
    """The recurrence for one row chunk: (entropy, logp, s, expected_s). Sums are over the
    tempered logits shifted by the running max; the max itself is kept in raw logit units."""
    m = a = b = c = d = zk = None
    # Two fp32 buffers reused by every tile: no allocation per tile, so the allocator cannot
    # fragment the heap and the peak memory is the buffers.
    rows = tgt.numel()
    x_buf = torch.empty(rows, tile, dtype=torch.float32, device=tgt.device)
    e_buf = torch.empty_like(x_buf)
    for v0 in range(0, vocab, tile):
        v1 = min(vocab, v0 + tile)
        z = tile_logits(block, v0, v1)  # the model's dtype: read once by amax, once by the shift
        tile_max = z.amax(dim=-1).float()
        if safe:  # a tile of only -inf logits must not make the running max -inf
            tile_max = tile_max.clamp(min=-1e30)
        m_new = tile_max if m is None else torch.maximum(m, tile_max)
        if m is not None:
            delta = (m - m_new) * inv_t
            alpha = delta.exp()
            alpha2 = alpha * alpha
            b = alpha * (b + delta * a)
            d = alpha2 * (d + delta * c)
            a = alpha * a
            c = alpha2 * c
        width = v1 - v0
        x = x_buf if width == tile else x_buf[:, :width]
        e = e_buf if width == tile else e_buf[:, :width]
        torch.sub(z, m_new.unsqueeze(-1), out=x)  # the upcast to fp32 and the shift in one pass
        if inv_t != 1.0:
            x.mul_(inv_t)
        if safe:  # -inf logits (masked vocabulary) would give -inf * 0 = nan in x e^x
            x.clamp_(min=-1e4)
        torch.exp(x, out=e)
        xe = x.mul_(e)  # x is not needed again
        sums = (e.sum(-1), xe.sum(-1), _rowdot(e, e), _rowdot(xe, e))
        a, b, c, d = sums if m is None else (a + sums[0], b + sums[1], c + sums[2], d + sums[3])
        m = m_new
        # The sampled token's logit, from the tile that holds it.
        local = tgt - v0
        inside = (local >= 0) & (local < v1 - v0)
        picked = z.gather(1, local.clamp(0, v1 - v0 - 1).unsqueeze(-1)).squeeze(-1).float()
        zk = torch.where(inside, picked, zk if zk is not None else torch.zeros_like(picked))
    log_a = a.log()
    entropy = log_a - b / a
    logp = (zk - m) * inv_t - log_a
    s = logp.exp() * (entropy + logp)
    expected_s = (d * a - b * c) / (a * a * a)
    return entropy, logp, s, expected_s


@torch.no_grad()
def _stream(row_block: Callable[[int, int], Any], tile_logits: Callable[[Any, int, int], torch.Tensor],
            targets: torch.Tensor, vocab: int, *, temperature: float, tile_size: int | None,
            rows_per_chunk: int | None, device: torch.device) -> TokenStats:
    """The one-pass recurrence over ``targets.numel()`` rows. ``row_block(r0, r1)`` fetches rows
    once per row chunk; ``tile_logits(block, v0, v1)`` returns their logits for columns v0:v1."""
    n = targets.numel()
    tile, chunk = _tile_plan(n, vocab, device, tile_size, rows_per_chunk)
    out = {name: torch.empty(n, dtype=torch.float32, device=device)
           for name in ("entropy", "logp", "s", "expected_s", "d")}
    inv_t = 1.0 / float(temperature)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        block = row_block(r0, r1)
        tgt = targets[r0:r1]
        entropy, logp, s, expected_s = _chunk(block, tile_logits, tgt, vocab, tile, inv_t, safe=False)
        if not bool(torch.isfinite(expected_s).all()):
            # Rare (-inf logits): one more pass with the clamp, rather than a clamp on every tile.
            entropy, logp, s, expected_s = _chunk(block, tile_logits, tgt, vocab, tile, inv_t, safe=True)
        out["entropy"][r0:r1] = entropy
        out["logp"][r0:r1] = logp
        out["s"][r0:r1] = s
        out["expected_s"][r0:r1] = expected_s
        out["d"][r0:r1] = expected_s - s
    return TokenStats(**out)


def _scatter(flat: TokenStats, shape: torch.Size, index: torch.Tensor | None) -> TokenStats:
    """Per-row results back to ``shape``; zeros where a mask left positions out."""
    if index is None:
        return flat.map(lambda t: t.reshape(shape))

    def place(t: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(shape.numel(), dtype=t.dtype, device=t.device)
        full[index] = t
        return full.reshape(shape)

    return flat.map(place)


def token_stats(logits: torch.Tensor, targets: torch.Tensor, *, mask: torch.Tensor | None = None,
                temperature: float = 1.0, tile_size: int | None = None,
                rows_per_chunk: int | None = None) -> TokenStats:
    """Statistics of ``targets`` [...] under ``logits`` [..., V] (already aligned: the logits at a
    position are the distribution of the target at that position, as in a trainer's completion
    logits). With ``mask`` only those positions are computed; the others are 0. Any dtype in,
    fp32 out; the result does not depend on ``tile_size`` beyond rounding."""
    vocab = logits.shape[-1]
    shape = targets.shape
    flat_logits = logits.reshape(-1, vocab)
    flat_targets = targets.reshape(-1).to(flat_logits.device)
    index = None
    if mask is not None:
        index = mask.reshape(-1).to(flat_logits.device).nonzero().squeeze(-1)
        flat_targets = flat_targets[index]

    def row_block(r0: int, r1: int) -> torch.Tensor:
        return flat_logits[r0:r1] if index is None else flat_logits.index_select(0, index[r0:r1])

    stats = _stream(row_block, lambda block, v0, v1: block[:, v0:v1], flat_targets, vocab,
                    temperature=temperature, tile_size=tile_size, rows_per_chunk=rows_per_chunk,
                    device=flat_logits.device)
    return _scatter(stats, shape, index)


def token_stats_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                            bias: torch.Tensor | None = None, softcap: float | None = None,
                            mask: torch.Tensor | None = None, temperature: float = 1.0,
                            tile_size: int | None = None, rows_per_chunk: int | None = None) -> TokenStats:
    """As ``token_stats`` from final hidden states [..., h] and the LM head ``weight`` [V, h]
    (``bias`` [V], Gemma-style final ``softcap``): each tile's logits are computed on the fly in
    the weight's dtype, exactly as the model's head would, then accumulated in fp32."""
    vocab = weight.shape[0]
    shape = targets.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1]).to(weight.dtype)
    flat_targets = targets.reshape(-1).to(flat_hidden.device)
    index = None
    if mask is not None:
        index = mask.reshape(-1).to(flat_hidden.device).nonzero().squeeze(-1)
        flat_targets = flat_targets[index]

    def row_block(r0: int, r1: int) -> torch.Tensor:
        return flat_hidden[r0:r1] if index is None else flat_hidden.index_select(0, index[r0:r1])

    def tile_logits(block: torch.Tensor, v0: int, v1: int) -> torch.Tensor:
        z = block @ weight[v0:v1].T
        if bias is not None:
            z = z + bias[v0:v1]
        z = z.float()
        if softcap:
            z = softcap * torch.tanh(z / softcap)
        return z

    stats = _stream(row_block, tile_logits, flat_targets, vocab, temperature=temperature,
                    tile_size=tile_size, rows_per_chunk=rows_per_chunk, device=flat_hidden.device)
    return _scatter(stats, shape, index)


def shift_for_next_token(input_ids: torch.Tensor, completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and mask aligned with a causal LM's positions: the logits at position t predict
    token t+1, so position t is scored when token t+1 is a completion token. Returns
    (targets, mask), both [B, L]; the last position is never scored."""
    targets = torch.zeros_like(input_ids)
    targets[:, :-1] = input_ids[:, 1:]
    mask = torch.zeros_like(completion_mask, dtype=torch.bool)
    mask[:, :-1] = completion_mask[:, 1:].bool()
    return targets, mask


def unshift(stats: TokenStats) -> TokenStats:
    """Statistics computed at predicting positions (``shift_for_next_token``) moved onto the
    tokens they score: entry t of the result belongs to token t (0 where nothing was scored)."""
    def move(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(t)
        out[:, 1:] = t[:, :-1]
        return out

    return stats.map(move)


def sequence_stats(input_ids: torch.Tensor, completion_mask: torch.Tensor, *,
                   logits: torch.Tensor | None = None, hidden: torch.Tensor | None = None,
                   weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                   softcap: float | None = None, temperature: float = 1.0,
                   tile_size: int | None = None, rows_per_chunk: int | None = None) -> TokenStats:
    """Statistics of every completion token of full sequences ([B, L] ids; ``completion_mask``
    marks completion tokens, so prompt and padding are excluded) from a causal LM's ``logits``
    [B, L, V] or its final ``hidden`` states [B, L, h] with the head ``weight``. Handles the
    one-position shift; entry [b, t] belongs to token t, 0 outside the completion."""
    targets, mask = shift_for_next_token(input_ids, completion_mask)
    common = dict(mask=mask, temperature=temperature, tile_size=tile_size, rows_per_chunk=rows_per_chunk)
    if logits is not None:
        stats = token_stats(logits, targets, **common)
    elif hidden is not None and weight is not None:
        stats = token_stats_from_hidden(hidden, weight, targets, bias=bias, softcap=softcap, **common)
    else:
        raise ValueError("sequence_stats needs logits, or hidden states and the LM head weight")
    return unshift(stats)
