"""Dialogues per minute of `irtk simulate` on the embedded SmolLM2: batched vs one at a time.

Both modes run in this process on the same loaded model, the same trajectories (the first N of
`irtk expand examples/seeds.jsonl --render template --no-build`) and greedy decoding, so they do
the same work: the model policy asks --max-turns questions, the template user answers, the LLM
summary agent writes the query. "batched" advances all N dialogues together (one backend call
per turn for every live dialogue); "one at a time" plays each dialogue alone. The order of the
two modes alternates over --repeats so drifting machine load does not favour either.

    python bench/simulate.py [--dialogues 16] [--max-turns 1] [--max-tokens 32] [--repeats 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trajectories(n: int) -> list[dict]:
    irtk = Path(sys.executable).with_name("irtk")
    out = subprocess.run([str(irtk), "expand", str(ROOT / "examples" / "seeds.jsonl"), "--render", "template",
                          "--no-build", "--format", "jsonl", "-q"], capture_output=True, check=True)
    import json

    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    # One trajectory per seed first, so the batch mixes requests of different lengths.
    by_seed: dict[str, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed_id"], []).append(r)
    deepest = max(len(v) for v in by_seed.values())
    mixed = [v[k] for k in range(deepest) for v in by_seed.values() if k < len(v)]
    return mixed[:n]


def play(rows: list[dict], parts, max_turns: int, batched: bool) -> tuple[float, int]:
    from irtk.dialogue.episode import Episode
    from irtk.dialogue.simulate import simulate_batch

    episodes = [Episode(dict(r)) for r in rows]
    start = time.perf_counter()
    if batched:
        simulate_batch(episodes, parts, max_turns)
    else:
        for e in episodes:
            simulate_batch([e], parts, max_turns)
    seconds = time.perf_counter() - start
    return seconds, sum(e.tokens_out for e in episodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from irtk.dialogue.simulate import SimulateConfig, _Parts

    rows = trajectories(args.dialogues)
    config = SimulateConfig(policy="model", user="template", summary="llm", max_turns=args.max_turns,
                            max_tokens=args.max_tokens, summary_max_tokens=args.max_tokens,
                            temperature=0.0, batch_size=args.dialogues)
    parts = _Parts(config)
    play(rows[:2], parts, 1, batched=True)  # warm-up: first-call allocations, embedder load
    timings = {"batched": [0.0, 0], "one at a time": [0.0, 0]}
    for rep in range(args.repeats):
        order = [True, False] if rep % 2 == 0 else [False, True]
        for batched in order:
            seconds, tokens = play(rows, parts, args.max_turns, batched)
            key = "batched" if batched else "one at a time"
            timings[key][0] += seconds
            timings[key][1] += tokens
    n = len(rows) * args.repeats
    print(f"{len(rows)} dialogues x {args.repeats} repeat(s), max {args.max_turns} turns, "
          f"{args.max_tokens} tokens per reply, SmolLM2-135M (hf backend, greedy)")
    rate = {}
    for key, (seconds, tokens) in timings.items():
        rate[key] = n / seconds * 60
        print(f"  {key:<14} {seconds:8.1f} s  {rate[key]:7.1f} dialogues/min  {tokens / seconds:7.1f} tokens/s "
              f"({tokens} tokens out)")
    print(f"  speed-up batched / one at a time: {rate['batched'] / rate['one at a time']:.2f}x")


if __name__ == "__main__":
    main()
