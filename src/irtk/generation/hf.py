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

Decoding is irtk's own loop over the model's forward (``_Decoder``), continuous batching over
the rows of a call: rows that finish leave the batch instead of being computed until the longest
row is done, and the call's waiting rows are pre-filled and join the running batch (right-aligned,
each left-padded to the longer), so a call of ``call_size`` (twice ``batch_size``) rows keeps its
steps full until it runs out of rows. ``open_stream`` gives the same loop to a caller that adds
rows while it runs (``ChatStream``: a dialogue's next turn joins as soon as its last one ends).
Each layer's keys and values live in one preallocated slab written in place (``DynamicLayer``
re-copies the whole cache at every step); on a CPU its decode steps attend through irtk's kernel
(``irtk.generation.attention``: each row's valid positions read once, not torch's packed blocks
over the padding). ``lockstep=True``: transformers' ``generate`` in fixed
micro-batches, the reference the tests compare the loop with.

Off for models whose cache is not a plain per-token key/value cache (recurrent/stateful models,
sliding-window layers): nothing of theirs can be cropped to a prefix.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from irtk.device import (
    bound_kernel_caches,
    device_kind,
    map_large_blocks,
    pick_device,
    pick_dtype,
    release_freed_memory,
)
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


def pack_linears(lm: Any, rows: int) -> int:
    """Make every bf16 ``nn.Linear`` of ``lm`` on a CPU compute from its weight reordered once
    into oneDNN's blocked layout (``rows``: the batch it is packed for, a hint); returns how
    many. ``linear`` reorders the weight at every call: at the row counts of a decode step that
    costs more than the product (SmolLM2's 576x1536 projection at 18 rows: 0.086 ms, packed
    0.051; its 49k-token head 2.8 ms, packed 1.6; the same values; a whole decode step 1.08x
    faster at 32 rows, 1.42x at one). The packed copy replaces a layer's own weight, so the
    model holds each weight once (SmolLM2-135M's backend: 1.12 GB resident after loading, 1.33
    with both copies); a weight tied to another module (SmolLM2's head, its embedding's)
    stays. Pre-fills go through the packed copy too: against ``linear``, 0.6-1.1x its time
    from 160 to 4,000 tokens, 1.3x at 16,000 (a stream's first 32 rows). For a model that only
    runs forward: the packed layers' weights are no parameters any more (not trained, not in
    ``state_dict``). Other models, devices and dtypes, or a torch without oneDNN bf16: nothing
    changes."""
    import collections

    import torch

    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return 0
    users = collections.Counter(id(p) for _, p in lm.named_parameters(remove_duplicate=False))
    packed = 0
    for module in lm.modules():
        weight = getattr(module, "weight", None)
        if type(module) is torch.nn.Linear and weight.dtype == torch.bfloat16 and weight.device.type == "cpu":
            blocked = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), max(1, rows))
            # An instance attribute: it shadows ``Linear.forward``.
            module.forward = functools.partial(_packed_linear, blocked, module.bias)
            if users[id(weight)] == 1:
                del module.weight
            packed += 1
    return packed


def _packed_linear(blocked: Any, bias: Any, x: Any) -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise(x, blocked, bias, "none", [], "")


MIN_PREFIX_TOKENS = 8  # below this, building a batch cache costs more than the pre-fill it saves
# Rows per generate call when the caller does not say: on a CPU larger batches stop paying once
# the matrix products are compute-bound; on a GPU memory for the key/value cache is the limit.
# CPU: a decode step reads every weight whatever its rows (~40 ms for SmolLM2-135M on 2 cores),
# so 64 rows cost 2.74 ms a row against 4.35 at 32 (``bench/decode_floor.py``); all 699 example
# trajectories of ``simulate`` at 64, 36.8 dialogues/min against 27.6 at 32, peak RSS 2.60 GiB:
# a slab's padding takes no memory (``_slab_layer_class``; 3.94 GiB when it did).
AUTO_BATCH = {"cpu": 64, "cuda": 128}
# Default byte budget of the key/value store, per device kind (CPU: RAM, shared with everything).
AUTO_CACHE_BYTES = {"cpu": 1 << 30, "cuda": 4 << 30}


def auto_batch_size(device: str) -> int:
    """The default micro-batch for ``device`` (also what ``simulate`` plays at once by default)."""
    return AUTO_BATCH.get(device_kind(device), AUTO_BATCH["cuda"])


