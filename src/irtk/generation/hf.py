"""transformers backend: batched, left-padded ``generate`` with chat templates, CPU or GPU.

Prompts that repeat earlier tokens are not pre-filled again (automatic prefix caching, as vLLM
does it; ``generate`` has no such option). After every call the key/value cache of each row —
its prompt and the tokens it generated — is kept in a ``KVStore``, keyed by those tokens; the
next prompt that starts with the same tokens (the same dialogue one turn later, or any prompt
sharing a system prompt) reuses the longest cached prefix and pre-fills only the rest. The store
is bounded in bytes (least recently used entries go first), and an entry is dropped as soon as
its conversation has moved on (a later prompt extended its whole prompt).

A micro-batch mixes rows with cached prefixes of different lengths: each row's cached part is
left-padded to the longest, then each row's new tokens are left-padded to the longest tail, so a
row is ``[pad][cached][pad][new]``. Positions come from the attention mask, so every token sits
at the position it has alone, and greedy decoding gives the tokens of a full prefill.

Decoding is irtk's own loop over the model's forward (``_decode``): rows that finish leave the
batch at once instead of being computed until the longest row is done (``lockstep=True``:
transformers' ``generate``, the reference the tests compare the loop with).

Off for models whose cache is not a plain per-token key/value cache (recurrent/stateful models,
sliding-window layers): nothing of theirs can be cropped to a prefix.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
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


MIN_PREFIX_TOKENS = 8  # below this, building a batch cache costs more than the pre-fill it saves
# Rows per generate call when the caller does not say: on a CPU larger batches stop paying once
# the matrix products are compute-bound; on a GPU memory for the key/value cache is the limit.
AUTO_BATCH = {"cpu": 32, "cuda": 128}
# Default byte budget of the key/value store, per device kind (CPU: RAM, shared with everything).
AUTO_CACHE_BYTES = {"cpu": 1 << 30, "cuda": 4 << 30}


def auto_batch_size(device: str) -> int:
    """The default micro-batch for ``device`` (also what ``simulate`` plays at once by default)."""
    return AUTO_BATCH.get(str(device).split(":")[0], AUTO_BATCH["cuda"])


@dataclass(eq=False)
class KVEntry:
    """One cached sequence: its tokens, each layer's (keys, values) as [heads, tokens, dim], and
    how many of the tokens were the prompt (the rest were generated)."""

    tokens: Any  # numpy int64 array
    layers: list[tuple[Any, Any]]
    prompt_len: int

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


class KVStore:
    """Key/value caches of earlier sequences, found by their longest common token prefix with a
    new prompt, evicted least-recently-used first beyond ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self._entries: OrderedDict[int, KVEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest_prefix(self, ids: Any) -> tuple[KVEntry | None, int]:
        """The entry sharing the most leading tokens with ``ids`` (a numpy array) and how many."""
        import numpy as np

        best, best_n = None, 0
        for entry in self._entries.values():
            m = min(len(entry.tokens), len(ids))
            if m <= best_n:
                continue
            differ = np.flatnonzero(entry.tokens[:m] != ids[:m])
            n = int(differ[0]) if differ.size else m
            if n > best_n:
                best, best_n = entry, n
        if best is not None:
            self._entries.move_to_end(id(best))
        return best, best_n

    def add(self, entry: KVEntry) -> None:
        if entry.nbytes > self.budget_bytes:
            return
        self._entries[id(entry)] = entry
        self.bytes += entry.nbytes
        while self.bytes > self.budget_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes

    def discard(self, entry: KVEntry) -> None:
        if self._entries.pop(id(entry), None) is not None:
            self.bytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class HFBackend:
    """Generation with transformers. ``batch_size`` bounds one forward's batch (default: by
    device, ``auto_batch_size``); ``prefix_cache`` (default on) reuses cached key/values of
    earlier prompts and completions, within ``cache_bytes`` (default: by device); ``lockstep``
    decodes with transformers' ``generate`` (every row until the longest ends) instead of irtk's
    loop, where finished rows leave the batch (models with a plain key/value cache)."""

    name = "hf"

    def __init__(self, model: str, *, batch_size: int | None = None, device: str | None = None,
                 dtype: str | None = None, prefix_cache: bool = True, cache_bytes: int | None = None,
                 lockstep: bool = False, **_: Any) -> None:
        self.model = model
        self.lm, self.tokenizer, self.device = load_causal_lm(model, device, dtype)
        self.batch_size = max(1, batch_size or auto_batch_size(self.device))
        self.cacheable = has_plain_kv_cache(self.lm)
        self.prefix_cache = prefix_cache and self.cacheable
        self.lockstep = lockstep
        kind = str(self.device).split(":")[0]
        self.kv_store = KVStore(cache_bytes if cache_bytes is not None else
                                AUTO_CACHE_BYTES.get(kind, AUTO_CACHE_BYTES["cuda"]))
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

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        import numpy as np
        import torch

        ids = [self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"] for c in conversations]
        hits: list[tuple[KVEntry | None, int]] = [(None, 0)] * len(ids)
        if self.prefix_cache:
            for i, x in enumerate(ids):
                entry, n = self.kv_store.longest_prefix(np.asarray(x, dtype=np.int64))
                n = min(n, len(x) - 1)  # the last prompt token is always fed: its logits start the reply
                hits[i] = (entry, n) if n >= MIN_PREFIX_TOKENS else (None, 0)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        # Rows with similar numbers of tokens to pre-fill together: less padding per micro-batch.
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]) - hits[i][1], len(ids[i])))
        results: list[Generation | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            for i, gen in zip(idx, self._generate([ids[i] for i in idx], [hits[i] for i in idx], params),
                              strict=True):
                results[i] = gen
        return results  # type: ignore[return-value]

    def _batch_cache(self, hits: list[tuple[KVEntry | None, int]], width: int) -> Any:
        """A ``DynamicCache`` of ``width`` positions: each row's cached prefix, left-padded."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.lm.config)
        sample = next(e for e, n in hits if n)
        for layer, (k0, v0) in enumerate(sample.layers):
            keys = k0.new_zeros((len(hits), k0.shape[0], width, k0.shape[2]))
            values = v0.new_zeros((len(hits), v0.shape[0], width, v0.shape[2]))
            for row, (entry, n) in enumerate(hits):
                if n:
                    k, v = entry.layers[layer]
                    keys[row, :, width - n:] = k[:, :n]
                    values[row, :, width - n:] = v[:, :n]
            cache.update(keys, values, layer)
        return cache

    def _store(self, layers: list[tuple[Any, Any]], mask: Any, row: int, x: list[int], gen: list[int],
               hit: tuple[KVEntry | None, int]) -> None:
        """Store batch row ``row``'s prompt ``x`` and generated tokens ``gen`` with their key/values
        (``layers``: each layer's batch keys and values; ``mask``: the batch's attention mask)."""
        import numpy as np
        import torch

        cached = layers[0][0].shape[2]  # the last generated token was never fed back: no key/value
        positions = torch.nonzero(mask[row, :cached]).squeeze(-1)
        tokens = (x + gen)[:len(positions)]
        positions = positions[:len(tokens)]
        source, n = hit
        if source is not None and n >= source.prompt_len:
            self.kv_store.discard(source)  # the same conversation, moved on: superseded
        self.kv_store.add(KVEntry(
            tokens=np.asarray(tokens, dtype=np.int64),
            layers=[(k[row].index_select(1, positions), v[row].index_select(1, positions)) for k, v in layers],
            prompt_len=len(x)))

    def _generate(self, ids: list[list[int]], hits: list[tuple[KVEntry | None, int]],
                  params: SamplingParams) -> list[Generation]:
        import torch

        tok = self.tokenizer
        width = max(n for _, n in hits)  # cached positions, each row's left-padded
        tail = max(len(x) - n for x, (_, n) in zip(ids, hits, strict=True))
        rows, masks = [], []
        for x, (_, n) in zip(ids, hits, strict=True):
            pad_cached, pad_tail = width - n, tail - (len(x) - n)
            rows.append([tok.pad_token_id] * pad_cached + x[:n] + [tok.pad_token_id] * pad_tail + x[n:])
            masks.append([0] * pad_cached + [1] * n + [0] * pad_tail + [1] * (len(x) - n))
        input_ids = torch.tensor(rows, device=self.device)
        mask = torch.tensor(masks, device=self.device)
        if self.cacheable and not self.lockstep:
            outs = self._decode(input_ids, mask, width, ids, hits, params)
        else:
            outs = self._generate_lockstep(input_ids, mask, params)
        results = []
        for row, (gen, logprobs) in enumerate(outs):
            finish = "stop" if gen and gen[-1] in self._eos else "length"
            text = tok.decode(gen, skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, params.stop)
            results.append(Generation(
                text=text,
                prompt_tokens=len(ids[row]),
                cached_tokens=hits[row][1],
                completion_tokens=len(gen),
                finish_reason="stop" if stopped else finish,
                logprobs=logprobs,
                tokens=tok.convert_ids_to_tokens(gen) if params.logprobs else None,
            ))
        return results

    @property
    def _eos(self) -> set[int]:
        return set(_as_list(self.lm.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}

    def _decode(self, input_ids: Any, mask: Any, width: int, ids: list[list[int]],
                hits: list[tuple[KVEntry | None, int]], params: SamplingParams) -> list[tuple[list[int], Any]]:
        """Sampling with rows leaving the batch as they finish. ``generate`` computes every row
        until the longest is done (a model policy's turns: about a third of the row-steps were
        useful); here a row that ends (end of sequence, a stop string, ``max_tokens``) has its
        key/values stored (with the prefix cache on) and is cut from the batch, so later steps
        compute only live rows.
        Tokens are ``generate``'s: the same logits processors (transformers' own), positions from
        the attention mask, and greedy decoding in fp32 gives its tokens (tested)."""
        import torch
        from transformers import DynamicCache

        n = input_ids.shape[0]
        cache = self._batch_cache(hits, width) if width else DynamicCache(config=self.lm.config)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        feed, feed_pos = input_ids[:, width:], positions[:, width:]
        processors = _logits_processors(params)
        history = input_ids  # what the repetition penalty looks at, as in generate
        eos = self._eos
        stop = _StopCheck(self.tokenizer, params.stop) if params.stop else None
        live = list(range(n))  # the original row of each batch row
        gens: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float] | None] = [[] if params.logprobs else None for _ in range(n)]
        done = [False] * n
        with torch.inference_mode():
            for step in range(params.max_tokens):
                out = self.lm(input_ids=feed, attention_mask=mask, position_ids=feed_pos, use_cache=True,
                              logits_to_keep=1, **{self._cache_kwarg: cache})
                cache = getattr(out, "cache", None) or out.past_key_values
                logits = out.logits[:, -1, :].float()
                scores = processors(history, logits) if processors else logits
                nxt = scores.argmax(-1) if params.greedy else sample(scores, params.top_p)
                chosen = torch.log_softmax(logits, -1).gather(-1, nxt[:, None]).squeeze(-1).tolist() \
                    if params.logprobs else None
                for b, (row, t) in enumerate(zip(live, nxt.tolist(), strict=True)):
                    if done[b]:
                        continue
                    gens[row].append(t)
                    if chosen is not None:
                        logprobs[row].append(chosen[b])
                    done[b] = t in eos or (stop is not None and stop(gens[row]))
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                last = step + 1 == params.max_tokens
                finished = sum(done)
                # Cutting rows copies the cache once: wait until enough rows have ended to pay.
                if last or finished == len(live) or finished >= max(1, len(live) // 8):
                    layers = [(layer.keys, layer.values) for layer in cache.layers]
                    keep = []
                    for b, row in enumerate(live):
                        if not (done[b] or last):
                            keep.append(b)
                        elif self.prefix_cache:
                            self._store(layers, mask, b, ids[row], gens[row], hits[row])
                    if not keep:
                        break
                    if len(keep) < len(live):
                        index = torch.tensor(keep, device=mask.device)
                        cache.batch_select_indices(index)
                        mask, nxt, feed_pos = mask[index], nxt[index], feed_pos[index]
                        if processors:
                            history = history[index]
                        live, done = [live[b] for b in keep], [False] * len(keep)
                if processors:
                    history = torch.cat([history, nxt[:, None]], dim=1)
                feed, feed_pos = nxt[:, None], feed_pos[:, -1:] + 1
        return [(g, lp) for g, lp in zip(gens, logprobs, strict=True)]

    def _generate_lockstep(self, input_ids: Any, mask: Any, params: SamplingParams) -> list[tuple[list[int], Any]]:
        """transformers' ``generate``: every row until the longest is done; no cache kept (models
        whose cache is not a plain key/value cache, or ``lockstep``)."""
        import torch

        tok = self.tokenizer
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
            kwargs["stopping_criteria"] = [_stop_criteria(tok, params.stop, input_ids.shape[1])]
        with torch.inference_mode():
            out = self.lm.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        new = out.sequences[:, input_ids.shape[1]:]
        logprobs = None
        if params.logprobs:
            # Raw model log-probs of the sampled tokens (before temperature), as vLLM reports them.
            logits = torch.stack(out.logits, dim=1).float()
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        eos, outs = self._eos, []
        stop = _StopCheck(tok, params.stop) if params.stop else None
        for row in range(new.shape[0]):
            gen = new[row].tolist()
            # A row ends at its first end-of-sequence token or stop string; generate pads after.
            length = next((j + 1 for j, t in enumerate(gen) if t in eos or (stop and stop(gen[:j + 1]))),
                          len(gen))
            outs.append((gen[:length], logprobs[row, :length].tolist() if logprobs is not None else None))
        return outs


def _logits_processors(params: SamplingParams) -> Any:
    """transformers' processors for ``params``, in ``generate``'s order (penalty, temperature,
    top-k); empty for plain greedy decoding. Top-p is ``sample``'s."""
    from transformers import LogitsProcessorList
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
    )

    out = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if not params.greedy:
        if params.temperature != 1.0:
            out.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            out.append(TopKLogitsWarper(params.top_k))
    return out  # top-p: ``sample``


