"""Fixtures of the entropy tests: prompt/completion rows with advantages of both signs (the
tiny ``peaked_llama`` that scores them is in tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

COLOURS = ["blue", "grey", "dark", "red"]
ADVANTAGES = [1.0, -1.0, 0.5, -0.7, 1.3, -1.2]


def completion_rows(n: int = 6) -> list[dict]:
    """Prompt/completion rows with advantages of both signs."""
    return [{"id": f"r{i}", "prompt": f"Question {i}: what colour is the sky at {i} o'clock?",
             "completion": f"It is {COLOURS[i % 4]} and the clouds are {i} miles away.",
             "advantage": ADVANTAGES[i % len(ADVANTAGES)]} for i in range(n)]


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in completion_rows()), encoding="utf-8")
    return path
