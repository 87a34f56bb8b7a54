"""transformers backend: batched, left-padded ``generate`` with chat templates, CPU or GPU.

Shared prompt prefixes are computed once. A conversation's first message (usually the system
prompt) is rendered on its own; when every prompt in a micro-batch starts with the same such
prefix, its key/value cache is computed once, kept in a small LRU, and repeated across the batch,
so ``generate`` only pre-fills each prompt's own tail. This is vLLM's automatic prefix caching,
specialised to the one prefix chat workloads share; ``generate`` has no such option. Rows are
padded between the prefix and their tail; positions come from the attention mask, so a row's
tokens sit at the same positions as they would alone.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from irtk.device import pick_device, pick_dtype
from irtk.errors import ModelError
from irtk.generation import Conversation, Generation, SamplingParams, continues


def load_causal_lm(model: str, device: str | None = None, dtype: str | None = None) -> tuple[Any, Any, str]:
    """Resolve a model name and load (model, tokenizer, device) ready for left-padded batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from irtk.models import resolve

    path = resolve(model)
    device = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(device, dtype))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {model!r} from {path}: {e}") from None
    tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.to(device).eval()
    return lm, tokenizer, device


MIN_PREFIX_TOKENS = 8  # below this a separate prefill call costs more than it saves
PREFIX_CACHE_SIZE = 8


class HFBackend:
    """Generation with transformers. ``batch_size`` bounds one ``generate`` call's batch;
    ``prefix_cache`` (default on) reuses the shared first message's key/value cache."""

    name = "hf"

    def __init__(self, model: str, *, batch_size: int = 16, device: str | None = None,
                 dtype: str | None = None, prefix_cache: bool = True, **_: Any) -> None:
        self.model = model
        self.batch_size = max(1, batch_size)
        self.lm, self.tokenizer, self.device = load_causal_lm(model, device, dtype)
        # Recurrent (stateful) models keep no per-token key/value cache to share.
        self.prefix_cache = prefix_cache and not getattr(self.lm, "_is_stateful", False)
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()
        # transformers 5.x renamed ``past_key_values`` to ``cache``; older releases know only the former.
        params = inspect.signature(self.lm.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    def render(self, conversation: Conversation) -> str:
        if self.tokenizer.chat_template is None:
            # Base models without a template: plain "role: content" lines.
            lines = [f"{m['role']}: {m['content']}" for m in conversation]
            return "\n".join(lines) if continues(conversation) else "\n".join(lines) + "\nassistant:"
        if continues(conversation):
            return self.tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def _prefix_ids(self, conversation: Conversation, ids: list[int]) -> tuple[int, ...]:
        """Token ids of the rendered first message when ``ids`` starts with them, else ()."""
        if not self.prefix_cache or len(conversation) < 2 or self.tokenizer.chat_template is None:
            return ()
        try:
            head = self.tokenizer.apply_chat_template(conversation[:1], tokenize=False)
        except Exception:  # templates may refuse a lone first message (strict role alternation)
            return ()
        prefix = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        # Tokens must match exactly (no merge across the boundary) and leave a tail to pre-fill.
        if len(prefix) < MIN_PREFIX_TOKENS or len(prefix) >= len(ids) or ids[:len(prefix)] != prefix:
            return ()
        return tuple(prefix)

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        import torch

        ids = [self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"] for c in conversations]
        prefixes = [self._prefix_ids(c, x) for c, x in zip(conversations, ids, strict=True)]
        if params.seed is not None:
            torch.manual_seed(params.seed)
        # Same prefix, then similar lengths together: shared prefill, less padding per micro-batch.
        order = sorted(range(len(ids)), key=lambda i: (prefixes[i], len(ids[i])))
        results: list[Generation | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            shared = {prefixes[i] for i in idx}
            prefix = shared.pop() if len(shared) == 1 else ()
            for i, gen in zip(idx, self._generate([ids[i] for i in idx], prefix, params), strict=True):
                results[i] = gen
        return results  # type: ignore[return-value]

    def _prefix_cache(self, prefix: tuple[int, ...], rows: int) -> Any:
        """A fresh ``DynamicCache`` holding ``prefix``'s keys and values for each of ``rows`` rows."""
        import torch
        from transformers import DynamicCache

        layers = self._prefixes.get(prefix)
        if layers is None:
            cache = DynamicCache(config=self.lm.config)
            with torch.inference_mode():
                self.lm(input_ids=torch.tensor([prefix], device=self.device), use_cache=True,
                        **{self._cache_kwarg: cache})
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            self._prefixes[prefix] = layers
            if len(self._prefixes) > PREFIX_CACHE_SIZE:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(prefix)
        cache = DynamicCache(config=self.lm.config)
        for layer_idx, (keys, values) in enumerate(layers):
            cache.update(keys.repeat(rows, 1, 1, 1), values.repeat(rows, 1, 1, 1), layer_idx)
        return cache

    def _generate(self, ids: list[list[int]], prefix: tuple[int, ...], params: SamplingParams) -> list[Generation]:
        import torch

        tok = self.tokenizer
        # Left-pad each row's tail; the shared prefix (if any) stays in front, already cached.
        n_prefix = len(prefix)
        width = max(len(x) for x in ids) - n_prefix
        rows, masks = [], []
        for x in ids:
            pad = width - (len(x) - n_prefix)
            rows.append(x[:n_prefix] + [tok.pad_token_id] * pad + x[n_prefix:])
            masks.append([1] * n_prefix + [0] * pad + [1] * (len(x) - n_prefix))
        enc = {"input_ids": torch.tensor(rows, device=self.device),
               "attention_mask": torch.tensor(masks, device=self.device)}
        if n_prefix:
            enc[self._cache_kwarg] = self._prefix_cache(prefix, len(ids))
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "do_sample": not params.greedy,
            "pad_token_id": tok.pad_token_id,
            "repetition_penalty": params.repetition_penalty,
            "return_dict_in_generate": True,
            "output_logits": params.logprobs,
        }
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        with torch.inference_mode():
            out = self.lm.generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        new = out.sequences[:, prompt_len:]
        eos = set(_as_list(self.lm.generation_config.eos_token_id)) | {tok.eos_token_id}
        logprobs = None
        if params.logprobs:
            # Raw model log-probs of the sampled tokens (before temperature), as vLLM reports them.
            logits = torch.stack(out.logits, dim=1).float()
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        results = []
        prompt_counts = enc["attention_mask"].sum(dim=1).tolist()
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            length, finish = len(ids), "length"
            for j, t in enumerate(ids):
                if t in eos:
                    length, finish = j + 1, "stop"
                    break
            text = tok.decode(ids[:length], skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, params.stop)
            if stopped:
                finish = "stop"
            results.append(Generation(
                text=text,
                prompt_tokens=int(prompt_counts[row]),
                cached_tokens=n_prefix,
                completion_tokens=length,
                finish_reason=finish,
                logprobs=logprobs[row, :length].tolist() if logprobs is not None else None,
                tokens=tok.convert_ids_to_tokens(ids[:length]) if params.logprobs else None,
            ))
        return results


def _as_list(x: Any) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
