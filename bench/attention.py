"""Decode attention: irtk's CPU kernel (``irtk.generation.attention``) against torch's
``scaled_dot_product_attention`` as transformers calls it (one query per row, 3 query heads per
key/value head packed onto it), same process, same inputs.

The inputs are a decode step's, as the `hf` loop hands them to one layer of SmolLM2-135M: ``--rows``
rows of keys and values (3 key/value heads of 64) viewed on a slab with room in front and behind,
each row left-padded (a quarter of the positions, varying by row, as in a run's batches) at each
of ``--widths``. Each round times both in turn (the order reversed every other round, so drifting
load favours neither); prints the median of each per width and the kernel's speed as a multiple of
torch's.

    python bench/attention.py [--rows 32] [--widths 300,600,1000] [--rounds 40] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from irtk.generation import attention

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--widths", default="300,600,1000")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    if attention.library() is None:
        raise SystemExit(f"the decode kernel is not built here: {attention.build_error()}")
    dtype = getattr(torch, args.dtype)
    heads, kv_heads, dim = 9, 3, 64
    module = type("Attn", (), {"num_key_value_groups": heads // kv_heads, "is_causal": True})()
    generator = torch.Generator().manual_seed(0)
    print(f"decode attention: {args.rows} rows, {heads} query / {kv_heads} key-value heads of {dim}, "
          f"{args.dtype}, median of {args.rounds}")
    for width in (int(w) for w in args.widths.split(",")):
        slab = [torch.randn(args.rows, kv_heads, width + width // 4, dim, generator=generator).to(dtype)
                for _ in range(2)]
        front = width // 8
        keys, values = (s[:, :, front:front + width] for s in slab)
        query = torch.randn(args.rows, heads, 1, dim, generator=generator).to(dtype)
        pads = torch.randint(0, width // 2, (args.rows,), generator=generator)
        mask = (torch.arange(width)[None, :] >= pads[:, None])[:, None, None, :]
        methods = {"irtk kernel": attention.decode_attention, "torch sdpa": sdpa_attention_forward}
        times: dict[str, list[float]] = {name: [] for name in methods}
        with torch.inference_mode():
            for r in range(args.rounds + 1):
                for name, fn in (list(methods.items()) if r % 2 == 0 else list(methods.items())[::-1]):
                    start = time.perf_counter()
                    fn(module, query, keys, values, mask, scaling=dim ** -0.5)
                    if r:  # the first round warms up
                        times[name].append(time.perf_counter() - start)
            got = attention.decode_attention(module, query, keys, values, mask, scaling=dim ** -0.5)[0]
            want = sdpa_attention_forward(module, query, keys, values, mask, scaling=dim ** -0.5)[0]
        kernel, torch_time = (statistics.median(times[name]) for name in methods)
        print(f"  width {width:5d} ({1 - pads.float().mean().item() / width:.0%} used): irtk kernel "
              f"{kernel * 1e3:6.3f} ms  torch sdpa {torch_time * 1e3:6.3f} ms  {torch_time / kernel:5.2f}x  "
              f"(outputs differ by at most {(got.float() - want.float()).abs().max().item():.1e})")


if __name__ == "__main__":
    main()
