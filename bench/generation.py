"""The `hf` backend: one batched `chat` call vs one call per conversation, same run.

Runs twice: with short prompts (decoding dominates, where batching pays) and with ~640-token
prompts (prefill dominates; on a CPU it costs the same batched or not, which bounds the gain).

    python bench/generation.py [--model smollm2-135m-instruct] [--n 16] [--max-tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

from irtk.generation import SamplingParams, get_backend


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backend = get_backend("hf", args.model, batch_size=args.n)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    background = "The report covers heat pumps, electricity grids and retrofit subsidies. " * 60
    cases = {
        "short prompts": [[{"role": "user", "content": f"Write a short poem about the number {i}."}]
                          for i in range(args.n)],
        "long prompts": [[{"role": "user", "content": f"Background: {background}Question {i}: summarise."}]
                         for i in range(args.n)],
    }
    for name, convs in cases.items():
        backend.chat(convs[:2], params)  # warm-up
        tokens = backend.chat(convs[:1], params)[0].prompt_tokens
        batched = timed(lambda convs=convs: backend.chat(convs, params))
        single = timed(lambda convs=convs: [backend.chat([c], params) for c in convs])
        print(f"{name} ({tokens} prompt tokens, {args.max_tokens} new, {args.n} conversations): "
              f"batched {batched:.1f} s, one at a time {single:.1f} s, speed-up {single / batched:.2f}x")


if __name__ == "__main__":
    main()