NUCLEUS_CANDIDATES = 512  # tokens ranked before a nucleus is cut; more only when their mass falls short


def sample(scores: Any, top_p: float = 1.0) -> Any:
    """One token per row from softmax(``scores``), restricted to the top-``top_p`` nucleus.

    The distribution of transformers' ``TopPLogitsWarper`` followed by ``multinomial``, which
    sorts the whole vocabulary at every step: with 32 rows and SmolLM2's 49k tokens that took
    about 300 ms a step on a 2-core CPU, twice the model's forward. Here the nucleus is cut from
    the ``NUCLEUS_CANDIDATES`` highest tokens (the same set whenever their mass reaches
    ``top_p``; else the full warper runs), and without a nucleus a token is drawn by the
    exponential race (argmax of p / Exp(1), an exact categorical draw in one pass)."""
    import torch

    if top_p >= 1.0:
        probs = torch.softmax(scores, dim=-1)
        return (probs / torch.empty_like(probs).exponential_()).argmax(-1)
    k = min(NUCLEUS_CANDIDATES, scores.shape[-1])
    top, index = scores.topk(k, dim=-1)  # descending
    probs = (top - torch.logsumexp(scores, dim=-1, keepdim=True)).exp()
    before = probs.cumsum(-1) - probs  # mass ranked strictly above each token
    if k < scores.shape[-1] and bool((before[:, -1] + probs[:, -1] < top_p).any()):
        from transformers.generation.logits_process import TopPLogitsWarper

        cut = TopPLogitsWarper(top_p)(None, scores.clone())
        return torch.multinomial(torch.softmax(cut, dim=-1), num_samples=1).squeeze(1)
    # TopPLogitsWarper keeps a token while the mass ranked below it exceeds 1 - top_p, i.e. the
    # mass above it is under top_p; the top token always stays.
    keep = before < top_p
    keep[:, 0] = True
    choice = torch.multinomial(probs * keep, num_samples=1)
    return index.gather(-1, choice).squeeze(1)


