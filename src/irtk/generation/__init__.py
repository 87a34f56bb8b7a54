"""One generation interface, several backends.

A backend takes a batch of chat conversations and explicit sampling parameters and returns, per
conversation, the text plus token counts (and per-token log-probs when asked). Backends:

- ``hf``     transformers ``generate`` with left padding and chat templates (CPU or GPU; default)
- ``vllm``   in-process ``vllm.LLM`` (GPU; tensor/data parallel)
- ``openai`` any OpenAI-compatible server (``vllm serve``, SGLang, ``transformers serve``, APIs)
- ``module:attr`` any class with the same constructor and ``chat`` method

Each imports its heavy library only when chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from irtk.errors import UsageError

Message = dict[str, str]
Conversation = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """Every sampling parameter, sent explicitly to every backend (and recorded in provenance)."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """One completion: its text, token counts and (optionally) the sampled tokens' log-probs."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # stop | length
    cached_tokens: int = 0  # prompt tokens served from a prefix cache, not pre-filled again
    logprobs: list[float] | None = None
    tokens: list[str] | None = field(default=None, repr=False)


class Backend(Protocol):
    name: str
    model: str

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        """Complete every conversation (one assistant turn each), in order.

        A conversation that ends with an assistant message is *continued* (a prefill): the model
        writes on from that message's text, and ``Generation.text`` holds the continuation only.
        """
        ...


def continues(conversation: Conversation) -> bool:
    """True when the conversation ends with an assistant message for the model to continue."""
    return bool(conversation) and conversation[-1].get("role") == "assistant"


BACKENDS = {
    "hf": "irtk.generation.hf:HFBackend",
    "vllm": "irtk.generation.vllm:VLLMBackend",
    "openai": "irtk.generation.openai:OpenAIBackend",
}


def load_attr(spec: str, what: str) -> Any:
    """Import ``module:attr`` (the escape hatch every irtk registry shares)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise UsageError(f"{what} {spec!r}: expected a registered name or module:attr")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"{what} {spec!r}: cannot import {module_name}: {e}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"{what} {spec!r}: {module_name} has no attribute {attr!r}") from None


def get_backend(name: str = "hf", model: str | None = None, **options: Any) -> Backend:
    """Build a backend by registry name or ``module:attr``.

    ``options`` go to the backend's constructor (``base_url``, ``batch_size``, ``device``,
    ``dtype``, ``max_concurrency``, ``tensor_parallel_size``, ...); a backend ignores what it
    does not use only when it says so in its signature.
    """
    from irtk.models import DEFAULT_LM

    spec = BACKENDS.get(name, name)
    if ":" not in spec:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)} or module:attr, got {name!r}")
    cls = load_attr(spec, "backend")
    return cls(model=model or DEFAULT_LM, **options)


def text_of(generations: Sequence[Generation]) -> list[str]:
    return [g.text for g in generations]
