"""Anthropic's Messages API streamed on the lean path: the same keep-alive pool, watchdog, errors
and billing as openai_compat.py, with Anthropic's request and events.

Through LiteLLM an Anthropic chunk cost about 1.1 ms of CPU; here it is what an OpenAI-compatible
chunk costs on the lean path (tests/benchmarks/bench_stream_floor.py, docs/streaming-floor.md).
`anthropic/...` models take this path unless LLM_ANTHROPIC_LEAN is false (then LiteLLM's own
Anthropic provider, as before), against LLM_ANTHROPIC_API_BASE with ANTHROPIC_API_KEY.

The request: `POST /v1/messages` with `x-api-key` and `anthropic-version`; the system messages
joined into `system`, the others as `messages` (Anthropic merges consecutive turns of one role).

The events (each `event: <type>` then `data: {...}`), read by `_EventReader`:
- `message_start`: the input usage (`input_tokens`, and the cache reads and writes beside it);
  it says the request was accepted, not that the model has started, so it does not end the
  first-token wait (as OpenAI's role-only chunk does not);
- `content_block_start` / `content_block_delta` / `content_block_stop`: a `text_delta` is answer
  text, a `thinking_delta` reasoning (ReasoningDelta); signatures, tool input and delta types
  we do not know carry nothing we show, and are skipped;
- `message_delta`: the stop reason (`max_tokens` is our "length") and the output usage (thinking
  included), merged over the input usage: conventions.py reads the result as Anthropic bills;
- `message_stop`: the end; `ping`: nothing; `error` (e.g. overloaded_error): a billed
  ProviderError with what streamed before it, retryable while no text went out.
A payload that is not JSON, or whose fields we read are of another type, is a billed
ProviderBadChunk, as on the OpenAI-compatible path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from services.common.llm.base import CompletionRequest, DeltaSink, ProviderError, ReasoningDelta, TextDelta
from services.common.llm.guard import Watchdog, safe_text
from services.common.llm.openai_compat import OpenAICompatProvider, _ChunkReader
from services.common.llm.settings import LLMSettings

ANTHROPIC_VERSION = "2023-06-01"


class _Delta(msgspec.Struct, gc=False):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    stop_reason: str | None = None


class _Block(msgspec.Struct, gc=False):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None


class _Message(msgspec.Struct, gc=False):
    usage: dict[str, Any] | None = None


class _Event(msgspec.Struct, gc=False):
    """The fields of a Messages stream event that we read; the others are skipped unread."""

    type: str = ""
    delta: _Delta | None = None
    content_block: _Block | None = None
    message: _Message | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_decode_event = msgspec.json.Decoder(_Event).decode


class AnthropicProvider(OpenAICompatProvider):
    """Streams `anthropic/<model>` from `api_base` (…/v1/messages) as `<model>`, with the key from
    `api_key_env` (ANTHROPIC_API_KEY)."""

    path = "/v1/messages"

    def __init__(self, settings: LLMSettings, *, api_base: str, api_key_env: str | None):
        super().__init__(settings, api_base=api_base, api_key_env=api_key_env)
        self.url = api_base.rstrip("/") + self.path

    def _body(self, request: CompletionRequest) -> dict:
        model = request.model.split("/", 1)[1]
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        body: dict = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
            "stream": True,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def _headers(self, key: str | None) -> bytes:
        headers = (
            b"Content-Type: application/json\r\nAccept: text/event-stream\r\nAccept-Encoding: identity\r\n"
            b"anthropic-version: " + ANTHROPIC_VERSION.encode() + b"\r\n"
        )
        return headers + b"x-api-key: " + key.encode() + b"\r\n" if key else headers

    def _reader(self, model: str, watchdog: Watchdog, secrets: Sequence[str]) -> _ChunkReader:
        return _EventReader(model, watchdog, secrets)


class _EventReader(_ChunkReader):
    """One Messages stream's events read into our events (see the module docstring)."""

    __slots__ = ()

    def push(self, payload: bytes, sink: DeltaSink) -> None:
        for event in self.feed(payload):
            sink(event)

    def feed(self, payload: bytes) -> list[TextDelta | ReasoningDelta]:
        try:
            event = _decode_event(payload)
        except msgspec.ValidationError as error:
            raise self.bad(f"an event of unknown shape ({error})", payload) from None
        except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bytes that are not UTF-8
            raise self.bad("an event that is not JSON", payload) from None
        kind = event.type
        if kind == "content_block_delta":
            return self.block_delta(event.delta)
        if kind == "content_block_start":
            return self.block_start(event.content_block)
        if kind == "message_start":
            if event.message is not None and event.message.usage:
                self.usage = dict(event.message.usage)
        elif kind == "message_delta":
            self.message_delta(event)
        elif kind == "message_stop":
            self.ended = True
        elif kind == "error":
            raise ProviderError(
                safe_text(f"{self.model}: error in stream: {str(event.error)[:300]}", self.secrets),
                model=self.model,
                partial_text=self.text(),
                partial_reasoning=self.thought(),
                retryable=not self.parts,
                billed=True,
            )
        return []

    def block_delta(self, delta: _Delta | None) -> list[TextDelta | ReasoningDelta]:
        """A piece of a content block: answer text, reasoning, or nothing we show."""
        if delta is None:
            return []
        if delta.type == "text_delta" and delta.text:
            if self.waiting:
                self.arrived()
            self.parts.append(delta.text)
            return [TextDelta(delta.text)]
        if delta.type == "thinking_delta" and delta.thinking:
            self.arrived()
            self.reasoning.append(delta.thinking)
            return [ReasoningDelta(delta.thinking)]
        return []

    def block_start(self, block: _Block | None) -> list[TextDelta | ReasoningDelta]:
        """A content block's start, which may carry its first text."""
        if block is None:
            return []
        if block.type == "text" and block.text:
            self.arrived()
            self.parts.append(block.text)
            return [TextDelta(block.text)]
        if block.type == "thinking" and block.thinking:
            self.arrived()
            self.reasoning.append(block.thinking)
            return [ReasoningDelta(block.thinking)]
        return []

    def message_delta(self, event: _Event) -> None:
        """The stop reason and the output usage (merged over message_start's input usage)."""
        if event.delta is not None and event.delta.stop_reason:
            self.finish_reason = "length" if event.delta.stop_reason == "max_tokens" else event.delta.stop_reason
            self.arrived()
        if event.usage:
            self.usage = {**(self.usage or {}), **{k: v for k, v in event.usage.items() if v is not None}}
            self.arrived()
