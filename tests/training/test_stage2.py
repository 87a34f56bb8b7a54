"""Stage II's mixed data: rollouts from expert prefixes through simulate's loop, penalties only
on rollout samples."""

from __future__ import annotations

import collections

import pytest

pytestmark = pytest.mark.slow  # the real embedder scores the rollouts


def test_rollouts_from_prefixes_and_penalties_only_on_rollouts(tiny_llama, trajectory_rows):
    from irtk.dialogue.rewards import REWARD_PRESETS, IntentRewards
    from irtk.generation.hf import load_causal_lm
    from irtk.training import samples as S
    from irtk.training.config import TrainSettings
    from irtk.training.live import LiveHFBackend, play_rollouts, prefix_lengths
    from irtk.training.stages import mixed_counts

    rows = trajectory_rows[:6]
    settings = TrainSettings(stage="online", rollout_turns=2, prefix_min=1, prefix_max=3, rollout_max_tokens=8)
    lm, tok, _ = load_causal_lm(tiny_llama, "cpu", "float32")
    dialogues, rollout = play_rollouts(rows, settings, model="live", backend=LiveHFBackend(lm, tok),
                                       round_no=1, seed=0)
    lengths = prefix_lengths(rows, settings, 1, 0)
    assert lengths == prefix_lengths(rows, settings, 1, 0) and all(1 <= k <= 3 for k in lengths)
    assert [d["prefix_turns"] for d in dialogues] and len(dialogues) == len(rows)
    by_id = {d["id"]: d for d in dialogues}
    for row, k in zip(rows, lengths, strict=True):
        d = by_id[row["id"]]
        assert [t["question"] for t in d["turns"][:k]] == [t["question"] for t in S.expert_turns(row)[:k]]
        assert len(d["turns"]) <= k + 2
    expert = S.expert_samples(rows)
    counts = mixed_counts(expert, rollout)
    assert counts["rollout_samples"] == sum(len(d["turns"]) - d["prefix_turns"] for d in dialogues)
    assert sum(counts["prefix_turns"].values()) == counts["rollout_samples"]
    assert all(s["rollout"] for s in rollout) and not any(s["rollout"] for s in expert)

    # A question repeating the dialogue's first question: penalised on rollout samples only.
    preset = REWARD_PRESETS.create("stage2", rewards=IntentRewards())
    mixed = [s for s in expert if s["history"]][:4] + [s for s in rollout if s["history"]][:4]
    columns = collections.defaultdict(list)
    for s in mixed:
        for key in ("target_intents", "intents", "history", "simple_query", "rollout", "matched_intents"):
            columns[key].append(s[key])
    completions = [s["history"][0] for s in mixed]
    penalty = preset.funcs[[f.__name__ for f in preset.funcs].index("penalty_reward")]
    values = penalty([s["prompt"] for s in mixed], completions, **columns)
    assert all(v == 0 for v, s in zip(values, mixed, strict=True) if not s["rollout"])
    assert all(v < 0 for v, s in zip(values, mixed, strict=True) if s["rollout"])
