"""The one small interface through which the orchestrator and the judge reach models.

    async for event in llm.stream(CompletionRequest(model="sim/debater", messages=[...])):
        if isinstance(event, TextDelta): ...      # zero or more, in order: the answer
        elif isinstance(event, ReasoningDelta): ... # zero or more: reasoning text, never the answer
        elif isinstance(event, Completion): ...   # exactly one, last: usage and finish reason

    completion = await stream_to(llm, request, sink)   # the same, each delta handed to sink(event)

Reasoning text (DeepSeek's and vLLM's `reasoning_content`, Anthropic's thinking blocks) is
kept apart from the answer: a debater's speech, the transcript the next debater sees and the
judge's input are made of TextDelta only. It is still billed, so a consumer that settles a
call cut short counts it (see `LLMError.billed`).

Failures are typed `LLMError`s (subclasses of the domain errors, so a servicer maps them to a
gRPC status without knowing about models). Domain code never sees LiteLLM or httpx.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from services.common.errors import DomainError, FailedPrecondition, Unavailable
from services.common.usage import Usage


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        message = {"role": self.role, "content": self.content}
        if self.name:
            message["name"] = self.name
        return message


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 512
    temperature: float | None = None
    # Seed for simulated models (and providers that honour one).
    seed: int | None = None
    # Opaque key for logs and idempotency, e.g. "debates/x/rounds/1/turns/alice/attempts/1".
    request_id: str = ""


class TextDelta(msgspec.Struct, frozen=True, gc=False):
    """Answer text streamed by a model. (A frozen msgspec Struct rather than a frozen dataclass:
    the same value, equality, hash and immutability, built in C in about 50 ns against the
    dataclass's 330, once per streamed token.)"""

    text: str


class ReasoningDelta(msgspec.Struct, frozen=True, gc=False):
    """Reasoning text streamed before or beside the answer: billed, never part of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The last event of a stream."""

    model: str  # the model that answered (a fallback may differ from the one asked for)
    usage: Usage
    finish_reason: str = "stop"  # "stop" | "length"
    simulated: bool = False


StreamEvent = TextDelta | ReasoningDelta | Completion


class LLMClient(Protocol):
    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]: ...


# Takes each TextDelta and ReasoningDelta of a pushed stream, in order (see `stream_to`).
DeltaSink = Callable[[TextDelta | ReasoningDelta], object]


class PushClient(Protocol):
    """A client that can also push a stream's deltas to a sink (the router, the lean providers)."""

    async def stream_to(self, request: CompletionRequest, sink: DeltaSink) -> Completion: ...


class LLMError(DomainError):
    """A model call failed. `partial_text` and `partial_reasoning` are what streamed before the
    failure (void as speech, but billed). `billed` is True when the provider had accepted the
    call (answered 200) before it failed: it bills at least the prompt, so the caller records
    an estimate of the call rather than dropping it."""

    code = "UNAVAILABLE"
    reason = "LLM_ERROR"

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        partial_text: str = "",
        retryable: bool = False,
        partial_reasoning: str = "",
        billed: bool = False,
        **kwargs,
    ):
        super().__init__(message, **kwargs)
        self.model = model
        self.partial_text = partial_text
        self.partial_reasoning = partial_reasoning
        self.retryable = retryable
        self.billed = billed or bool(partial_text or partial_reasoning)


class ModelNotAllowed(LLMError):
    code = FailedPrecondition.code
    reason = "MODEL_NOT_ALLOWED"


class ProviderError(LLMError):
    code = Unavailable.code
    reason = "PROVIDER_ERROR"


class RateLimited(ProviderError):
    reason = "PROVIDER_RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)
        # Seconds the provider asked us to wait (its Retry-After header), if it said.
        self.retry_after = retry_after


class UnknownModel(LLMError):
    """An allowed name that nothing serves, e.g. `sim/judge` before the judge registered it."""

    code = FailedPrecondition.code
    reason = "MODEL_UNKNOWN"


class ProviderTimeout(LLMError):
    """No first token within the first-token timeout."""

    code = "DEADLINE_EXCEEDED"
    reason = "PROVIDER_TIMEOUT"


class StreamStalled(LLMError):
    """The inter-chunk watchdog cut a stream that stopped sending."""

    code = "DEADLINE_EXCEEDED"
    reason = "PROVIDER_STALLED"


async def stream_to(llm: LLMClient, request: CompletionRequest, sink: DeltaSink) -> Completion:
    """The stream's deltas handed to `sink`, in order, and its Completion returned: the same
    events as `llm.stream(request)`, without an async generator step per delta where `llm` can
    push (`PushClient`: the lean providers call `sink` inside the network read's own callback,
    and the calling task wakes once, at the end). Raises the stream's LLMError, or what `sink`
    raised (the stream is then closed); a stream that ends without a Completion is an LLMError
    (PROVIDER_NO_COMPLETION, retryable). `sink` must not await: it runs outside the task."""
    push = getattr(llm, "stream_to", None)
    if push is not None:
        completion: Completion = await push(request, sink)
        return completion
    result: Completion | None = None
    async with aclosing(llm.stream(request)) as events:
        async for event in events:
            if type(event) is Completion or isinstance(event, Completion):
                result = event
            else:
                sink(event)
    if result is None:
        raise LLMError(
            f"{request.model} ended its stream without usage",
            model=request.model,
            reason="PROVIDER_NO_COMPLETION",
            retryable=True,
        )
    return result


@dataclass
class CollectedCompletion:
    text: str
    completion: Completion
    deltas: list[str] = field(default_factory=list)
    reasoning: str = ""


class StreamReader:
    """Reads one stream to its end, keeping what it streamed so far: a caller whose read is cut
    short (cancelled, or failed) still knows the answer text and the reasoning the provider
    billed (`text`, `reasoning`, `streamed`)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.reasoning_parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    @property
    def streamed(self) -> bool:
        return any(self.parts) or any(self.reasoning_parts)

    def _take(self, event: TextDelta | ReasoningDelta) -> None:
        (self.parts if type(event) is TextDelta else self.reasoning_parts).append(event.text)

    def _no_completion(self, request: CompletionRequest) -> ProviderError:
        return ProviderError(
            f"stream for {request.model} ended without a completion",
            model=request.model,
            partial_text=self.text,
            partial_reasoning=self.reasoning,
        )

    async def read(self, llm: LLMClient, request: CompletionRequest, *, push: bool = False) -> Completion:
        """The stream's Completion; raises its LLMError (ProviderError when it ends without one).
        `push`: read through `stream_to` rather than iterating `llm.stream` (the same result)."""
        if push:
            try:
                return await stream_to(llm, request, self._take)
            except LLMError as error:
                if error.reason != "PROVIDER_NO_COMPLETION":
                    raise
                raise self._no_completion(request) from None
        completion: Completion | None = None
        async for event in llm.stream(request):
            if isinstance(event, TextDelta | ReasoningDelta):
                self._take(event)
            else:
                completion = event
        if completion is None:
            raise self._no_completion(request)
        return completion


async def collect(llm: LLMClient, request: CompletionRequest, *, push: bool = False) -> CollectedCompletion:
    """Reads a whole stream: its answer text, its reasoning text apart, and its final Completion
    (for callers that need no deltas). Raises the stream's LLMError. `push`: through `stream_to`
    rather than `llm.stream` (the same result)."""
    reader = StreamReader()
    completion = await reader.read(llm, request, push=push)
    return CollectedCompletion(reader.text, completion, reader.parts, reader.reasoning)
