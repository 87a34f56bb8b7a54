"""What a decode step of the `hf` backend costs per row at each batch size, and the least time a
run's tokens can take at that cost: the floor under `bench/simulate.py`'s figures.

For each batch size, ``rows`` prompts of ~``--width`` tokens are pre-filled together and decoded
``--tokens`` steps through the backend's own loop (``HFBackend.chat``: its slab cache, packed
weights, kernel caches and sampler; no prefix store, so every call starts cold). Per batch size it
prints the median time of a decode step with every row decoding, that time per row (one token
written), the pre-fill's time per token, and the ratio of the row cost to the default batch's
(``auto_batch_size``) in this same process. Then the floor of a run that writes ``--written``
tokens and pre-fills ``--prefilled`` (defaults: all 699 example trajectories of
``bench/simulate.py --dialogues 0``): every step full, no row padded wider than its own history,
no time outside the model's forwards. A run can only be slower than its floor.

    python bench/decode_floor.py [--width 700] [--tokens 24] [--batches 16,32,48,64,96,128]
"""

from __future__ import annotations

import argparse
import statistics
import time


def measure(rows: int, width: int, tokens: int) -> tuple[float, float]:
    """(median seconds of a full decode step, seconds per pre-filled token) at ``rows`` rows."""
    from irtk.generation import SamplingParams
    from irtk.generation.hf import HFBackend, _Batch

    steps: list[tuple[int, int, float]] = []
    real_step = _Batch.step

    def timed(self: _Batch, lm, cache_kwarg):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = real_step(self, lm, cache_kwarg)
        steps.append((len(self.rows), self.feed.shape[1], time.perf_counter() - start))
        return out

    words = "the history of river deltas and the sediments they carry over long periods of time".split()
    conversations = [[{"role": "user", "content": " ".join(words[(i + j) % len(words)] for j in range(width * 3 // 4))
                       + f" (case {i})"}] for i in range(rows)]
    backend = HFBackend("smollm2-135m-instruct", batch_size=rows, prefix_cache=False)
    _Batch.step = timed
    try:
        backend.chat(conversations, SamplingParams(max_tokens=tokens, temperature=1.0, seed=0))
    finally:
        _Batch.step = real_step
    full = [t for r, fed, t in steps if r == rows and fed == 1]
    prefill = [(r * fed, t) for r, fed, t in steps if fed > 1]
    if not full:
        raise SystemExit(f"no full decode step at {rows} rows: rows ended at once; raise --tokens")
    return statistics.median(full), sum(t for _, t in prefill) / sum(n for n, _ in prefill)


def main() -> None:
    from irtk.device import bound_kernel_caches
    from irtk.generation.hf import auto_batch_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=700, help="prompt tokens per row (the 699 run's typical)")
    parser.add_argument("--tokens", type=int, default=24, help="tokens each row writes")
    parser.add_argument("--batches", default="16,32,48,64,96,128")
    parser.add_argument("--written", type=int, default=202_646, help="tokens the run writes")
    parser.add_argument("--prefilled", type=int, default=156_078, help="prompt tokens the run pre-fills")
    args = parser.parse_args()
    bound_kernel_caches()  # as the CLI does when it starts
    default = auto_batch_size("cpu")
    batches = sorted({int(b) for b in args.batches.split(",")} | {default})
    figures = {rows: measure(rows, args.width, args.tokens) for rows in batches}
    base = figures[default][0] / default
    print(f"decode steps at ~{args.width} cached positions, {args.tokens} tokens a row; "
          f"floor of a run writing {args.written:,} and pre-filling {args.prefilled:,} tokens")
    for rows, (step, per_token) in figures.items():
        row = step / rows
        floor = args.written * row + args.prefilled * per_token
        print(f"  batch {rows:4d}  step {1000 * step:7.1f} ms  {1000 * row:5.2f} ms a row "
              f"({base / row:4.2f}x batch {default}'s)  pre-fill {1000 * per_token:5.2f} ms a token  "
              f"floor {floor / 60:5.1f} min")


if __name__ == "__main__":
    main()
