"""The `hf` backend's sampler (``irtk.generation.hf.sample``) against the full-vocabulary
inversion it replaced and transformers' top-p warper with ``multinomial``, same process, on the
embedded model's next-token logits of ``--rows`` prompts (a decode step's batch).

Each round times the three in turn (the order reversed every other round, so drifting load
favours none) at the policy's defaults (temperature 0.7, top-p 0.95); prints the median time of
each and its ratio to the full inversion.

    python bench/sampler.py [--rows 32] [--rounds 40] [--temperature 0.7] [--top-p 0.95]
"""

from __future__ import annotations

import argparse
import statistics
import time


def full_inversion(scores, top_p: float, generator):  # noqa: ANN001, ANN201
    """The sampler before the two-level inversion: an fp64 cumulative sum of the whole
    vocabulary, copied per drawn row, and the nucleus test summed over the whole vocabulary."""
    import torch

    probs = torch.softmax(scores, dim=-1)
    cdf = probs.cumsum(-1, dtype=torch.float64)

    def draw(rows):  # noqa: ANN001, ANN202
        part = cdf[rows]
        u = torch.rand(len(part), 1, dtype=part.dtype, generator=generator) * part[:, -1:]
        return torch.searchsorted(part, u, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)

    rows = torch.arange(len(probs))
    chosen = draw(rows)
    part = probs
    while top_p < 1.0:
        mine = part.gather(-1, chosen[rows, None])
        outside = part.where(part > mine, 0).sum(-1) >= top_p
        if not bool(outside.any()):
            break
        rows = rows[outside]
        chosen[rows] = draw(rows)
        part = probs[rows]
    return chosen


def warper(scores, top_p: float, generator):  # noqa: ANN001, ANN201
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    cut = TopPLogitsWarper(top_p)(None, scores.clone())
    return torch.multinomial(torch.softmax(cut, -1), 1, generator=generator).squeeze(1)


def main() -> None:
    import torch

    from irtk.device import bound_kernel_caches
    from irtk.generation.hf import load_causal_lm, sample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    args = parser.parse_args()
    bound_kernel_caches()
    lm, tokenizer, _ = load_causal_lm("smollm2-135m-instruct")
    topics = ["river deltas", "protein folding", "tax policy", "urban heat islands", "sleep and memory",
              "battery chemistry", "medieval trade", "coral bleaching"]
    prompts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Ask me one question about my research on {topics[i % len(topics)]} "
                                     f"(project {i})."}], tokenize=False, add_generation_prompt=True)
        for i in range(args.rows)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = lm(**batch, logits_to_keep=1).logits[:, -1, :].float()
    scores = logits / args.temperature
    methods = {"two-level (irtk)": sample, "full inversion": full_inversion, "top-p warper": warper}
    times: dict[str, list[float]] = {name: [] for name in methods}
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for r in range(args.rounds + 1):
            for name, fn in (list(methods.items()) if r % 2 == 0 else list(methods.items())[::-1]):
                start = time.perf_counter()
                fn(scores, args.top_p, generator)
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
    base = statistics.median(times["full inversion"])
    print(f"sampler: {args.rows} rows x {scores.shape[-1]} tokens, temperature {args.temperature}, "
          f"top-p {args.top_p}, median of {args.rounds}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:18s} {t * 1e3:7.2f} ms   {base / t:5.2f}x the full inversion's speed")


if __name__ == "__main__":
    main()
