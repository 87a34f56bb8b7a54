"""Does a reward preset prefer the questions the simulated user answers with something new?

GRPO learns from the ranking inside each group of completions: it can only teach what the
reward ranks first. This samples ``--group`` completions of a policy for expert turn samples
(Stage I's prompts), judges each with the simulated user's gate (path gate, the user's C-DAG),
and counts, per reward preset, the groups whose top-ranked completion the user answers about an
intent not stated earlier in the dialogue (what intent recall counts), against the groups that
hold such a completion at all. A preset that ranks it first in most of those groups can teach
it; one that ranks it first at chance cannot.

    python bench/reward_ranking.py train.parquet --model smollm2-135m-instruct --split-seed 1
    python bench/reward_ranking.py train.parquet --model runs/sft --split-seed 1

``--split-seed S`` probes the development seeds of a by-seed split of the file (the held-out
side of ``python -m irtk.training.table split --seed S``), never the seeds a table reports.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from irtk.dialogue.policies import clean_question  # noqa: E402
from irtk.dialogue.prompts import QUESTION_END  # noqa: E402
from irtk.dialogue.rewards import REWARD_PRESETS, IntentRewards, answers_new  # noqa: E402
from irtk.generation import SamplingParams, get_backend  # noqa: E402
from irtk.io import read_rows  # noqa: E402
from irtk.training.samples import expert_samples, split_by_seed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trajectories")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--split-seed", type=int, default=None,
                    help="probe the held-out side of a 25 %% by-seed split with this seed")
    ap.add_argument("--samples", type=int, default=24, help="expert turn samples (prompts)")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rows = read_rows(args.trajectories)
    if args.split_seed is not None:
        rows = split_by_seed(rows, 0.25, args.split_seed)[1]
    by_id = {r["id"]: r for r in rows}
    samples = expert_samples(rows)
    random.Random(args.seed).shuffle(samples)
    samples = samples[:args.samples]
    g = args.group
    backend = get_backend("hf", args.model, seed=args.seed)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, stop=QUESTION_END,
                            seed=args.seed)
    generations = backend.chat([s["prompt"] for s in samples for _ in range(g)], params)
    texts = [clean_question(x.text) for x in generations]

    expanded = [s for s in samples for _ in range(g)]
    columns = {name: [s[name] for s in expanded] for name in
               ("target_intents", "intents", "history", "simple_query", "matched_intents")}
    columns["graph"] = [by_id[s["id"]]["graph"] for s in expanded]
    columns["path"] = [by_id[s["id"]]["path"] for s in expanded]
    rewards = IntentRewards()
    answered = IntentRewards(content="answered", gate=rewards.gate)  # one embedding cache
    verdicts = [s.verdict for s in rewards.score(None, texts, **columns)]
    new = [answers_new(v, s["matched_intents"]) for v, s in zip(verdicts, expanded, strict=True)]
    print(f"model {args.model}: {len(samples)} prompts x {g} completions; verdicts "
          f"{dict(Counter(v.verdict for v in verdicts))}; answered with a new intent {sum(new)}")
    groups = range(len(samples))
    having = sum(any(new[i * g:(i + 1) * g]) for i in groups)
    # Stage II's penalties apply to rollout samples only: score these as rollout turns.
    rollout = {"rollout": [True] * len(texts)}
    for label, name, r, extra in (("stage1", "stage1", rewards, {}),
                                  ("stage1 --content answered", "stage1", answered, {}),
                                  ("stage2 (rollout turns)", "stage2", rewards, rollout)):
        total = REWARD_PRESETS.create(name, rewards=r).total(None, texts, **columns, **extra)
        first = ties = 0
        for i in groups:
            group = total[i * g:(i + 1) * g]
            if max(group) == min(group):
                ties += 1
                continue
            first += new[i * g + max(range(g), key=group.__getitem__)]
        print(f"  {label}: top-ranked completion answered with a new intent in {first} of the {having} "
              f"groups that have one ({len(samples)} groups, {ties} all tied)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
