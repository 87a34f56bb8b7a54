"""Reward presets for the trainer's tests: cheap, embedder-free, and learnable by a tiny model."""

from __future__ import annotations

from typing import Any

from irtk.dialogue.rewards import RewardPreset

LOW_IDS = 1000  # token ids below this are "good": ~2% of the tiny model's vocabulary at first


def low_token_reward(prompts: Any, completions: Any, completion_ids: Any = None, **_: Any) -> list[float]:
    """Fraction of completion tokens with an id below LOW_IDS (a target a random model can learn)."""
    return [sum(t < LOW_IDS for t in ids) / max(len(ids), 1) for ids in completion_ids]


def low_ids(*, rewards: Any = None, allow_stop: bool = False, **_: Any) -> RewardPreset:
    return RewardPreset("low-ids", [low_token_reward], [1.0])