def admit_at(batch_size: int) -> int:
    """Rows a decoding batch frees before waiting ones are pre-filled to join it: a pre-fill
    and a merge cost a few steps, so not for every single row."""
    return max(1, batch_size // 8)


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


@dataclass(eq=False)
class _Batch:
    """Rows decoding together in ``HFBackend._decode``: their cache (slab layers), the attention
    mask over it and the tokens to feed next, those tokens and their positions, and the tokens
    so far for the logits processors that look back (``history``)."""

    rows: list[int]  # each batch row's index among the call's conversations
    cache: Any
    mask: Any  # [rows, cached + fed]
    feed: Any  # [rows, fed]
    positions: Any  # [rows, fed]
    history: Any | None
    pad: int
    done: list[bool] = field(init=False)  # per batch row: ended, not cut yet

    def __post_init__(self) -> None:
        self.done = [False] * len(self.rows)

    def step(self, lm: Any, cache_kwarg: str) -> Any:
        """One forward over ``feed``; the next-token logits of every row (fp32)."""
        fed, firsts = self.feed.shape[1], None
        for layer in self.cache.layers:
            if getattr(layer, "slab_keys", None) is not None and layer.start + layer.length + fed > layer.slab_keys.shape[2]:
                # Past the slab's end: a wider one now, copying each row's own positions only
                # (``update`` would copy its padding too).
                firsts = firsts if firsts is not None else self.firsts()
                layer.grow(fed, firsts)
        out = lm(input_ids=self.feed, attention_mask=self.mask, position_ids=self.positions, use_cache=True,
                 logits_to_keep=1, **{cache_kwarg: self.cache})
        self.cache = getattr(out, "cache", None) or out.past_key_values
        return out.logits[:, -1, :].float()

    def firsts(self, rows: Any = None) -> list[int]:
        """Each row's (or each of ``rows``') first position holding a token of its own, in the
        cache's view: what a slab copies of it (``SlabLayer``)."""
        mask = self.mask if rows is None else self.mask[rows]
        return mask.argmax(-1).tolist()  # the first 1 of each row

    def advance(self, nxt: Any) -> None:
        """The sampled tokens ``nxt`` are fed at the next step."""
        import torch

        self.feed, self.positions = nxt[:, None], self.positions[:, -1:] + 1
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        if self.history is not None:
            self.history = torch.cat([self.history, self.feed], dim=1)

    def keep(self, kept: list[int]) -> _Batch | None:
        """Only the batch rows ``kept`` go on (None when none is left; their order may change),
        without the leading positions that are padding in all of them: a stream's batch never
        ends, and rows join right-aligned, so without this its width would grow with every step
        it ever ran (and attention with it)."""
        import torch

        if not kept:
            return None
        if len(kept) < len(self.rows):
            # The last kept rows move into the slots of leaving ones: the rest stay where they are.
            staying = set(kept)
            movers = [b for b in kept if b >= len(kept)]
            holes = [b for b in range(len(kept)) if b not in staying]
            order = list(range(len(kept)))
            for hole, mover in zip(holes, movers, strict=True):
                order[hole] = mover
            index = torch.tensor(order, device=self.mask.device)
            front = int(self.mask[index].any(0).to(torch.int8).argmax())  # the first position any row uses
            moves = (torch.tensor(holes, device=self.mask.device),
                     torch.tensor(movers, device=self.mask.device))
            firsts = self.firsts(moves[1]) if movers else None
            for layer in self.cache.layers:
                layer.move_rows(*moves, len(order), front, firsts)
            self.mask, self.feed, self.positions = self.mask[index, front:], self.feed[index], self.positions[index]
            if self.history is not None:
                self.history = self.history[index, front:]
            self.rows = [self.rows[b] for b in order]
        self.done = [False] * len(self.rows)
        return self

    def merge(self, other: _Batch, max_tokens: int, rows: int = 0) -> _Batch:
        """This batch with ``other``'s rows after its own, right-aligned (each row's cache and
        mask left-padded to the longer); where the cache must be rebuilt, with room for
        ``max_tokens`` more positions and ``rows`` rows."""
        import torch

        width = max(self.cache.get_seq_length(), other.cache.get_seq_length())
        firsts = (self.firsts(), other.firsts())
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.concat(theirs, width + max_tokens, rows, firsts)

        def left_pad(a: Any, b: Any, value: int) -> Any:
            w = max(a.shape[1], b.shape[1])
            return torch.cat([torch.nn.functional.pad(a, (w - a.shape[1], 0), value=value),
                              torch.nn.functional.pad(b, (w - b.shape[1], 0), value=value)])

        self.mask = left_pad(self.mask, other.mask, 0)
        self.feed = torch.cat([self.feed, other.feed])
        self.positions = torch.cat([self.positions, other.positions])
        if self.history is not None:
            self.history = left_pad(self.history, other.history, self.pad)
        self.rows, self.done = self.rows + other.rows, self.done + other.done
        return self


class HFBackend:
    """Generation with transformers. ``batch_size`` bounds one forward's batch (default: by
    device, ``auto_batch_size``); ``prefix_cache`` (default on) reuses cached key/values of
    earlier prompts and completions, within ``cache_bytes`` (default: by device); ``lockstep``
    decodes with transformers' ``generate`` (every row until the longest ends) instead of irtk's
    loop, where finished rows leave the batch (models with a plain key/value cache);
    ``call_size``: conversations a caller sends per call (default: twice ``batch_size``);
    ``pack_weights`` (default on): bf16 linear layers on a CPU with oneDNN compute from weights
    reordered once into its blocked layout (``pack_linears``); ``decode_kernel`` (default on):
    decode steps on a CPU attend through irtk's kernel (``irtk.generation.attention``) where it
    builds, instead of torch's flash kernel."""

    name = "hf"

    def __init__(self, model: str, *, batch_size: int | None = None, device: str | None = None,
                 dtype: str | None = None, prefix_cache: bool = True, cache_bytes: int | None = None,
                 lockstep: bool = False, call_size: int | None = None, pack_weights: bool = True,
                 decode_kernel: bool = True, **_: Any) -> None:
        bound_kernel_caches()  # before the model's first kernel: read once
        lm, tokenizer, device = load_causal_lm(model, device, dtype)
        self._attach(model, lm, tokenizer, device, batch_size=batch_size, prefix_cache=prefix_cache,
                     cache_bytes=cache_bytes, lockstep=lockstep, call_size=call_size)
        if pack_weights:  # this backend's own model: its weights never change
            pack_linears(lm, self.batch_size)
            release_freed_memory(self.device)  # the weights packing replaced
        if decode_kernel:
            from irtk.generation import attention

            attention.enable(lm)

    def _attach(self, model: str, lm: Any, tokenizer: Any, device: Any, *, batch_size: int | None,
                prefix_cache: bool, cache_bytes: int | None, lockstep: bool,
                call_size: int | None = None) -> None:
        """Set the backend up on a loaded model and its left-padding tokenizer."""
        self.model, self.lm, self.tokenizer, self.device = model, lm, tokenizer, device
        self._call_size = call_size
        self.batch_size = max(1, batch_size or auto_batch_size(self.device))
        self.cacheable = has_plain_kv_cache(self.lm)
        self.prefix_cache = prefix_cache and self.cacheable
        self.lockstep = lockstep
        map_large_blocks(self.device)  # slabs come and go in changing sizes: not on the heap
        self.kv_store = KVStore(cache_bytes if cache_bytes is not None else
                                AUTO_CACHE_BYTES.get(device_kind(self.device), AUTO_CACHE_BYTES["cuda"]))
        # transformers 5.x renamed ``past_key_values`` to ``cache``; older releases know only the former.
        # A peft model (a trainer's LoRA policy) hands its keyword arguments on: ask the model inside.
        inner = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        params = inspect.signature(inner.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @property
    def own_loop(self) -> bool:
        """True where decoding is irtk's ``_Decoder`` (a plain key/value cache, not ``lockstep``),
        else transformers' ``generate`` in fixed micro-batches."""
        return self.cacheable and not self.lockstep

    @property
    def call_size(self) -> int:
        """Conversations a caller should send per ``chat`` call: twice ``batch_size`` where rows
        join the batch as others end (the second half fills the steps the first half's longest
        rows would run nearly alone), else ``batch_size``; the ``call_size`` option sets it."""
        if self._call_size:
            return max(1, int(self._call_size))
        return self.batch_size * (2 if self.own_loop else 1)

    @property
    def stream_size(self) -> int:
        """Conversations a caller of ``open_stream`` should keep in flight: ``batch_size`` plus
        the rows a batch frees before waiting ones join it (``admit_at``), so freed rows have
        successors waiting; more would only wait, each holding its stored turn's key/values in
        memory. Without a stream, and where the ``call_size`` option is given, ``call_size``.
        All 699 example trajectories (``bench/simulate.py --dialogues 0``): 36 in flight, 1,784.8 s
        at a peak RSS of 2.81 GiB; 64 (twice the batch), 1,907.4 s at 3.33 GiB."""
        if self._call_size or not self.own_loop:
            return self.call_size
        return self.batch_size + admit_at(self.batch_size)

    def render(self, conversation: Conversation) -> str:
        if self.tokenizer.chat_template is None:
            # Base models without a template: plain "role: content" lines.
            lines = [f"{m['role']}: {m['content']}" for m in conversation]
            return "\n".join(lines) if continues(conversation) else "\n".join(lines) + "\nassistant:"
        if continues(conversation):
            return self.tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        import torch

        ids = [self._tokens(c) for c in conversations]
        hits = [self._hit(x) for x in ids]
        # Rows with similar numbers of tokens to pre-fill together: less padding per pre-fill.
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]) - hits[i][1], len(ids[i])))
        if self.own_loop:
            decoder = _Decoder(self, params)
            rows = {i: decoder.add(ids[i], hits[i]) for i in order}
            del hits  # the decoder's only: a row's cache entry can go once the row is pre-filled
            while decoder.next_finished() is not None:
                pass
            return [self._generation(*decoder.pop(rows[i])) for i in range(len(ids))]
        if params.seed is not None:
            torch.manual_seed(params.seed)
        outs = [None] * len(ids)
        with self._generating():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                input_ids, mask, _ = self._layout([ids[i] for i in idx], [hits[i] for i in idx])
                for i, out in zip(idx, self._generate_lockstep(input_ids, mask, params), strict=True):
                    outs[i] = out
        return [self._generation(x, hit, gen, logprobs, params)
                for x, hit, (gen, logprobs) in zip(ids, hits, outs, strict=True)]

    def open_stream(self, params: SamplingParams) -> ChatStream | None:
        """Conversations decoded as they come (``ChatStream``), where this backend runs its own
        loop (a plain key/value cache, not ``lockstep``); else None (callers use ``chat``)."""
        return ChatStream(self, params) if self.own_loop else None

    def forget(self, conversation: Conversation) -> None:
        """Nothing will continue ``conversation`` (a dialogue that ended before its last turn):
        the stored entry it continues (or is: the prompt of a turn that stopped) leaves the
        store now, instead of holding memory until the byte budget pushes it out (with
        ``--allow-stop`` a dialogue may end before ``--max-turns``, its last turn stored)."""
        import numpy as np

        if self.prefix_cache and len(self.kv_store):
            # The whole conversation counts (``_hit`` keeps its last token to feed): a dialogue
            # that stopped is its stored turn's prompt, its STOP turn not part of it.
            entry, n = self.kv_store.longest_prefix(np.asarray(self._tokens(conversation), dtype=np.int64))
            if entry is not None and n >= entry.prompt_len:
                self.kv_store.discard(entry)

    def _generating(self) -> contextlib.AbstractContextManager:
        """The context every forward of ``chat`` and of a stream runs in (a subclass around a
        model being trained puts it in eval mode there)."""
        return contextlib.nullcontext()

    def _tokens(self, conversation: Conversation) -> list[int]:
        return self.tokenizer(self.render(conversation), add_special_tokens=False)["input_ids"]

    def _hit(self, x: list[int]) -> tuple[KVEntry | None, int]:
        """The stored entry sharing the longest prefix with prompt ``x`` and how many of its
        tokens to reuse ((None, 0) with the prefix cache off or below ``MIN_PREFIX_TOKENS``)."""
        import numpy as np

        if not self.prefix_cache:
            return None, 0
        entry, n = self.kv_store.longest_prefix(np.asarray(x, dtype=np.int64))
        n = min(n, len(x) - 1)  # the last prompt token is always fed: its logits start the reply
        return (entry, n) if n >= MIN_PREFIX_TOKENS else (None, 0)

    def _layout(self, ids: list[list[int]], hits: list[tuple[KVEntry | None, int]]) -> tuple[Any, Any, int]:
        """Input ids and attention mask of rows ``[pad][cached][pad][new]`` (see the module doc)
        and the width of the cached part."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(n for _, n in hits)  # cached positions, each row's left-padded
        tail = max(len(x) - n for x, (_, n) in zip(ids, hits, strict=True))
        rows, masks = [], []
        for x, (_, n) in zip(ids, hits, strict=True):
            pad_cached, pad_tail = width - n, tail - (len(x) - n)
            rows.append([pad] * pad_cached + x[:n] + [pad] * pad_tail + x[n:])
            masks.append([0] * pad_cached + [1] * n + [0] * pad_tail + [1] * (len(x) - n))
        return torch.tensor(rows, device=self.device), torch.tensor(masks, device=self.device), width

    def _generation(self, x: list[int], hit: tuple[KVEntry | None, int], gen: list[int], logprobs: Any,
                    params: SamplingParams) -> Generation:
        tok = self.tokenizer
        finish = "stop" if gen and gen[-1] in self._eos else "length"
        text, stopped = _cut_at_stop(tok.decode(gen, skip_special_tokens=True), params.stop)
        return Generation(
            text=text,
            prompt_tokens=len(x),
            cached_tokens=hit[1],
            completion_tokens=len(gen),
            finish_reason="stop" if stopped else finish,
            logprobs=logprobs,
            tokens=tok.convert_ids_to_tokens(gen) if params.logprobs else None,
        )

    def _batch_cache(self, hits: list[tuple[KVEntry | None, int]], width: int, capacity: int,
                     fed: int = 0, beside: Any = None, row_capacity: int = 0) -> Any:
        """A cache of ``capacity`` positions per row (``_slab_cache``; ``row_capacity``: room for
        that many rows, and positions in front, for rows joining later) that starts with each
        row's cached prefix, left-padded to ``width``. With ``beside`` (a running batch's cache)
        and ``fed`` (the positions the pre-fill adds): on that cache's spare slab rows, ending
        where its rows end, where it has the rows and the room (``SlabLayer.spare``): joining it
        then copies nothing, and no second slab is in memory while the pre-fill runs."""
        cache = _slab_cache(self.lm.config, capacity, row_capacity)
        # Each row's first position of its own: its cached prefix's, else its pre-fill's (padded
        # in front to the longest: that padding is written by the forward).
        firsts = [width - n for _, n in hits]
        spare = [layer.spare(len(hits), width, fed, firsts) for layer in beside.layers] if beside is not None else []
        if spare and all(layer is not None for layer in spare):
            cache.layers = spare
        elif not width:
            return cache
        sample = next((e for e, n in hits if n), None)
        for index, layer in enumerate(cache.layers):
            if layer.is_initialized:
                keys, values = layer.keys, layer.values
            else:
                k0, v0 = sample.layers[index]
                keys, values = layer.allocate(len(hits), k0, v0, width, start=layer.front,
                                              width=layer.front + capacity)
            for row, (entry, n) in enumerate(hits):
                if n:
                    k, v = entry.layers[index]
                    keys[row, :, width - n:] = k[:, :n]
                    values[row, :, width - n:] = v[:, :n]
        return cache

    def _consumed(self, hit: tuple[KVEntry | None, int]) -> None:
        """A row's cached prefix ``hit`` has been copied into its batch: an entry whose whole
        prompt it reused is the same conversation, moved on, and leaves the store (its next
        entry comes when this row ends), so the store holds conversations between turns, not
        copies of the rows decoding."""
        source, n = hit
        if source is not None and n >= source.prompt_len:
            self.kv_store.discard(source)

    def _store(self, cache: Any, mask: Any, row: int, x: list[int], gen: list[int]) -> None:
        """Store batch row ``row``'s prompt ``x`` and generated tokens ``gen`` with their key/values
        (``mask``: the batch's attention mask)."""
        import numpy as np
        import torch

        cached = cache.get_seq_length()  # the last generated token was never fed back: no key/value
        positions = torch.nonzero(mask[row, :cached]).squeeze(-1)
        tokens = (x + gen)[:len(positions)]
        positions = positions[:len(tokens)]
        self.kv_store.add(KVEntry(
            tokens=np.asarray(tokens, dtype=np.int64),
            layers=[(layer.keys[row].index_select(1, positions), layer.values[row].index_select(1, positions))
                    for layer in cache.layers],
            prompt_len=len(x)))

    @property
    def _eos(self) -> set[int]:
        return set(_as_list(self.lm.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}

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
        stop = StopCheck(tok, params.stop) if params.stop else None
        for row in range(new.shape[0]):
            gen = new[row].tolist()
            # A row ends at its first end-of-sequence token or stop string; generate pads after.
            length = next((j + 1 for j, t in enumerate(gen) if t in eos), len(gen))
            length = stop.kept(gen[:length]) if stop else length
            outs.append((gen[:length], logprobs[row, :length].tolist() if logprobs is not None else None))
        return outs


# A forward's fixed cost in pre-filled tokens: reading every weight once and the per-layer
# overhead. SmolLM2-135M in bf16 on 2 cores: a decode step at one row ~41 ms, a pre-filled
# token ~1.1-1.2 ms (``bench/decode_floor.py``), so ~35 tokens.
PREFILL_STEP_TOKENS = 32


def prefill_group(tails: Sequence[int], step_tokens: int = PREFILL_STEP_TOKENS) -> list[int]:
    """Which of the rows waiting to be pre-filled (``tails``: each one's tokens to pre-fill) go
    into this pre-fill, the first row always among them: the indices of one run of the rows
    sorted by tail, from the cut of the sorted rows into runs that costs least, a run costing
    ``step_tokens`` plus its longest tail times its rows (every row is padded to the longest).
    One pre-fill of the lot pads a next turn's answer of 25 tokens to a new dialogue's or a
    summary's 300-token prompt: on 128 dialogues of ``simulate`` (``bench/simulate.py``'s
    trajectories) the pre-fills fed 48,032 tokens with their padding for ~36,000 to pre-fill
    and took 68.8 s; with this choice 38,416 for 36,074, in 55.0 s."""
    order = sorted(range(len(tails)), key=lambda i: tails[i])
    cost = [0.0] + [math.inf] * len(order)  # cost[j]: the cheapest cut of the shortest j
    start = [0] * (len(order) + 1)  # where the last run of that cut starts
    for j in range(1, len(order) + 1):
        for i in range(j):
            c = cost[i] + step_tokens + tails[order[j - 1]] * (j - i)
            if c < cost[j]:
                cost[j], start[j] = c, i
    j = len(order)
    while 0 not in order[start[j]:j]:
        j = start[j]
    return sorted(order[start[j]:j])


class _Decoder:
    """irtk's sampling loop with continuous batching over its rows (``HFBackend.chat`` and
    ``ChatStream``): up to ``batch_size`` rows decode together; a row that ends (end of
    sequence, a stop string, ``max_tokens``) has its key/values stored (with the prefix cache
    on) and leaves the batch, and waiting rows are pre-filled and join it, so steps stay full
    while rows wait. Rows may be added between ``next_finished`` calls (a stream's caller adds a
    dialogue's next turn as soon as its last one ends).
    (``generate`` computes every row until the longest is done: on a model policy's turns
    about a third of its row-steps were useful.)
    Tokens are ``generate``'s: the same logits processors (transformers' own), positions from
    the attention mask, and greedy decoding in fp32 gives its tokens (tested). Sampling draws
    from its own generator, seeded with ``params.seed``. A row may bring its own parameters
    (``add``'s ``params``: a stream decodes a dialogue's summary, greedy and longer, beside its
    questions); rows are sampled in groups of equal parameters, and the generator and the
    seed stay the decoder's."""

    def __init__(self, backend: HFBackend, params: SamplingParams) -> None:
        import torch

        self.backend, self.params = backend, params
        # Per row until ``pop``: a stream's finished rows must not keep their prompts and the
        # cache entries they started from (those hold key/values) alive.
        self.ids: dict[int, list[int]] = {}
        self.hits: dict[int, tuple[KVEntry | None, int]] = {}
        self.gens: dict[int, list[int]] = {}
        self.logprobs: dict[int, list[float] | None] = {}
        self.row_params: dict[int, SamplingParams] = {}
        self.last: set[int] = set()  # rows no later prompt will continue: not stored
        self.added = 0
        self.waiting: deque[int] = deque()
        self.batch: _Batch | None = None
        # Only a repetition penalty looks back at the tokens so far: only then are they kept.
        self.history = params.repetition_penalty != 1.0
        self.rules: dict[SamplingParams, tuple[Any, StopCheck | None]] = {}  # processors, stop check
        self.max_tokens = params.max_tokens  # the most any row may write: room kept in a slab
        self.eos = backend._eos
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=backend.device).manual_seed(params.seed)
        self.admit_at = admit_at(backend.batch_size)

    def add(self, x: list[int], hit: tuple[KVEntry | None, int], *, last: bool = False,
            params: SamplingParams | None = None) -> int:
        """Queue prompt ``x`` (its cached prefix ``hit``; ``last``: no later prompt continues it,
        so its key/values are not stored; ``params``: its own, default the decoder's); returns
        its row number."""
        params = params or self.params
        if params.repetition_penalty != 1.0 and not self.history:
            raise ValueError("a row with a repetition penalty needs a decoder opened with one "
                             "(the tokens so far are not kept)")
        row, self.added = self.added, self.added + 1
        self.ids[row], self.hits[row], self.gens[row], self.row_params[row] = x, hit, [], params
        if last:
            self.last.add(row)
        self.logprobs[row] = [] if params.logprobs else None
        self.max_tokens = max(self.max_tokens, params.max_tokens)
        self.waiting.append(row)
        return row

    def pop(self, row: int) -> tuple[list[int], tuple[KVEntry | None, int], list[int], list[float] | None,
                                     SamplingParams]:
        """A finished row's prompt, cache hit, generated tokens, log-probs and parameters
        (``HFBackend._generation``'s arguments), forgotten here."""
        self.last.discard(row)
        return (self.ids.pop(row), self.hits.pop(row), self.gens.pop(row), self.logprobs.pop(row),
                self.row_params.pop(row))

    def _rule(self, params: SamplingParams) -> tuple[Any, StopCheck | None]:
        """The logits processors and stop check of ``params``, made once."""
        if params not in self.rules:
            stop = StopCheck(self.backend.tokenizer, params.stop) if params.stop else None
            self.rules[params] = (_logits_processors(params), stop)
        return self.rules[params]

    def _choose(self, params: SamplingParams, history: Any, logits: Any) -> Any:
        """The next token of rows sampled with ``params`` (``logits``: theirs)."""
        processors, _ = self._rule(params)
        scores = processors(history, logits) if processors else logits
        return scores.argmax(-1) if params.greedy else sample(scores, params.top_p, self.generator)

    def _can_admit(self, free: int) -> bool:
        return bool(self.waiting) and free >= min(self.admit_at, len(self.waiting))

    def next_finished(self) -> list[int] | None:
        """Decode until some rows end and leave the batch; their row numbers (None once no row
        is decoding or waiting)."""
        import torch

        with torch.inference_mode(), self.backend._generating():
            while True:
                slab, waiting = self._slab(), len(self.waiting)
                finished = self._step()
                if len(self.waiting) < waiting or (slab is not None and self._slab() is not slab):
                    # Rows were pre-filled (their slab merged and freed), a slab was rebuilt or
                    # the batch ended: memory freed in large blocks goes back where it piles up.
                    del slab
                    release_freed_memory(self.backend.device)
                if finished is None or finished:
                    return finished

    def _slab(self) -> Any:
        """The running batch's first key slab (its identity tells when the slabs were rebuilt)."""
        return None if self.batch is None else getattr(self.batch.cache.layers[0], "slab_keys", None)

    def _step(self) -> list[int] | None:
        """One forward (a pre-fill of waiting rows, or a decode step): the rows cut from the
        batch after it ([] when none), None when nothing is left to decode."""
        import torch

        backend, batch = self.backend, self.batch
        room = backend.batch_size - (len(batch.rows) if batch else 0)
        if self._can_admit(room):
            stepped, logits = self._prefill(self._admit(room))
        elif batch is not None:
            stepped, logits = batch, batch.step(backend.lm, backend._cache_kwarg)
        else:
            return None
        params = [self.row_params[row] for row in stepped.rows]
        groups: dict[SamplingParams, list[int]] = {}
        for b, p in enumerate(params):
            groups.setdefault(p, []).append(b)
        if len(groups) == 1:
            nxt = self._choose(params[0], stepped.history, logits)
        else:  # rows with parameters of their own: each group sampled by its rule
            nxt = torch.empty(len(params), dtype=torch.long, device=logits.device)
            for p, group in groups.items():
                index = torch.tensor(group, device=logits.device)
                nxt[index] = self._choose(p, None if stepped.history is None else stepped.history[index],
                                          logits[index])
        chosen = torch.log_softmax(logits, -1).gather(-1, nxt[:, None]).squeeze(-1).tolist() \
            if any(p.logprobs for p in groups) else None
        for b, (row, t) in enumerate(zip(stepped.rows, nxt.tolist(), strict=True)):
            if stepped.done[b]:
                continue  # ended, not cut yet: its tokens are ignored
            gen = self.gens[row]
            gen.append(t)
            if self.logprobs[row] is not None:
                self.logprobs[row].append(chosen[b])
            stop = self._rule(params[b])[1]
            stepped.done[b] = (t in self.eos or len(gen) >= params[b].max_tokens
                               or (stop is not None and stop(gen)))
        stepped.advance(nxt)
        if stepped is not batch:
            batch = stepped if batch is None else batch.merge(stepped, self.max_tokens, backend.batch_size)
        self.batch = batch
        # Rows leave as soon as they end (a cut copies only the rows that change slots): a
        # stream's caller is waiting for them to submit the dialogue's next turn.
        if not any(batch.done):
            return []
        cut = [row for b, row in enumerate(batch.rows) if batch.done[b]]
        if backend.prefix_cache:
            for b, row in enumerate(batch.rows):
                if batch.done[b] and row not in self.last:
                    backend._store(batch.cache, batch.mask, b, self.ids[row], self.gens[row])
        self.batch = batch.keep([b for b, d in enumerate(batch.done) if not d])
        return cut

    def _admit(self, room: int) -> list[int]:
        """The waiting rows to pre-fill now: of the first ``room``, those ``prefill_group``
        picks by the lengths of their uncached tails (the first row always among them); the
        others stay first in the queue, in their order, for the next pre-fill."""
        candidates = [self.waiting.popleft() for _ in range(min(room, len(self.waiting)))]
        for row in candidates:
            if not self.hits[row][1]:  # rows ended since it was queued may share its prefix
                self.hits[row] = self.backend._hit(self.ids[row])
        chosen = set(prefill_group([len(self.ids[row]) - self.hits[row][1] for row in candidates]))
        self.waiting.extendleft(reversed([row for i, row in enumerate(candidates) if i not in chosen]))
        return [row for i, row in enumerate(candidates) if i in chosen]

    def _prefill(self, rows: list[int]) -> tuple[_Batch, Any]:
        """Pre-fill ``rows`` (their uncached tails, on their cached prefixes): the batch of them
        and the logits of their first token."""
        backend = self.backend
        hits = [self.hits[i] for i in rows]
        input_ids, mask, width = backend._layout([self.ids[i] for i in rows], hits)
        # Room for the whole call: the cached prefix, the pre-fill and every token to generate
        # (unless the rows are pre-filled in the running batch's spare ones).
        cache = backend._batch_cache(hits, width, input_ids.shape[1] + max(self.row_params[i].max_tokens for i in rows),
                                     fed=input_ids.shape[1] - width,
                                     beside=self.batch.cache if self.batch is not None else None,
                                     # A first batch: room for the rows already waiting to join it.
                                     row_capacity=0 if self.batch is not None else
                                     min(backend.batch_size, len(rows) + len(self.waiting)))
        for row, hit in zip(rows, hits, strict=True):
            backend._consumed(hit)
            self.hits[row] = (None, hit[1])  # in the batch now: the entry may go
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        batch = _Batch(rows=list(rows), cache=cache, mask=mask, feed=input_ids[:, width:],
                       positions=positions[:, width:], history=input_ids if self.history else None,
                       pad=backend.tokenizer.pad_token_id)
        return batch, batch.step(backend.lm, backend._cache_kwarg)


class ChatStream:
    """Conversations decoded as they come, on one running batch (``HFBackend.open_stream``).

    ``submit(key, conversation)`` queues a conversation; iterating yields, each time some rows
    end, their ``(key, Generation)`` pairs. A caller may submit more between items — a
    dialogue's next turn joins the running batch as soon as its last turn ends, instead of
    waiting for every other dialogue's turn (``chat``'s one call per turn) — and iteration ends
    once nothing is decoding or waiting. The stream's sampling draws from its own generator
    (``params.seed``), so results depend on what was submitted and when, not on other calls."""

    def __init__(self, backend: HFBackend, params: SamplingParams) -> None:
        self.backend, self.params = backend, params
        self._decoder = _Decoder(backend, params)
        self._keys: dict[int, Any] = {}

    def submit(self, key: Any, conversation: Conversation, *, last: bool = False,
               params: SamplingParams | None = None) -> None:
        """Queue ``conversation`` under ``key`` (``last``: no later conversation continues this
        one — a dialogue's last turn — so its key/values are not kept for one; ``params``: its
        own sampling parameters, default the stream's; the stream's generator draws, and a
        repetition penalty needs a stream opened with one)."""
        x = self.backend._tokens(conversation)
        self._keys[self._decoder.add(x, self.backend._hit(x), last=last, params=params)] = key

    def __iter__(self) -> Iterator[list[tuple[Any, Generation]]]:
        while (finished := self._decoder.next_finished()) is not None:
            yield [(self._keys.pop(row), self.backend._generation(*self._decoder.pop(row)))
                   for row in finished]


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


def sample(scores: Any, top_p: float = 1.0, generator: Any = None) -> Any:
    """One token per row from softmax(``scores``), restricted to the top-``top_p`` nucleus.

    The distribution of transformers' ``TopPLogitsWarper`` followed by ``multinomial``, without
    their cost: the warper sorts the whole vocabulary at every step (with 32 rows and SmolLM2's
    49k tokens, ~300 ms on a 2-core CPU, twice the model's forward), and ``multinomial`` draws
    an exponential variate per token (~50 ms). Here a row's token is drawn by inverting its
    cumulative distribution (one uniform per row), then kept if it lies in the nucleus — the
    mass of the tokens more probable than it is under ``top_p``, the warper's rule (the top
    token always stays; tokens tied with a kept one stay too) — else drawn again: rejection
    from the whole distribution gives the nucleus's renormalised one exactly, and a draw falls
    outside it with probability at most ``1 - top_p``.

    The inversion is two-level (``_invert``): a cumulative sum over blocks of ``SAMPLE_BLOCK``
    tokens picks the block, one within it picks the token, so no cumulative distribution of the
    whole vocabulary is written or copied (a row redrawn reads its block sums only), and the
    nucleus test sums only for rows whose token has probability at most ``1 - top_p``.
    ``bench/sampler.py`` (32 rows of the embedded model's logits, temperature 0.7, top-p 0.95):
    4.6-5.7 ms a step against 9.2-10.3 ms with one fp64 cumulative sum over the vocabulary
    (1.6-2.2x, two runs). Draws come from ``generator`` (default: torch's global one)."""
    import torch

    probs = torch.softmax(scores, dim=-1)
    vocab = probs.shape[-1]
    blocks = -(-vocab // SAMPLE_BLOCK)
    padded = probs if vocab == blocks * SAMPLE_BLOCK else \
        torch.nn.functional.pad(probs, (0, blocks * SAMPLE_BLOCK - vocab))
    tiles = padded.view(len(probs), blocks, SAMPLE_BLOCK)
    # Running sums in fp64: no block's mass is lost over the vocabulary.
    block_cdf = tiles.sum(-1).double().cumsum(-1)

    def draw(rows: Any) -> Any:
        u = torch.rand(len(rows), 1, dtype=torch.float64, device=probs.device, generator=generator)
        return _invert(tiles, block_cdf, rows, u)

    rows = torch.arange(len(probs), device=probs.device)
    chosen = draw(rows)
    if top_p >= 1.0:
        return chosen
    part = probs
    while True:
        mine = part.gather(-1, chosen[rows, None])
        # Less than 1 - mine lies above a token of probability mine: above 1 - top_p it is kept
        # without summing (most draws of a peaked distribution; a threshold above every
        # probability sums nothing).
        doubt = mine <= 1 - top_p
        if not bool(doubt.any()):
            return chosen
        outside = part.where(part > mine.masked_fill(~doubt, 2.0), 0).sum(-1) >= top_p
        if not bool(outside.any()):
            return chosen
        rows = rows[outside]
        chosen[rows] = draw(rows)
        part = probs[rows]


SAMPLE_BLOCK = 256  # tokens per block of ``sample``'s two-level inversion (49,152 = 192 x 256)


def _invert(tiles: Any, block_cdf: Any, rows: Any, u: Any) -> Any:
    """The tokens of ``rows`` at uniform fractions ``u`` ([rows, 1], fp64) of their mass:
    ``tiles`` is [all rows, blocks, block] of probabilities, ``block_cdf`` [all rows, blocks]
    the running sums of its blocks. Rounding never lands on a token of probability 0: a block
    and a token past the last of positive mass are clamped to it."""
    import torch

    cdf = block_cdf[rows]
    target = u * cdf[:, -1:]
    index = torch.arange(cdf.shape[1], device=cdf.device)
    last_block = torch.where(cdf > torch.cat([cdf.new_zeros(len(cdf), 1), cdf[:, :-1]], 1), index, 0).amax(1)
    block = torch.minimum(torch.searchsorted(cdf, target, right=True).squeeze(1), last_block)
    before = torch.where(block > 0, cdf.gather(1, (block - 1).clamp(min=0)[:, None]).squeeze(1), 0.0)
    tile = tiles[rows, block]  # [rows, block]
    within = tile.cumsum(-1, dtype=torch.float64)
    slot = torch.arange(tile.shape[1], device=tile.device)
    last_token = torch.where(tile > 0, slot, 0).amax(1)
    token = torch.searchsorted(within, (target.squeeze(1) - before)[:, None], right=True).squeeze(1)
    return block * tile.shape[1] + torch.minimum(token, last_token)


class StopCheck:
    """True once a row's *generated* tokens contain a stop string (decoding only their tail)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        # Enough trailing tokens to hold any stop string ending at the newest one (a token is at
        # least one character, but special tokens decode to nothing).
        self.window = max(len(s) for s in stop) + 4

    def __call__(self, gen: list[int]) -> bool:
        tail = self.tokenizer.decode(gen[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop)

    def kept(self, gen: Sequence[int]) -> int:
        """How many of ``gen``'s tokens a generation that checked after every token would have
        written: up to the one that completes the first stop string, else all of them."""
        gen = list(gen)
        text = self.tokenizer.decode(gen, skip_special_tokens=True)
        if not any(s in text for s in self.stop):
            return len(gen)
        return next((k for k in range(1, len(gen) + 1) if self(gen[:k])), len(gen))


def _stop_criteria(tokenizer: Any, stop: Sequence[str], prompt_width: int) -> Any:
    """``StopCheck`` as a ``generate`` stopping criterion: a row stops once its *generated* text
    contains a stop string, as vLLM and OpenAI servers do. transformers' own ``stop_strings`` also
    match across the prompt's end, so a reply that starts with a newline after a template's
    "assistant\n" would stop at once."""
    import torch
    from transformers import StoppingCriteria

    check = StopCheck(tokenizer, stop)

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
            return torch.tensor([check(row) for row in input_ids[:, prompt_width:].tolist()],
                                device=input_ids.device)

    return StopStrings()


@functools.cache
def _slab_layer_class() -> type:
    """``DynamicLayer`` with its keys and values in one preallocated slab per layer.

    ``DynamicLayer`` concatenates every new token onto the whole cache, copying it at each step
    of each layer (a sixth of a 32-row decoding turn on a 2-core CPU); here a step writes one
    position in place and hands the model views of the filled part (measured: a decode step at
    32 rows and 500 positions went from 156 to 120 ms, the same logits).

    The filled part is ``slab[:rows, :, start:start + length]``. Rows leave and join in place
    (``batch_select_indices`` copies only the rows that change slots; ``concat`` writes the new
    rows into spare ones, padding on the left, while the slab has room): a stream's batch
    changes rows every few steps, and copying the whole slab each time took a seventh of its
    run. Cutting leading padding only moves ``start``. Without room the slab is rebuilt (one
    copy), with ``row_capacity`` rows and some room on both sides of the filled part.

    Padding is never written: a slab starts as zeros and holds only zeros and keys and values
    once written, all finite, which attention weighs 0 (masked). On a CPU a slab is an
    anonymous mapping of its own (``_zeros``): a page takes memory only once written, and as a
    row takes a slot the pages in front of its first position go back (``_trim``), so a row's
    memory is its own positions, not the longest row's — rows are written and moved from their
    first position on (``firsts``: each row's first, from the batch's mask). Pages behind it are
    written over, not handed back and taken again: a joining row mostly covers its slot's last
    one. On 192 dialogues of ``simulate`` at 64 rows the slab's filled part peaked at 1.5 GiB,
    nearly half of it padding; all 699 example trajectories peaked at 2.60 GiB RSS, 3.94 before.
    """
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        def __init__(self, capacity: int, row_capacity: int = 0) -> None:
            super().__init__()
            self.capacity, self.row_capacity = capacity, row_capacity
            self.rows = self.start = self.length = 0
            self._maps: list[Any] = []  # the slab's own mappings (a CPU's); none for ``spare`` views

        def allocate(self, rows: int, keys: Any, values: Any, filled: int = 0, start: int = 0,
                     width: int | None = None) -> tuple[Any, Any]:
            """A slab for ``rows`` rows (room for ``row_capacity``) shaped like ``keys``/``values``
            ([heads, tokens, dim] or batched), ``width`` positions wide (default ``capacity``),
            its positions ``start:start + filled`` (zeros) counted as cached; returns views of
            those positions to fill in."""
            self.device = keys.device
            width = max(width or self.capacity, start + filled)
            shape = (max(rows, self.row_capacity), keys.shape[-3], width, keys.shape[-1])
            # Zeros: padding must be finite (attention gives it weight 0, and 0 * NaN is NaN).
            self.slab_keys, key_map = _zeros(shape, keys)
            self.slab_values, value_map = _zeros(shape[:3] + (values.shape[-1],), values)
            self._maps = [m for m in (key_map, value_map) if m is not None]
            self.is_initialized, self.rows, self.start, self.length = True, rows, start, filled
            self._views()
            return self.keys, self.values

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            front = self.front
            self.allocate(key_states.shape[0], key_states, value_states, start=front, width=front + self.capacity)

        @property
        def front(self) -> int:
            """Positions a slab meant to take rows in later (``row_capacity`` set) keeps free
            before its filled part: rows that join may be longer than these."""
            return self.capacity // 8 if self.row_capacity else 0

        def _views(self) -> None:
            end = self.start + self.length
            self.keys = self.slab_keys[:self.rows, :, self.start:end]
            self.values = self.slab_values[:self.rows, :, self.start:end]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            end = self.start + self.length + new
            if end > self.slab_keys.shape[2]:  # ``_Batch.step`` makes room first (``grow``)
                self.grow(new)
                end = self.start + self.length + new
            self.slab_keys[:self.rows, :, end - new:end] = key_states
            self.slab_values[:self.rows, :, end - new:end] = value_states
            self.length += new
            self._views()
            return self.keys, self.values

        def grow(self, new: int, firsts: list[int] | None = None) -> None:
            """A new slab with room for ``new`` more positions and a quarter of the old one's
            width to spare (a stream's filled part moves right as its batch narrows from the
            front), copying only each row's positions from its first (``firsts``, in the view;
            default all)."""
            self._rebuild([(self.keys, self.values)], self.length + new + self.slab_keys.shape[2] // 4,
                          None if firsts is None else [firsts])

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            if self.is_initialized:
                self.length = self.keys.shape[-2]

        def reset(self) -> None:
            self.length = 0
            super().reset()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self._rebuild([(self.keys.repeat_interleave(repeats, dim=0),
                                self.values.repeat_interleave(repeats, dim=0))], self.slab_keys.shape[2])

        def batch_select_indices(self, indices: Any, front: int = 0) -> None:
            """Keep rows ``indices`` (in that order), without the first ``front`` positions. In
            place: only rows whose slot changes are copied (``move_rows``, which ``_Batch.keep``
            calls directly: it fills the slots of leaving rows with the last ones)."""
            if not self.is_initialized:
                return
            import torch

            order = torch.as_tensor(indices, device=self.device)
            if len(order) > self.slab_keys.shape[0]:  # rows repeated beyond the slab's
                self._rebuild([(self.keys[order, :, front:], self.values[order, :, front:])], self.slab_keys.shape[2])
                return
            moved = torch.nonzero(order != torch.arange(len(order), device=self.device)).squeeze(-1)
            self.move_rows(moved, order[moved], len(order), front)

        def move_rows(self, dst: Any, src: Any, rows: int, front: int = 0, firsts: list[int] | None = None) -> None:
            """Rows ``src`` copied into slots ``dst`` (the source rows are gathered first; with
            ``firsts``, each source row's first position in the view, only its positions from
            there), the first ``rows`` kept, without the first ``front`` positions. A slot's pages
            in front of the row moved in go back (``_trim``)."""
            first = self.start
            self.start, self.length = self.start + front, self.length - front
            end = self.start + self.length
            if len(dst):
                if firsts is None:
                    for slab in (self.slab_keys, self.slab_values):
                        slab[dst, :, self.start:end] = slab[src, :, self.start:end]
                else:
                    for d, s, f in zip(dst.tolist(), src.tolist(), firsts, strict=True):
                        low = max(first + f, self.start)
                        self._trim(d, low)
                        for slab in (self.slab_keys, self.slab_values):
                            slab[d, :, low:end] = slab[s, :, low:end]
            self.rows = rows
            self._views()

        def _trim(self, slot: int, position: int) -> None:
            """The pages of slab row ``slot`` before ``position`` (in every head) go back to the
            system and read as zeros after: a row taking the slot starts there. Only slabs of
            their own mapping (a CPU's); only whole pages."""
            import mmap

            page = mmap.PAGESIZE
            for slab, m in zip((self.slab_keys, self.slab_values), self._maps, strict=False):
                size = slab.element_size()
                for head in range(slab.shape[1]):
                    low = slab[slot, head].data_ptr() - slab.data_ptr()
                    high = (low + position * slab.stride(2) * size) // page * page
                    low = -(-low // page) * page
                    if high > low:
                        m.madvise(mmap.MADV_DONTNEED, low, high - low)

        def spare(self, rows: int, cached: int, fed: int, firsts: list[int] | None = None) -> Any:
            """A layer on the next ``rows`` spare rows of this slab (a view: it writes here),
            holding ``cached`` positions now (to be filled) and ``cached + fed`` once a
            forward has fed it, then ending where this layer's rows end: ``concat`` takes its
            rows in without a copy. None where the slab lacks the rows or the positions in front.
            ``firsts``: each row's first position of its own (in the view): the slot's pages in
            front go back."""
            start = self.start + self.length - cached - fed
            if not self.is_initialized or self.rows + rows > self.slab_keys.shape[0] or start < 0:
                return None
            for row, first in enumerate(firsts or ()):
                self._trim(self.rows + row, start + first)
            layer = type(self)(self.capacity)
            layer.device = self.device
            # Views: the slots stay this slab's (its mapping hands them back).
            layer.slab_keys = self.slab_keys[self.rows:self.rows + rows]
            layer.slab_values = self.slab_values[self.rows:self.rows + rows]
            layer.is_initialized, layer.rows, layer.start, layer.length = True, rows, start, cached
            layer._views()
            return layer

        def concat(self, other: Any, capacity: int, row_capacity: int = 0,
                   firsts: tuple[list[int], list[int]] | None = None) -> None:
            """``other``'s rows after these, right-aligned at the longer (the shorter side
            left-padded): in place where the slab has the spare rows and positions, else a new
            slab of ``row_capacity`` rows and ``capacity`` positions. Rows of ``spare``
            (already in place, ending where these end) join without a copy. ``firsts``: each
            row's first position in its view (these, ``other``'s): only those on are copied."""
            self.row_capacity = max(self.row_capacity, row_capacity)
            rows, extra, length = self.rows, other.rows, max(self.length, other.length)
            start = self.start - (length - self.length)
            spare_rows = rows + extra <= self.slab_keys.shape[0]
            # Rows ``spare`` pre-filled in place: already where they join, their padding zeroed.
            in_place = (spare_rows and other.start + other.length == self.start + self.length
                        and other.slab_keys.data_ptr() == self.slab_keys[rows].data_ptr())
            # Room for the tokens still to come is not needed now: ``_Batch.step`` makes it (``grow``).
            if not (in_place or (spare_rows and start >= 0 and start + length < self.slab_keys.shape[2])):
                self._rebuild([(self.keys, self.values), (other.keys, other.values)], capacity, firsts)
                return
            if not in_place:  # the positions in front of each row's stay as they are: padding
                self._write(rows, start + length - other.length, other.keys, other.values,
                            None if firsts is None else firsts[1], trim=True)
            self.rows, self.start, self.length = rows + extra, start, length
            self._views()

        def _rebuild(self, parts: list[tuple[Any, Any]], capacity: int, firsts: Any = None) -> None:
            """A new slab holding ``parts`` (the keys and values of some rows each), one after
            another, right-aligned at the longest (the others left-padded), with ``capacity``
            positions from its first and an eighth of it spare before: rows that join later
            may be longer than these. ``firsts``: per part, each row's first position (only
            those on are copied), or None."""
            length = max(keys.shape[2] for keys, _ in parts)
            self.capacity = max(capacity, length)
            front = self.capacity // 8
            self.allocate(sum(keys.shape[0] for keys, _ in parts), *parts[0], start=front,
                          width=front + self.capacity)
            row = 0
            for i, (keys, values) in enumerate(parts):
                self._write(row, front + length - keys.shape[2], keys, values, None if firsts is None else firsts[i])
                row += keys.shape[0]
            self.length = length
            self._views()

        def _write(self, row: int, at: int, keys: Any, values: Any, firsts: list[int] | None,
                   trim: bool = False) -> None:
            """Rows ``keys``/``values`` ([rows, heads, positions, dim]) written into slab rows from
            ``row``, their position 0 at ``at``: with ``firsts`` (each row's first position of its
            own), only each row's positions from there, so its padding is never written (and,
            with ``trim``, the slot's pages in front go back)."""
            rows, width = keys.shape[0], keys.shape[2]
            if firsts is None:
                self.slab_keys[row:row + rows, :, at:at + width] = keys
                self.slab_values[row:row + rows, :, at:at + width] = values
                return
            for r, first in enumerate(firsts):
                if trim:
                    self._trim(row + r, at + first)
                self.slab_keys[row + r, :, at + first:at + width] = keys[r, :, first:]
                self.slab_values[row + r, :, at + first:at + width] = values[r, :, first:]

        def reorder_cache(self, beam_idx: Any) -> None:
            self.batch_select_indices(beam_idx.to(self.device))

    return SlabLayer


def _zeros(shape: tuple[int, ...], like: Any) -> tuple[Any, Any]:
    """A tensor of zeros shaped ``shape`` (``like``'s dtype and device) and, on a CPU, the
    anonymous mapping it lives in (else None): its pages take memory only once written and go
    back with ``madvise`` (a slab's padding never written holds none; ``SlabLayer``). Huge pages
    are off for it: one written position would take 2 MiB."""
    import mmap

    import torch

    count = math.prod(shape)
    if like.device.type != "cpu" or not count or not hasattr(mmap, "MAP_ANONYMOUS"):
        return like.new_zeros(shape), None
    # Private: pages handed back read as zeros after (a shared mapping keeps them, out of RSS).
    m = mmap.mmap(-1, count * like.element_size(), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(AttributeError, OSError):  # no such advice on this system
        m.madvise(mmap.MADV_NOHUGEPAGE)
    return torch.frombuffer(m, dtype=like.dtype, count=count).view(shape), m


def _slab_cache(config: Any, capacity: int, row_capacity: int = 0) -> Any:
    """A ``DynamicCache`` whose layers are slab layers of ``capacity`` positions and room for
    ``row_capacity`` rows (models with a plain key/value cache only: ``has_plain_kv_cache``)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.layers = [_slab_layer_class()(capacity, row_capacity) for _ in cache.layers]
    return cache


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
