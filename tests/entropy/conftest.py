"""Fixtures of the entropy tests: a tiny random Llama whose next-token distributions are peaked
(large initial weights), so entropies and discriminators spread as in a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def peaked_llama(tmp_path_factory, smollm2_path) -> str:
    """2 layers, 64 wide, SmolLM2's tokenizer and chat template, initializer_range 0.5, tied
    embeddings (as SmolLM2), a 256-token context."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("peaked-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True, initializer_range=0.5,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


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
