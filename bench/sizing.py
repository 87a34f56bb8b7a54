"""What `make -C examples PROFILE=paper` costs, on paper: tokens, GPU-hours and GPU memory per
stage, from token counts measured here and stated assumptions about the model and the GPU.
Nothing here touches a GPU; every input is printed with where it comes from.

Measured here, on the example data, with the tokenizer of the embedded SmolLM2 and irtk's own
prompt builders (the same code the stages run):
- this script: the paper profile's seed split (25 % of the seeds held out, 4 trajectories each),
  Stage I's turn samples (`train-offline`'s samples, counted as it counts prompts: chat template
  plus generation prompt) and their prompt / completion tokens, how much a prompt grows per
  question and answer (Stage II's rollout prompts), the summary agent's, the research writer's and
  graph building's prompts;
- `bench/simulate.py --dialogues 8 --max-turns 9 --modes cached` (simulate's defaults: model
  policy, template user, LLM summary): prompt tokens, the part of them pre-filled (not served from
  the prefix cache) and completion tokens of its 8 dialogues. Pass the figures of your own run
  with --sim-*; the defaults are the run quoted in the README.

Assumed (flags; the defaults and their sources are printed): Qwen2.5-7B-Instruct's size and
attention shape, the GPU's peak, the utilisation of prefill and training, vLLM's decode rate,
transformers' generate against vLLM, GRPO completion length, GPUs per training run, engine start.

    python bench/sizing.py [--sim-prompt N --sim-prefilled N --sim-completion N] [--grpo-completion 128] ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "examples" / "seeds.jsonl"
CORPUS = ROOT / "examples" / "corpus.jsonl"
REQUESTS = ROOT / "examples" / "research" / "requests.jsonl"

# The paper profile (examples/Makefile, examples/configs/intentrl-paper.toml, the top Makefile).
PROFILE = {
    "epochs": 4, "group": 8, "per_device_batch": 8, "grad_accum": 8, "max_prompt": 4096, "max_completion": 1024,
    "turns": 9, "turn_tokens": 96, "summary_tokens": 160, "rollout_turns": 9, "rollout_tokens": 64,
    "rollout_batch": 16, "holdout": 0.25, "per_seed": 4, "compare_runs": 3, "compare_steps": 100,
    "research_rows": 4, "research_repeats": 3, "writer_tokens": 384, "evidence": 12,
    "simulate_rows_summary_only": 3, "simulate_rows_model": 4, "simulate_rows_trained": 3,
}


# What each measured figure is (printed next to it).
MEASURED = {
    "seeds": "example seeds", "seeds_with_graph": "of them shipping a C-DAG (the rest: built by the LLM)",
    "trajectories": "trajectories of the shipped graphs (irtk expand --no-build)",
    "train_trajectories": "training trajectories after the seed split",
    "heldout_dialogues": "held-out dialogues (4 per held-out seed)", "heldout_seeds": "held-out seeds",
    "train_path_turns": "mean expert turns per training trajectory",
    "stage1_samples": "Stage I turn samples (train-offline's expert_samples)",
    "stage1_prompt": "mean prompt tokens of a Stage I sample", "stage1_prompt_max": "longest (cap: 4096)",
    "expert_completion": "mean tokens of an expert question (the SFT target)",
    "first_prompt": "mean prompt tokens of a dialogue's first turn",
    "exchange": "prompt tokens added per question and answer",
    "summary_prompt": "mean prompt tokens of the summary agent (held-out expert dialogues)",
    "writer_prompt": "mean prompt tokens of the research writer (12 evidence snippets)",
    "requests": "research requests", "intent_prompt": "mean prompt tokens of graph building's intent calls",
    "graph_prompt": "mean prompt tokens of its base / expansion calls (shipped seeds)",
    "intent_tokens": "token cap of an intent call",
}


@dataclass
class Stage:
    name: str
    what: str
    prefill: float = 0.0  # prompt tokens computed (not served from a prefix cache)
    decode: float = 0.0  # tokens generated
    trained: float = 0.0  # tokens through forward + backward
    forward: float = 0.0  # tokens through a forward pass only (scoring)
    gpu_hours: float = 0.0
    gpus: int = 1
    memory: str = ""


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, check=True, text=True).stdout


def measure(args: argparse.Namespace) -> dict:
    """Token counts on the example data (seconds; no model is loaded, only the tokenizer)."""
    from transformers import AutoTokenizer

    from irtk.dialogue import prompts as dialogue_prompts
    from irtk.dialogue.episode import Episode
    from irtk.graphs import prompts as graph_prompts
    from irtk.graphs.build import INTENT_MAX_TOKENS, BuildSettings
    from irtk.io import read_rows
    from irtk.models import resolve
    from irtk.research import prompts as research_prompts
    from irtk.research.writers import EVIDENCE_CHARS
    from irtk.training.samples import expert_samples, expert_turns
    from irtk.training.stages import _token_counter

    tok = AutoTokenizer.from_pretrained(resolve("smollm2-135m-instruct"))
    count = _token_counter(tok)  # what train-offline counts: chat template + generation prompt

    def text_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    irtk = Path(sys.executable).with_name("irtk")
    with tempfile.TemporaryDirectory() as tmp:
        traj, train, held = (Path(tmp) / n for n in ("traj.parquet", "train.parquet", "held.parquet"))
        run([str(irtk), "expand", str(SEEDS), "--no-build", "-q", "-o", str(traj)])
        # The profile's own split command, so the counts are the ones make would train on.
        run([sys.executable, "-m", "irtk.training.table", "split", str(traj), "--holdout", str(PROFILE["holdout"]),
             "--seed", "0", "--per-seed", str(PROFILE["per_seed"]), "--train", str(train), "--heldout", str(held)])
        rows, train_rows, held_rows = read_rows(traj), read_rows(train), read_rows(held)
    seeds = [json.loads(line) for line in SEEDS.read_text().splitlines() if line.strip()]

    samples = expert_samples(train_rows)
    prompt = [count(s["prompt"]) for s in samples]
    completion = [text_tokens(s["completion"][0]["content"]) + 1 for s in samples]  # + end of turn
    # Growth per exchange: (last turn's prompt - first's) / exchanges, per trajectory.
    by_traj: dict[str, list[tuple[int, int]]] = {}
    for s, p in zip(samples, prompt, strict=True):
        by_traj.setdefault(s["id"], []).append((s["prefix_turns"], p))
    growth = [(max(v)[1] - min(v)[1]) / (max(v)[0] - min(v)[0]) for v in by_traj.values() if len(v) > 1]
    first = [min(v)[1] for v in by_traj.values()]

    def summary_prompt(row: dict) -> int:
        ep = Episode(dict(row), turns=expert_turns(row)[:PROFILE["turns"]])
        return count([{"role": "system", "content": dialogue_prompts.SUMMARY_SYSTEM},
                      {"role": "user", "content": dialogue_prompts.SUMMARY_REQUEST.format(
                          query=ep.query, exchanges=dialogue_prompts.format_exchanges(ep.exchanges()))}])

    docs = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    requests = [json.loads(line) for line in REQUESTS.read_text().splitlines() if line.strip()]
    evidence = [(d["doc_id"], d["text"][:EVIDENCE_CHARS]) for d in docs[:PROFILE["evidence"]]]
    writer = [count([{"role": "system", "content": research_prompts.WRITER_SYSTEM},
                     {"role": "user", "content": research_prompts.writer_request(r["query"], [], evidence)}])
              for r in requests]

    limits = BuildSettings().limits
    graphless = [s for s in seeds if not s.get("graph")]
    shipped = [s for s in seeds if s.get("graph")]
    build_prompts = [count(graph_prompts.extract(s["query"])) for s in graphless]
    build_prompts += [count(graph_prompts.deep(s["query"], s.get("rubric") or [])) for s in graphless]
    # The base and expansion prompts need the graph's intents: measured on the shipped seeds.
    graph_prompt = statistics.mean(
        [count(graph_prompts.base_graph(s["simple_query"], s["intents"]["shallow"], limits)) for s in shipped]
        + [count(graph_prompts.expand_graph(s["simple_query"], s["graph"], s["intents"]["deep"], limits))
           for s in shipped])
    return {
        "seeds": len(seeds), "seeds_with_graph": len(shipped), "trajectories": len(rows),
        "train_trajectories": len(train_rows), "heldout_dialogues": len(held_rows),
        "heldout_seeds": len({r["seed_id"] for r in held_rows}),
        "train_path_turns": statistics.mean(len(r["path"]) for r in train_rows),
        "stage1_samples": len(samples), "stage1_prompt": statistics.mean(prompt), "stage1_prompt_max": max(prompt),
        "expert_completion": statistics.mean(completion), "first_prompt": statistics.mean(first),
        "exchange": statistics.mean(growth), "summary_prompt": statistics.mean(summary_prompt(r) for r in held_rows),
        "writer_prompt": statistics.mean(writer), "requests": len(requests),
        "intent_prompt": statistics.mean(build_prompts), "graph_prompt": graph_prompt,
        "intent_tokens": INTENT_MAX_TOKENS,
    }


def size(m: dict, a: argparse.Namespace, grpo_completion: float) -> list[Stage]:
    """Per-stage tokens, GPU-hours and memory from the measurements ``m`` and assumptions ``a``."""
    p = PROFILE
    n = a.params
    prefill_rate = a.gpu_tflops * 1e12 * a.prefill_mfu / (2 * n)  # tokens/s/GPU

    def decode_rate(concurrent: float) -> float:
        return min(a.decode_peak, concurrent / a.decode_step)

    def gen_hours(prefill: float, decode: float, concurrent: float, slowdown: float = 1.0) -> float:
        return slowdown * (prefill / prefill_rate + decode / decode_rate(concurrent)) / 3600

    # FLOPs per trained token: 6N forward + backward, 2N more for the forward that gradient
    # checkpointing repeats (irtk turns it on on GPUs); GRPO on vLLM adds TRL's 2N pass for the
    # old-policy log-probs of its importance-sampling correction (on by default).
    def train_hours(tokens: float, grpo: bool = True) -> float:
        return (8 + 2 * grpo) * n * tokens / (a.gpu_tflops * 1e12 * a.train_mfu) / 3600

    def starts(processes: int, gpus: int = 1) -> float:
        return processes * gpus * a.engine_start / 3600

    weights = 2 * n / 1e9  # GB, bf16
    kv = a.kv_bytes / 1e9  # GB per token

    def vllm_memory(concurrent: float, length: float) -> str:
        need = weights + concurrent * length * kv
        return f"1 x {a.gpu_memory:.0f} GB (needs {need:.0f} GB: weights {weights:.1f} + KV {concurrent * length * kv:.1f})"

    # The 3 seeds without a graph get one from the LLM (INTENTRL_EXPAND='--backend vllm'): assumed
    # to yield as many trajectories as a shipped seed, so trajectory counts scale by seeds.
    scale = m["seeds"] / m["seeds_with_graph"]
    held = p["per_seed"] * round(p["holdout"] * m["seeds"])
    train_traj = m["train_trajectories"] * scale
    s1 = m["stage1_samples"] * scale
    sim_prompt, sim_prefilled, sim_completion = (x / a.sim_dialogues for x in
                                                 (a.sim_prompt, a.sim_prefilled, a.sim_completion))
    # Each model dialogue adds one summary call at its token cap: an upper bound, since the bench's
    # figures already hold the summary calls its dialogues made (none when every question was
    # judged irrelevant: nothing to merge).
    dialogue_prefill = sim_prefilled + m["summary_prompt"]
    dialogue_decode = sim_completion + p["summary_tokens"]
    dialogue_length = m["first_prompt"] + p["turns"] * m["exchange"] + p["turn_tokens"]
    out = []

    # 1. expand (graph building) + the baseline rows before training.
    graphless = m["seeds"] - m["seeds_with_graph"]
    b_prefill = graphless * 2 * (m["intent_prompt"] + m["graph_prompt"])
    b_decode = graphless * 2 * (m["intent_tokens"] + a.graph_completion)
    s_prefill = held * (p["simulate_rows_summary_only"] * m["summary_prompt"] + dialogue_prefill)
    s_decode = held * (p["simulate_rows_summary_only"] * p["summary_tokens"] + dialogue_decode)
    out.append(Stage(
        "expand + simulate (baselines)",
        f"{graphless} graphs built (4 calls each); oracle, random, none (LLM summary only) and the untrained "
        f"model (9 turns + summary) on {held} held-out dialogues",
        prefill=b_prefill + s_prefill, decode=b_decode + s_decode,
        gpu_hours=gen_hours(b_prefill, b_decode, graphless) + gen_hours(s_prefill, s_decode, held) + starts(5),
        memory=vllm_memory(held, dialogue_length)))

    # 2. Stage I: GRPO on the expert turns; vLLM (colocate) generates the groups. The group's 8
    # completions share one prompt: pre-filled once (vLLM's prefix cache), trained on 8 times.
    gen_prefill, gen_decode = s1 * p["epochs"] * m["stage1_prompt"], s1 * p["epochs"] * p["group"] * grpo_completion
    trained = s1 * p["epochs"] * p["group"] * (m["stage1_prompt"] + grpo_completion)
    per_gpu_batch = p["per_device_batch"] * p["grad_accum"]
    states = 16 * n / a.train_gpus / 1e9
    train_memory = (f"{a.train_gpus} x {a.gpu_memory:.0f} GB (per GPU: {states:.1f} ZeRO-3 states + vLLM "
                    f"{weights:.1f} weights + {per_gpu_batch * (m['stage1_prompt'] + grpo_completion) * kv:.1f} KV "
                    "+ activations)")
    out.append(Stage("Stage I (GRPO)", f"{s1:,.0f} turn samples x {p['epochs']} epochs x group {p['group']}",
                     prefill=gen_prefill, decode=gen_decode, trained=trained,
                     gpu_hours=gen_hours(gen_prefill, gen_decode, per_gpu_batch) + train_hours(trained)
                     + starts(1, a.train_gpus),
                     gpus=a.train_gpus, memory=train_memory))

    # 2b. The SFT ablation: the expert question as the target, no generation.
    sft = s1 * p["epochs"] * (m["stage1_prompt"] + m["expert_completion"])
    out.append(Stage("SFT ablation", f"{s1:,.0f} expert turns x {p['epochs']} epochs", trained=sft,
                     gpu_hours=train_hours(sft, grpo=False) + starts(1, a.train_gpus), gpus=a.train_gpus,
                     memory=f"{a.train_gpus} x {a.gpu_memory:.0f} GB (per GPU: {states:.1f} ZeRO-3 states + activations)"))

    # 3. Stage II rollouts: transformers' generate with irtk's turn cache (README: rollouts do not
    # go through vLLM); an expert prefix of k ~ U[0, turns - 1], then 9 questions of <= 64 tokens.
    prefix = (m["train_path_turns"] - 1) / 2
    per_turn = min(p["rollout_tokens"], sim_completion / (p["turns"] + 1))
    r_prefill = train_traj * (m["first_prompt"] + (prefix + p["rollout_turns"]) * m["exchange"])
    r_decode = train_traj * p["rollout_turns"] * per_turn
    out.append(Stage("Stage II rollouts", f"{train_traj:,.0f} rollouts x {p['rollout_turns']} turns (transformers)",
                     prefill=r_prefill, decode=r_decode,
                     gpu_hours=gen_hours(r_prefill, r_decode, p["rollout_batch"], a.hf_slowdown) + starts(1),
                     memory=f"1 x {a.gpu_memory:.0f} GB (weights {weights:.1f} + turn cache <= 4 GiB)"))

    # 4. Stage II training: Stage I's samples plus one per rollout turn, GRPO as in Stage I.
    rollout_samples = train_traj * p["rollout_turns"]
    rollout_prompt = m["first_prompt"] + (prefix + (p["rollout_turns"] - 1) / 2) * m["exchange"]
    prompts = s1 * m["stage1_prompt"] + rollout_samples * rollout_prompt
    samples2 = s1 + rollout_samples
    gen_prefill2, gen_decode2 = p["epochs"] * prompts, samples2 * p["epochs"] * p["group"] * grpo_completion
    trained2 = p["epochs"] * p["group"] * (prompts + samples2 * grpo_completion)
    out.append(Stage("Stage II training (GRPO)",
                     f"{s1:,.0f} expert + {rollout_samples:,.0f} rollout samples x {p['epochs']} epochs x group "
                     f"{p['group']}", prefill=gen_prefill2, decode=gen_decode2, trained=trained2,
                     gpu_hours=gen_hours(gen_prefill2, gen_decode2, per_gpu_batch) + train_hours(trained2)
                     + starts(1, a.train_gpus), gpus=a.train_gpus, memory=train_memory))

    # 5. Evaluation: SFT, Stage I, Stage I + II simulated on the held-out dialogues, then the
    # entropy audit (a forward pass over the Stage I + II dialogues' turns).
    e_prefill = held * p["simulate_rows_trained"] * dialogue_prefill
    e_decode = held * p["simulate_rows_trained"] * dialogue_decode
    audit = held * (sim_prompt + sim_completion)
    out.append(Stage("evaluation", f"3 trained clarifiers x {held} held-out dialogues; entropy audit of one",
                     prefill=e_prefill, decode=e_decode, forward=audit,
                     gpu_hours=gen_hours(e_prefill, e_decode, held) + audit / prefill_rate / 3600 + starts(4),
                     memory=vllm_memory(held, dialogue_length)))

    # 6. The entropy comparison: none / Clip_B / Clip_V, 100 GRPO steps each on Stage I's samples.
    prompts_per_step = per_gpu_batch * a.train_gpus / p["group"]
    c_prompts = p["compare_runs"] * p["compare_steps"] * prompts_per_step
    c_prefill, c_decode = c_prompts * m["stage1_prompt"], c_prompts * p["group"] * grpo_completion
    c_trained = c_prompts * p["group"] * (m["stage1_prompt"] + grpo_completion)
    out.append(Stage("entropy comparison", f"{p['compare_runs']} runs x {p['compare_steps']} steps x "
                     f"{prompts_per_step:.0f} prompts x group {p['group']}",
                     prefill=c_prefill, decode=c_decode, trained=c_trained,
                     gpu_hours=gen_hours(c_prefill, c_decode, per_gpu_batch) + train_hours(c_trained)
                     + starts(p["compare_runs"], a.train_gpus), gpus=a.train_gpus, memory=train_memory))

    # 7. Research: every request under 4 rows x 3 repeats (clarification where the row has one, then
    # the LLM writer), and the 4-request LLM-writer check (3 turns).
    q = m["requests"] * p["research_repeats"]
    dialogues = 2 * q + 4 * 3 / p["turns"]  # simulate and trained rows; the check: 4 requests, 3 turns
    writes = p["research_rows"] * q + 4
    r_prefill = dialogues * dialogue_prefill + writes * m["writer_prompt"]
    r_decode = dialogues * dialogue_decode + writes * p["writer_tokens"] + q * p["turn_tokens"]
    out.append(Stage("research", f"{m['requests']} requests x {p['research_rows']} rows x "
                     f"{p['research_repeats']} repeats, LLM writer",
                     prefill=r_prefill, decode=r_decode,
                     gpu_hours=gen_hours(r_prefill, r_decode, m["requests"]) + starts(5),
                     memory=vllm_memory(m["requests"], m["writer_prompt"] + p["writer_tokens"])))
    return out


def fmt(x: float) -> str:
    if x == 0:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def table(stages: list[Stage]) -> str:
    lines = ["| stage | what runs | pre-filled | generated | trained (fwd+bwd) | GPU-h | GPUs x memory |",
             "|---|---|---:|---:|---:|---:|---|"]
    for s in stages:
        trained = fmt(s.trained) + (f" (+{fmt(s.forward)} fwd)" if s.forward else "")
        lines.append(f"| {s.name} | {s.what} | {fmt(s.prefill)} | {fmt(s.decode)} | {trained} | "
                     f"{s.gpu_hours:.2f} | {s.memory} |")
    total = sum(s.gpu_hours for s in stages)
    lines.append(f"| **total** | | {fmt(sum(s.prefill for s in stages))} | {fmt(sum(s.decode for s in stages))} | "
                 f"{fmt(sum(s.trained for s in stages))} | **{total:.1f}** | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_argument_group("measured by bench/simulate.py (8 dialogues, 9 turns, LLM summary, SmolLM2)")
    g.add_argument("--sim-dialogues", type=int, default=8)
    g.add_argument("--sim-prompt", type=float, default=SIM_DEFAULTS["prompt"], help="prompt tokens, all dialogues")
    g.add_argument("--sim-prefilled", type=float, default=SIM_DEFAULTS["prefilled"],
                   help="of them pre-filled (not from the prefix cache)")
    g.add_argument("--sim-completion", type=float, default=SIM_DEFAULTS["completion"], help="completion tokens")
    g = ap.add_argument_group("assumed")
    g.add_argument("--params", type=float, default=7.61e9, help="Qwen2.5-7B-Instruct parameters (model card)")
    g.add_argument("--kv-bytes", type=float, default=2 * 28 * 4 * 128 * 2,
                   help="KV cache bytes per token: K and V x 28 layers x 4 KV heads x 128 dims x bf16 (Qwen2.5-7B config)")
    g.add_argument("--gpu-tflops", type=float, default=989.0, help="dense BF16 peak, H100 SXM (NVIDIA data sheet)")
    g.add_argument("--gpu-memory", type=float, default=80.0, help="GB per GPU (H100 80 GB; an H200 has 141)")
    g.add_argument("--prefill-mfu", type=float, default=0.4, help="utilisation of prefill and scoring passes")
    g.add_argument("--train-mfu", type=float, default=0.3, help="utilisation of training, counting the hardware FLOPs (recompute and the old-log-prob pass included)")
    g.add_argument("--decode-peak", type=float, default=8088.0,
                   help="vLLM output tokens/s per GPU with 256 sequences in flight (Lambda vllm-benchmark: "
                        "Llama 3.1 8B, vLLM 0.6.0, 10 scheduler steps)")
    g.add_argument("--decode-step", type=float, default=0.0075,
                   help="seconds per decode step at low concurrency (Lambda vllm-benchmark: Mistral-7B, 1xH100, "
                        "10 prompts, mean TPOT 7.48 ms); decode rate = min(peak, sequences / step)")
    g.add_argument("--hf-slowdown", type=float, default=4.0,
                   help="transformers generate (Stage II rollouts) against vLLM, x slower (a guess)")
    g.add_argument("--grpo-completion", type=float, default=128.0,
                   help="mean tokens of a GRPO completion (a guess; the cap is 1024)")
    g.add_argument("--graph-completion", type=float, default=1024.0, help="tokens of a graph reply (its cap)")
    g.add_argument("--train-gpus", type=int, default=8, help="GPUs per training run (the paper: up to 8)")
    g.add_argument("--engine-start", type=float, default=120.0,
                   help="seconds per GPU to load the model and start vLLM, per process")
    a = ap.parse_args()

    m = measure(a)
    print("Measured here (example data, SmolLM2's tokenizer, irtk's prompt builders):")
    for key, value in m.items():
        print(f"  {value:>9,.1f}  {MEASURED[key]}" if isinstance(value, float) else f"  {value:>9,}  {MEASURED[key]}")
    print(f"  per simulated dialogue (bench/simulate.py, {a.sim_dialogues} dialogues x 9 turns, LLM summary): "
          f"{a.sim_prompt / a.sim_dialogues:,.0f} prompt tokens, {a.sim_prefilled / a.sim_dialogues:,.0f} of them "
          f"pre-filled, {a.sim_completion / a.sim_dialogues:,.0f} written")
    print("Assumed:")
    for action in ap._action_groups[-1]._group_actions:
        print(f"  --{action.dest.replace('_', '-'):<18} {getattr(a, action.dest):,g}  {action.help}")
    print()
    print(table(size(m, a, a.grpo_completion)))
    print()
    bound = size(m, a, PROFILE["max_completion"])
    print(f"Bound: every GRPO completion at its 1024-token cap -> {sum(s.gpu_hours for s in bound):.1f} GPU-h in all "
          f"(Stage I {bound[1].gpu_hours:.1f}, Stage II {bound[4].gpu_hours:.1f}, entropy comparison "
          f"{bound[6].gpu_hours:.1f}).")


# bench/simulate.py --dialogues 8 --max-turns 9 --modes cached, as quoted in the README ("Sizing").
SIM_DEFAULTS = {"prompt": 28487.0, "prefilled": 1599.0, "completion": 2118.0}


if __name__ == "__main__":
    main()
