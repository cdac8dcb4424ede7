"""Every provider the lean path does not serve (anthropic/, gemini/, ollama/, ...), through LiteLLM.

LiteLLM is imported on the first call only, in a worker thread (the import costs seconds and
~180 MB, and must not block the event loop of a service that is serving other debates), with
LITELLM_LOCAL_MODEL_COST_MAP=True so it never fetches its price map. Its own retries are off:
the router owns retries and fallbacks; the watchdog owns timeouts. Keys: LiteLLM reads each
provider's usual environment variable, or an endpoint's `api_key_env` is passed through.

What LiteLLM hands over is read as the lean reader reads its chunks: `delta.reasoning_content`
(where LiteLLM puts DeepSeek's and vLLM's reasoning, OpenRouter's `reasoning`, Anthropic's
thinking) becomes ReasoningDelta; the usage is the last chunk's, read into our normal form by
conventions.py (LiteLLM's Anthropic usage counts cache reads and writes inside prompt_tokens,
writes as `cache_creation_tokens`; its Gemini usage adds the thoughts to completion_tokens).
For an OpenAI-compatible endpoint, every raw chunk is checked before LiteLLM reads it
(`_CheckedChunks`): LiteLLM drops a content given as typed blocks, and drops, stalls on or
wraps in an APIConnectionError other shapes it cannot read; here blocks are read and any other
shape is a ProviderBadChunk, as on the lean path. Every error after the provider answered 200
is billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    LLMError,
    ProviderError,
    RateLimited,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
)
from services.common.llm.guard import (
    ProviderBadChunk,
    Watchdog,
    begin_call,
    block_events,
    reported_usage,
    safe_text,
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


def _reported_usage(stream: Any) -> Mapping[str, object] | None:
    """The usage the provider reported, as a mapping, or None. It is the last chunk's usage (each
    provider's usage there is cumulative; LiteLLM's aggregate recomputes total_tokens, which
    normalise_usage needs to tell conventions apart). LiteLLM puts a usage of its own on the
    last chunk it yields when the provider sent none, but its log of the chunks (`stream.chunks`)
    keeps what the provider sent; if that log goes away in a later version, usage is
    estimated, never invented."""
    chunks = getattr(stream, "chunks", None)
    if not isinstance(chunks, list):
        return None
    for chunk in reversed(chunks):
        usage = getattr(chunk, "usage", None)
        if usage is None:
            continue
        if isinstance(usage, Mapping):
            return usage
        dump = getattr(usage, "model_dump", None)
        if callable(dump):
            with contextlib.suppress(Exception):  # a usage object LiteLLM could not dump is not one
                dumped = dump()
                if isinstance(dumped, Mapping):
                    return dumped
        log.warning("%s: usage of type %s could not be read; estimated", getattr(stream, "model", ""), type(usage))
        return None
    return None


def _error_from(litellm: Any, error: Exception, state: _StreamState, secrets: Sequence[str], billed: bool) -> LLMError:
    model, partial_text, partial_reasoning = state.model, "".join(state.parts), "".join(state.reasoning)
    status = getattr(error, "status_code", None)
    message = safe_text(f"{model}: {type(error).__name__}: {str(error)[:400]}", secrets)
    if isinstance(error, litellm.RateLimitError) or status == 429:
        headers = (
            getattr(error, "litellm_response_headers", None)
            or getattr(getattr(error, "response", None), "headers", None)
            or {}
        )
        return RateLimited(
            message,
            model=model,
            partial_text=partial_text,
            partial_reasoning=partial_reasoning,
            retry_after=retry_after_seconds(headers.get("retry-after")),
            billed=billed,
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
    return ProviderError(
        message,
        model=model,
        partial_text=partial_text,
        partial_reasoning=partial_reasoning,
        retryable=retryable and not partial_text,
        billed=billed,
    )


def _field(value: object, name: str) -> object:
    """A field of a chunk part, whether the SDK built an object or left a dict."""
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


class _StreamState:
    """One LiteLLM stream: what it streamed, whether the provider accepted the call, and the
    ProviderBadChunk of a raw chunk we could not read (LiteLLM wraps exceptions raised under it
    in its own types; this one is raised as it is)."""

    __slots__ = ("accepted", "bad", "finish_reason", "model", "parts", "reasoning", "secrets", "waiting", "watchdog")

    def __init__(self, model: str, watchdog: Watchdog, secrets: Sequence[str]):
        self.model = model
        self.watchdog = watchdog
        self.secrets = secrets
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.accepted = False  # the provider answered 200
        self.bad: ProviderBadChunk | None = None
        self.finish_reason: object = None
        self.waiting = True

    def events(self, chunk: Any) -> list[TextDelta | ReasoningDelta]:
        """The events of one of LiteLLM's chunks (ModelResponseStream): the delta's content (a
        string, or typed blocks) and its reasoning_content (DeepSeek's, vLLM's, OpenRouter's
        `reasoning`, Anthropic's thinking: LiteLLM maps them all there)."""
        choices = chunk.choices
        if not choices:
            return []
        choice = choices[0]
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
            self.arrived()
        delta = choice.delta
        if delta is None:
            return []
        content = delta.content
        thought = getattr(delta, "reasoning_content", None)
        if not content and not thought:
            return []
        self.arrived()
        events: list[TextDelta | ReasoningDelta] = []
        if thought:
            if type(thought) is not str:
                raise self.bad_chunk(f"reasoning of type {type(thought).__name__}")
            events.append(ReasoningDelta(thought))
        if type(content) is str:
            events.append(TextDelta(content))
        elif content:
            try:
                events += block_events(content)
            except ValueError as error:
                raise self.bad_chunk(str(error)) from None
        for event in events:
            (self.parts if type(event) is TextDelta else self.reasoning).append(event.text)
        return events

    def arrived(self) -> None:
        """A chunk carried something of the call: the first-token wait is over."""
        if self.waiting:
            self.waiting = False
            self.watchdog.first_token()

    def bad_chunk(self, what: str) -> ProviderBadChunk:
        self.bad = ProviderBadChunk(
            safe_text(f"{self.model}: the provider streamed {what}", self.secrets),
            model=self.model,
            partial_text="".join(self.parts),
            partial_reasoning="".join(self.reasoning),
            retryable=what.endswith("not JSON") and not self.parts,
            billed=True,
        )
        return self.bad

    def check_raw(self, chunk: object) -> None:
        """A raw chunk of an OpenAI-compatible endpoint, before LiteLLM reads it: content given
        as typed blocks becomes the string (and reasoning) LiteLLM reads (it drops a list); a
        shape LiteLLM would drop or trip on is a ProviderBadChunk."""
        if not hasattr(chunk, "choices"):
            raise self.bad_chunk(f"a chunk of type {type(chunk).__name__}, not an object")
        usage = getattr(chunk, "usage", None)
        if usage is not None and not _is_object(usage):
            raise self.bad_chunk("usage that is not an object")
        choices = getattr(chunk, "choices", None)
        if not choices:
            return
        if not isinstance(choices, list):
            raise self.bad_chunk("choices that are not a list")
        if not _is_object(choices[0]):
            raise self.bad_chunk("a choice that is not an object")
        delta = _field(choices[0], "delta")
        if delta is None:
            return
        if not _is_object(delta):
            raise self.bad_chunk("a delta that is not an object")
        thought = _field(delta, "reasoning_content") or _field(delta, "reasoning")
        if thought and type(thought) is not str:
            raise self.bad_chunk(f"reasoning of type {type(thought).__name__}")
        content = _field(delta, "content")
        if not content or type(content) is str:
            return
        try:
            blocks = block_events(content)
        except ValueError as error:
            raise self.bad_chunk(str(error)) from None
        text = "".join(e.text for e in blocks if type(e) is TextDelta) or None
        reasoning = "".join(e.text for e in blocks if type(e) is ReasoningDelta)
        _set(delta, "content", text)
        if reasoning:
            _set(delta, "reasoning_content", f"{thought or ''}{reasoning}")


def _is_object(value: object) -> bool:
    """A JSON object as the SDK left it: a dict or a model it built (not a string, number or list)."""
    return isinstance(value, dict) or hasattr(value, "__dict__")


def _set(value: object, name: str, to: object) -> None:
    if isinstance(value, dict):
        value[name] = to
    else:
        setattr(value, name, to)


class _CheckedChunks:
    """LiteLLM's raw chunk stream of an OpenAI-compatible endpoint (the openai SDK's AsyncStream),
    with every chunk checked (`_StreamState.check_raw`) before LiteLLM reads it. Closing closes
    the raw stream (its HTTP response)."""

    def __init__(self, raw: Any, state: _StreamState):
        self._raw = raw
        self._state = state
        self._next = raw.__anext__ if hasattr(raw, "__anext__") else raw.__aiter__().__anext__

    def __aiter__(self) -> _CheckedChunks:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._next()
        except ValueError:  # json.JSONDecodeError under the SDK's SSE reader
            raise self._state.bad_chunk("a chunk that is not JSON") from None
        self._state.check_raw(chunk)
        return chunk

    async def aclose(self) -> None:
        close = getattr(self._raw, "aclose", None) or getattr(self._raw, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result

    def close(self) -> Any:
        """The raw stream's own close (LiteLLM's sync close deals with what it returns)."""
        close = getattr(self._raw, "close", None)
        return close() if close is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _answered(stream: Any) -> bool:
    """Whether LiteLLM's stream holds the provider's 200 response (some providers' calls are made
    on the first read, so a stream object alone does not say it)."""
    return stream is not None and getattr(stream, "completion_stream", None) is not None


class LiteLLMProvider:
    def __init__(self, settings: LLMSettings, *, api_base: str | None = None, api_key_env: str | None = None):
        self.settings = settings
        self.api_base = api_base
        self.api_key_env = api_key_env

    def _kwargs(self, request: CompletionRequest, key: str | None) -> dict[str, Any]:
        model = request.model
        if self.api_base is not None:  # an OpenAI-compatible endpoint: "<endpoint>/<model>" -> "openai/<model>"
            model = "openai/" + model.split("/", 1)[1]
        kwargs: dict[str, Any] = {
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
        """The call's events through LiteLLM: TextDelta, ReasoningDelta (LiteLLM's
        reasoning_content: DeepSeek, vLLM, OpenRouter, Anthropic thinking, Gemini thoughts), one
        Completion. Raises typed LLMErrors only; after the provider answered 200 they are billed."""
        litellm = _litellm or await asyncio.to_thread(load_litellm)
        model = request.model
        key, secrets, watchdog = begin_call(self.settings, self.api_key_env)
        state = _StreamState(model, watchdog, secrets)
        stream = None
        try:
            watchdog.begin()
            try:
                stream = await litellm.acompletion(**self._kwargs(request, key))
                if self.api_base is not None and _answered(stream):
                    stream.completion_stream = _CheckedChunks(stream.completion_stream, state)
                chunks = stream.__aiter__()
                while True:
                    watchdog.begin()
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        watchdog.end()
                    state.accepted = True
                    for event in state.events(chunk):
                        yield event
            except asyncio.CancelledError:
                if watchdog.timed_out():
                    raise watchdog.error(
                        model,
                        "".join(state.parts),
                        "".join(state.reasoning),
                        billed=state.accepted or _answered(stream),
                    ) from None
                raise
            except LLMError:
                raise
            except Exception as error:  # noqa: BLE001 - LiteLLM maps every provider's errors to its own types
                if state.bad is not None:
                    raise state.bad from None
                billed = state.accepted or _answered(stream)
                raise _error_from(litellm, error, state, secrets, billed) from None
            finally:
                watchdog.end()
        finally:
            watchdog.close()
            if stream is not None and hasattr(stream, "aclose"):
                with contextlib.suppress(Exception):  # closing a finished or broken stream
                    await stream.aclose()
        yield Completion(
            model=model,
            usage=reported_usage(
                _reported_usage(stream), model, request.messages, "".join(state.parts), "".join(state.reasoning)
            ),
            finish_reason="length" if state.finish_reason == "length" else "stop",
        )
