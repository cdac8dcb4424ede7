"""Every provider the lean path does not serve (anthropic/, gemini/, ollama/, ...), through LiteLLM.

LiteLLM is imported on the first call only, in a worker thread (the import costs seconds and
~180 MB, and must not block the event loop of a service that is serving other debates), with
LITELLM_LOCAL_MODEL_COST_MAP=True so it never fetches its price map. Its own retries are off:
the router owns retries and fallbacks; the watchdog owns timeouts. Keys: LiteLLM reads each
provider's usual environment variable, or an endpoint's `api_key_env` is passed through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    LLMError,
    ProviderError,
    RateLimited,
    StreamEvent,
    TextDelta,
)
from services.common.llm.guard import (
    Watchdog,
    call_secrets,
    estimated_usage,
    safe_text,
    usage_from_openai,
)
from services.common.llm.openai_compat import retry_after_seconds
from services.common.llm.settings import LLMSettings

log = logging.getLogger(__name__)

_litellm: Any = None
_import_lock = threading.Lock()


def load_litellm() -> Any:
    """Import and configure LiteLLM once (blocking: call it from a thread)."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            import litellm

            litellm.suppress_debug_info = True
            litellm.drop_params = True  # e.g. seed for a provider that has none
            litellm.disable_hf_tokenizer_download = True
            # Measured: these two take ~10% off LiteLLM's per-chunk CPU.
            litellm.disable_streaming_logging = True
            litellm.disable_token_counter = True
            _litellm = litellm
    return _litellm


def _reported_usage(stream: Any) -> dict | None:
    """The usage the provider reported, or None. LiteLLM puts a usage of its own on the last
    chunk when the provider sent none, so ask its log of raw chunks what the provider sent (a
    private helper of the pinned version: if it goes away, usage is estimated, never invented)."""
    try:
        from litellm.litellm_core_utils.streaming_handler import _reported_total_usage

        usage = _reported_total_usage(chunks=stream.chunks)
    except (ImportError, AttributeError, TypeError):
        return None
    return usage.model_dump() if usage is not None and hasattr(usage, "model_dump") else usage


def _error_from(litellm: Any, error: Exception, model: str, partial_text: str, secrets: Sequence[str]) -> LLMError:
    status = getattr(error, "status_code", None)
    message = safe_text(f"{model}: {type(error).__name__}: {str(error)[:400]}", secrets)
    if isinstance(error, litellm.RateLimitError) or status == 429:
        headers = (
            getattr(error, "litellm_response_headers", None)
            or getattr(getattr(error, "response", None), "headers", None)
            or {}
        )
        return RateLimited(
            message, model=model, partial_text=partial_text, retry_after=retry_after_seconds(headers.get("retry-after"))
        )
    retryable = isinstance(
        error,
        (
            litellm.Timeout,
            litellm.APIConnectionError,
            litellm.InternalServerError,
            litellm.ServiceUnavailableError,
            litellm.BadGatewayError,
        ),
    )
    retryable = retryable or (isinstance(status, int) and (status >= 500 or status in (408, 409)))
    return ProviderError(message, model=model, partial_text=partial_text, retryable=retryable and not partial_text)


class LiteLLMProvider:
    def __init__(self, settings: LLMSettings, *, api_base: str | None = None, api_key_env: str | None = None):
        self.settings = settings
        self.api_base = api_base
        self.api_key_env = api_key_env

    def _kwargs(self, request: CompletionRequest, key: str | None) -> dict:
        model = request.model
        if self.api_base is not None:  # an OpenAI-compatible endpoint: "<endpoint>/<model>" -> "openai/<model>"
            model = "openai/" + model.split("/", 1)[1]
        kwargs: dict = {
            "model": model,
            "messages": [m.as_dict() for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
            "num_retries": 0,
            "max_retries": 0,
            # A backstop only: the watchdog cuts first-token waits and stalls sooner.
            "timeout": self.settings.llm_connect_timeout
            + max(self.settings.llm_first_token_timeout, self.settings.llm_stall_timeout),
        }
        if self.api_base is not None:
            kwargs["api_base"] = self.api_base
            kwargs["api_key"] = key or "none"  # the openai client insists on a key
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.seed is not None:
            kwargs["seed"] = request.seed
        return kwargs

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        litellm = _litellm or await asyncio.to_thread(load_litellm)
        model = request.model
        key = self.settings.provider_key(self.api_key_env)
        watchdog = Watchdog(self.settings.llm_first_token_timeout, self.settings.llm_stall_timeout)
        parts: list[str] = []
        finish_reason = None
        stream = None
        try:
            watchdog.begin()
            try:
                stream = await litellm.acompletion(**self._kwargs(request, key))
                chunks = stream.__aiter__()
                while True:
                    watchdog.begin()
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        watchdog.end()
                    choices = chunk.choices
                    if choices:
                        choice = choices[0]
                        delta = choice.delta
                        content = delta.content if delta is not None else None
                        if content:
                            if not parts:
                                watchdog.first_token()
                            parts.append(content)
                            yield TextDelta(content)
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
            except asyncio.CancelledError:
                if watchdog.timed_out():
                    raise watchdog.error(model, "".join(parts)) from None
                raise
            except LLMError:
                raise
            except Exception as error:  # noqa: BLE001 - LiteLLM maps every provider's errors to its own types
                raise _error_from(litellm, error, model, "".join(parts), call_secrets(self.settings, key)) from None
            finally:
                watchdog.end()
        finally:
            watchdog.close()
            if stream is not None and hasattr(stream, "aclose"):
                with contextlib.suppress(Exception):  # closing a finished or broken stream
                    await stream.aclose()
        text = "".join(parts)
        usage = _reported_usage(stream)
        yield Completion(
            model=model,
            usage=usage_from_openai(usage) if usage else estimated_usage(model, request.messages, text),
            finish_reason="length" if finish_reason == "length" else "stop",
        )
