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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from irtk.registry import Registry

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


BACKENDS = Registry("backend", "--backend", {
    "hf": "irtk.generation.hf:HFBackend",
    "vllm": "irtk.generation.vllm:VLLMBackend",
    "openai": "irtk.generation.openai:OpenAIBackend",
})


def auto_backend(name: str) -> str:
    """``name``, with ``auto`` resolved: ``vllm`` where it is installed, else ``hf``. On the same
    dialogues the ``hf`` loop ran at 0.71x vLLM-CPU's dialogues per minute (bench/simulate.py),
    so a machine that has vLLM gets it without asking."""
    if name != "auto":
        return name
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def get_backend(name: str = "auto", model: str | None = None, **options: Any) -> Backend:
    """Build a backend by registry name (``auto``: see ``auto_backend``) or ``module:attr``.

    ``options`` go to the backend's constructor (``base_url``, ``batch_size``, ``device``,
    ``dtype``, ``max_concurrency``, ``tensor_parallel_size``, ...); a backend ignores what it
    does not use only when it says so in its signature.
    """
    from irtk.models import DEFAULT_LM

    return BACKENDS.create(auto_backend(name), model=model or DEFAULT_LM, **options)


# What callers set through their own options (--model, --base-url, --dtype, --batch-size, --seed).
DEDICATED_OPTIONS = {"model": "--model", "base_url": "--base-url", "dtype": "--dtype",
                     "batch_size": "--batch-size", "seed": "--seed"}


def check_backend_options(name: str, options: Mapping[str, Any]) -> None:
    """A usage error for each key of ``options`` (``--backend-arg``) that backend ``name``'s
    constructor does not take by name, or that a dedicated option sets. The constructors end in
    ``**_`` (callers pass the common options to any backend), which would swallow a misspelt
    ``enforce_eager`` without a word."""
    import inspect

    from irtk.errors import UsageError

    name = auto_backend(name)
    for key in options:
        if key in DEDICATED_OPTIONS:
            raise UsageError(f"--backend-arg {key}: use {DEDICATED_OPTIONS[key]}")
    params = {p.name: p for p in inspect.signature(BACKENDS.load(name)).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in DEDICATED_OPTIONS}
    unknown = [k for k in options if k not in params]
    if unknown:
        raise UsageError(f"--backend-arg {', '.join(unknown)}: not a parameter of --backend {name} "
                         f"({', '.join(params)})")
    for key, value in options.items():
        # A switch given a word ("maybe", "off") would be a true string: on, without a word.
        if isinstance(params[key].default, bool) and not isinstance(value, bool):
            raise UsageError(f"--backend-arg {key}: expects true or false, got {value!r}")


def degenerate(text: str, *, min_words: int = 16, max_distinct: float = 0.25) -> bool:
    """A loop rather than an answer: at least ``min_words`` words, fewer than ``max_distinct`` of
    them distinct ("A: A: A: ...", one phrase repeated to the token limit). Prose of that length
    uses far more distinct words (about half or more)."""
    words = text.lower().split()
    return len(words) >= min_words and len(set(words)) < max_distinct * len(words)


def chat_once(backend: Any, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
    """``backend.chat`` for conversations that no later prompt continues (the simulated user's
    answers, summaries). Where the backend streams (hf's ``open_stream``) they are submitted as
    last turns, so their key/values are not kept in its prefix cache: there they would only
    hold memory until evicted, beside the dialogues waiting between turns (in a long
    ``simulate`` run the store filled its whole budget with summaries)."""
    open_stream = getattr(backend, "open_stream", None)
    stream = open_stream(params) if open_stream is not None else None
    if stream is None:
        return backend.chat(list(conversations), params)
    for k, conversation in enumerate(conversations):
        stream.submit(k, conversation, last=True)
    out: list[Any] = [None] * len(conversations)
    for finished in stream:
        for k, generation in finished:
            out[k] = generation
    return out


def chat_or_template(backend: Any, conversations: Sequence, params: SamplingParams,
                     fallback: Callable[[int], str], *, once: bool = False) -> tuple[list[tuple[str, Generation]], int]:
    """One batched chat call; the stripped text of each completion, or ``fallback(k)`` where
    completion k is empty or degenerate (``usable_text``). Returns (text, generation) pairs and how
    many fell back. Graph rendering, the simulated LLM user and the summary agent all use it
    (``once``: no later prompt continues these conversations, ``chat_once``)."""
    pairs, empty = [], 0
    generations = chat_once(backend, conversations, params) if once else backend.chat(list(conversations), params)
    for k, g in enumerate(generations):
        text = usable_text(g)
        if text is None:
            empty += 1
            text = fallback(k)
        pairs.append((text, g))
    return pairs, empty


def usable_text(generation: Generation) -> str | None:
    """A completion's stripped text, or None where it is empty or degenerate (a small model
    sometimes answers with nothing at all, or with one short phrase repeated to the token
    limit): its caller falls back to a template."""
    text = (generation.text or "").strip()
    return None if not text or degenerate(text) else text
