"""OpenAI-compatible backend: ``vllm serve``, SGLang, ``transformers serve`` or a hosted API.

Requests of one batch go out concurrently, at most ``max_concurrency`` at a time. The official
``openai`` client does the HTTP: timeouts, and retries with exponential backoff on connection
errors, 408/409/429 and 5xx (``max_retries``). The key comes from ``IRTK_API_KEY`` or
``OPENAI_API_KEY`` (local servers accept any).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from irtk.errors import BackendError, UsageError
from irtk.generation import Conversation, Generation, SamplingParams, continues


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 4,
        **_: Any,
    ) -> None:
        base_url = base_url or os.environ.get("IRTK_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise UsageError("--backend openai needs --base-url (or IRTK_BASE_URL), e.g. http://127.0.0.1:8000/v1")
        self.model = model
        self.base_url = base_url
        self.api_key = api_key or os.environ.get("IRTK_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_concurrency = max(1, max_concurrency)
        # Conversations per chat call worth sending: as many as go out at once.
        self.batch_size = self.max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.continue_final_message = True  # turned off once the server rejects the extension

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        return asyncio.run(self._chat_all(list(conversations), params))

    async def _chat_all(self, conversations: list[Conversation], params: SamplingParams) -> list[Generation]:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                    timeout=self.timeout, max_retries=self.max_retries)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(i: int, conv: Conversation) -> Generation:
            async with gate:
                return await self._chat_one(client, conv, params, i)

        try:
            return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(conversations))))
        finally:
            await client.close()

    async def _chat_one(self, client: Any, conv: Conversation, params: SamplingParams, i: int) -> Generation:
        import openai

        # Standard fields always go out explicitly; vLLM/SGLang extensions only when they are
        # not neutral, since strict servers (transformers serve, hosted APIs) reject unknown fields.
        extra: dict[str, Any] = {}
        if params.repetition_penalty != 1.0:
            extra["repetition_penalty"] = params.repetition_penalty
        if params.top_k:
            extra["top_k"] = params.top_k
        # vLLM/SGLang continue a trailing assistant message when asked. A server that rejects the
        # fields is asked again without them and writes a new message instead, which callers
        # that parse the reply (build.py) tolerate.
        continuing = continues(conv) and self.continue_final_message
        if continuing:
            extra.update(continue_final_message=True, add_generation_prompt=False)
        omit = openai.NOT_GIVEN
        try:
            resp = await client.chat.completions.create(
                model=self.model,
                messages=conv,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) or omit,
                # One seed per request: equal conversations in a batch still sample independently.
                seed=omit if params.seed is None else params.seed + i,
                logprobs=params.logprobs or omit,
                extra_body=extra or None,
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            if not continuing:
                raise BackendError(f"{self.base_url} answered {e.status_code}: {e.message}") from None
            self.continue_final_message = False
            return await self._chat_one(client, conv, params, i)
        except openai.APIConnectionError as e:
            raise BackendError(f"cannot reach OpenAI-compatible server at {self.base_url}: {e}") from None
        except openai.APIStatusError as e:
            raise BackendError(f"{self.base_url} answered {e.status_code}: {e.message}") from None
        choice = resp.choices[0]
        usage = resp.usage
        logprobs = tokens = None
        if params.logprobs and choice.logprobs and choice.logprobs.content:
            logprobs = [t.logprob for t in choice.logprobs.content]
            tokens = [t.token for t in choice.logprobs.content]
        return Generation(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=_cached_tokens(usage),
            finish_reason=choice.finish_reason or "stop",
            logprobs=logprobs,
            tokens=tokens,
        )


def _cached_tokens(usage: Any) -> int:
    """``usage.prompt_tokens_details.cached_tokens`` where the server reports it (vLLM, OpenAI)."""
    details = getattr(usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", 0) or 0)
