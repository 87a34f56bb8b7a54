"""transformers backend: batched, left-padded ``generate`` with chat templates, CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from irtk.errors import BackendError, ModelError
from irtk.generation import Conversation, Generation, SamplingParams


def pick_device(device: str | None = None) -> str:
    """``device`` as given, else cuda, else mps, else cpu — chosen at run time, never hard-coded."""
    import torch

    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> Any:
    """bf16 where the device supports it, fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    import torch

    if dtype and dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise BackendError(f"unknown dtype {dtype!r}") from None
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.float16
    return torch.float32


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


class HFBackend:
    """Generation with transformers. ``batch_size`` bounds one ``generate`` call's batch."""

    name = "hf"

    def __init__(self, model: str, *, batch_size: int = 16, device: str | None = None,
                 dtype: str | None = None, **_: Any) -> None:
        self.model = model
        self.batch_size = max(1, batch_size)
        self.lm, self.tokenizer, self.device = load_causal_lm(model, device, dtype)

    def render(self, conversation: Conversation) -> str:
        if self.tokenizer.chat_template is None:
            # Base models without a template: plain "role: content" lines.
            lines = [f"{m['role']}: {m['content']}" for m in conversation]
            return "\n".join(lines) + "\nassistant:"
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        import torch

        prompts = [self.render(c) for c in conversations]
        if params.seed is not None:
            torch.manual_seed(params.seed)
        # Similar lengths together: less padding per micro-batch.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            for i, gen in zip(idx, self._generate([prompts[i] for i in idx], params), strict=True):
                results[i] = gen
        return results  # type: ignore[return-value]

    def _generate(self, prompts: list[str], params: SamplingParams) -> list[Generation]:
        import torch

        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
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