class _StopCheck:
    """True once a row's *generated* tokens contain a stop string (decoding only their tail)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        # Enough trailing tokens to hold any stop string ending at the newest one (a token is at
        # least one character, but special tokens decode to nothing).
        self.window = max(len(s) for s in stop) + 4

    def __call__(self, gen: list[int]) -> bool:
        tail = self.tokenizer.decode(gen[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop)


def _stop_criteria(tokenizer: Any, stop: Sequence[str], prompt_width: int) -> Any:
    """``_StopCheck`` as a ``generate`` stopping criterion: a row stops once its *generated* text
    contains a stop string, as vLLM and OpenAI servers do. transformers' own ``stop_strings`` also
    match across the prompt's end, so a reply that starts with a newline after a template's
    "assistant\n" would stop at once."""
    import torch
    from transformers import StoppingCriteria

    check = _StopCheck(tokenizer, stop)

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
            return torch.tensor([check(row) for row in input_ids[:, prompt_width:].tolist()],
                                device=input_ids.device)

    return StopStrings()


def has_plain_kv_cache(lm: Any) -> bool:
    """True when the model's generation cache is one plain key/value tensor per layer."""
    if getattr(lm, "_is_stateful", False):
        return False
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=lm.config).layers)
    except Exception:  # configs the cache classes do not understand: no caching, never wrong output
        return False


def _as_list(x: Any) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
