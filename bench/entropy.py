"""Streaming per-token entropy statistics vs the naive full-softmax computation, same logits,
same run, for V = 49,152 (SmolLM2) and V = 152,064 (Qwen2.5).

For N x V logits (bf16 by default, as models emit them) both compute H, log p_k, S_k, E_p[S] and
D_k for every row:

- naive: upcast to fp32, log_softmax, p = exp, then H, S = p (H + log p), E_p[S] = sum p S over
  full [N, V] tensors (what one writes from the definitions);
- streaming: ``irtk.entropy.math.token_stats`` (vocabulary tiles, running max, four sums);
- read floor: ``logits.amax(-1)``, one read of the logits: no exact method can beat it.

Time: median of ``--repeats`` interleaved runs in this process; targets streaming <= 1.2x naive,
and the ratio to the read floor is reported. Peak memory: on CPU each variant runs once in a
child process that builds the logits first; the peak-RSS mark is then reset (``5`` into
``/proc/self/clear_refs``) and the peak is VmHWM after the variant minus VmRSS before it: the
resident memory the variant added at its worst. (torch's CPU allocator keeps no statistics,
tracemalloc does not see torch, and ru_maxrss is useless here: a child inherits its parent's
high-water mark across fork and exec.) On CUDA, torch.cuda.max_memory_allocated above the logits. Target:
streaming <= 1/4 of naive.

    python bench/entropy.py [--rows 512] [--vocab 49152,152064] [--dtype bfloat16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from irtk.entropy.math import token_stats

TIME_TARGET = 1.2
MEMORY_TARGET = 0.25


def make_logits(rows: int, vocab: int, dtype: torch.dtype, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits filled 16 rows at a time (no [N, V] fp32 temporary), with a peaked/flat mix."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.empty(rows, vocab, dtype=dtype, device=device)
    for r0 in range(0, rows, 16):
        r1 = min(rows, r0 + 16)
        scale = torch.linspace(0.5, 8.0, r1 - r0).unsqueeze(-1)
        logits[r0:r1] = (torch.randn(r1 - r0, vocab, generator=g) * scale).to(device=device, dtype=dtype)
    targets = torch.randint(0, vocab, (rows,), generator=g).to(device)
    return logits, targets


def naive(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    z = logits.float()
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    s_all = p * (entropy.unsqueeze(-1) + logp)
    expected_s = (p * s_all).sum(-1)
    idx = targets.unsqueeze(-1)
    s = s_all.gather(-1, idx).squeeze(-1)
    return entropy, logp.gather(-1, idx).squeeze(-1), s, expected_s, expected_s - s


def streaming(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    st = token_stats(logits, targets)
    return st.entropy, st.logp, st.s, st.expected_s, st.d


def read_floor(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (logits.amax(-1),)


VARIANTS = {"naive": naive, "streaming": streaming, "read": read_floor}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(logits: torch.Tensor, targets: torch.Tensor, repeats: int, device: str) -> dict[str, float]:
    for fn in VARIANTS.values():  # warm-up
        fn(logits, targets)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, fn in VARIANTS.items():  # interleaved: load changes hit all variants alike
            _sync(device)
            t = time.perf_counter()
            fn(logits, targets)
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


CHILD = """
import json, sys, torch
sys.path.insert(0, {bench!r})
from entropy import VARIANTS, make_logits


def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))


logits, targets = make_logits({rows}, {vocab}, getattr(torch, {dtype!r}), "cpu")
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak-RSS mark (VmHWM) restarts at the current RSS
VARIANTS[{variant!r}](logits, targets)
print(json.dumps({{"peak_bytes": (status("VmHWM") - before) * 1024}}))
"""


def cpu_peak(variant: str, rows: int, vocab: int, dtype: str) -> int:
    """Resident bytes a variant adds at its peak, in a fresh child process."""
    from pathlib import Path

    code = CHILD.format(bench=str(Path(__file__).resolve().parent), rows=rows, vocab=vocab, dtype=dtype,
                        variant=variant)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def cuda_peak(variant: str, logits: torch.Tensor, targets: torch.Tensor) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    VARIANTS[variant](logits, targets)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=512, help="N, tokens per batch of logits")
    ap.add_argument("--vocab", default="49152,152064")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"device {args.device}, {torch.get_num_threads()} threads, N = {args.rows}, {args.dtype} logits, "
          f"median of {args.repeats} interleaved runs")
    ok = True
    for vocab in (int(v) for v in args.vocab.split(",")):
        logits, targets = make_logits(args.rows, vocab, dtype, args.device)
        got, want = streaming(logits, targets), naive(logits, targets)
        err = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
        t = time_variants(logits, targets, args.repeats, args.device)
        if args.device.startswith("cuda"):
            peaks = {name: cuda_peak(name, logits, targets) for name in VARIANTS}
        else:
            peaks = {name: cpu_peak(name, args.rows, vocab, args.dtype) for name in VARIANTS}
        time_ratio = t["streaming"] / t["naive"]
        mem_ratio = peaks["streaming"] / max(peaks["naive"], 1)
        time_ok, mem_ok = time_ratio <= TIME_TARGET, mem_ratio <= MEMORY_TARGET
        ok = ok and time_ok and mem_ok
        mib = 1 << 20
        print(f"\nV = {vocab:,} (logits {logits.numel() * logits.element_size() / mib:.0f} MiB), "
              f"max |streaming - naive| = {err:.2e}")
        print(f"  time    naive {t['naive'] * 1e3:8.1f} ms   streaming {t['streaming'] * 1e3:8.1f} ms   "
              f"read floor (amax) {t['read'] * 1e3:7.1f} ms")
        print(f"  peak    naive {peaks['naive'] / mib:8.1f} MiB  streaming {peaks['streaming'] / mib:8.1f} MiB  "
              f"read floor {peaks['read'] / mib:7.1f} MiB")
        print(f"  streaming/naive time {time_ratio:.2f}x (target <= {TIME_TARGET}x: {'met' if time_ok else 'MISSED'}), "
              f"peak memory {mem_ratio:.3f}x (target <= {MEMORY_TARGET}x: {'met' if mem_ok else 'MISSED'}); "
              f"streaming/read-floor time {t['streaming'] / t['read']:.1f}x")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
