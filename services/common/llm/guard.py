"""What every real-provider stream shares: the timeout watchdog, usage, and safe messages.

The watchdog times only the waits on the network. A per-chunk `asyncio.wait_for` costs a
task per chunk, and an `asyncio.timeout` around the whole generator would also time (and
cancel) the consumer's own work between chunks. Instead a reader calls `begin()` before each
network read and `end()` after it (a float and two attribute writes), and one lazily re-armed
timer cancels the reading task only if a read has been waiting longer than its limit; the
reader turns that cancellation into ProviderTimeout (no first token yet) or StreamStalled.
A push reader (its chunks read in the protocol's callback, the task waiting for the whole stream)
calls `begin()` once in its task and `refresh()` after each read.

The first-token wait ends (`first_token()`) at the first chunk that carries anything of the
call: answer text, reasoning text, a finish reason or usage. A model that reasons for a minute
before its answer is not cut while its reasoning streams; from then on the stall limit applies
between chunks. A role-only chunk (`{"role": "assistant", "content": ""}`, which servers send as
soon as they accept a request) and SSE comments (": ping") do not end it: they say nothing of a
model that is still queued or reading its prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from services.common.llm.base import (
    ChatMessage,
    LLMError,
    ProviderError,
    ProviderTimeout,
    ReasoningDelta,
    StreamStalled,
    TextDelta,
)
from services.common.llm.conventions import normalise_usage
from services.common.llm.settings import LLMSettings
from services.common.logs import redact
from services.common.tokens import count_message_tokens, count_text_tokens
from services.common.usage import Usage


class Watchdog:
    __slots__ = (
        "_first_deadline",
        "_handle",
        "_loop",
        "_reading",
        "_task",
        "fired",
        "first_token_timeout",
        "read_at",
        "stall_timeout",
        "time",
    )

    def __init__(self, first_token_timeout: float, stall_timeout: float):
        self._loop = asyncio.get_running_loop()
        self.time = self._loop.time  # the loop's clock, in seconds
        self._task: asyncio.Task | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.first_token_timeout = first_token_timeout
        self.stall_timeout = stall_timeout
        # Until the first token, the limit runs from the request, not from the last read.
        self._first_deadline: float | None = self.time() + first_token_timeout
        # The loop time the current wait began (begin(), or the last read of a pushed stream):
        # the stall limit runs from it. A push reader may set it itself (`read_at = time()`).
        self.read_at = self.time()
        self._reading = False
        self.fired = False

    def _deadline(self) -> float:
        first = self._first_deadline
        return first if first is not None else self.read_at + self.stall_timeout

    def first_token(self) -> None:
        """The first chunk of the call came: from now on the stall limit applies."""
        self._first_deadline = None
        self.close()  # the stall deadline may come before the armed first-token one
        if self._reading and self._task is not None:
            self._handle = self._loop.call_at(self._deadline(), self._fire)

    def begin(self) -> None:
        self.read_at = self.time()
        self._reading = True
        if self._handle is None:
            self._task = asyncio.current_task()
            self._handle = self._loop.call_at(self._deadline(), self._fire)

    def end(self) -> None:
        self._reading = False

    def refresh(self) -> None:
        """A read came while the task waits for the whole stream (a push reader calls this, or
        sets `read_at` to `time()` itself, from the protocol's callback, between its task's
        begin() and end()): the next read's limit runs from now. Only a timestamp: the armed
        timer, when it fires, re-arms itself for the deadline then due."""
        self.read_at = self.time()

    def _fire(self) -> None:
        self._handle = None
        if not self._reading:
            return  # re-armed by the next begin()
        deadline = self._deadline()
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self.fired = True
        if self._task is not None:
            self._task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def timed_out(self) -> bool:
        """Call on CancelledError: True if we caused it (and it is absorbed), False if it is real."""
        if not self.fired or self._task is None:
            return False
        return self._task.uncancel() == 0

    def error(self, model: str, partial_text: str, partial_reasoning: str = "", *, billed: bool = False) -> LLMError:
        """The typed error of a cut: ProviderTimeout before the first chunk, StreamStalled after.
        `billed`: the provider had answered 200 (it bills the call). Both are retryable (by the
        caller, as a new attempt: the router does not retry a billed call) while no answer text
        streamed; reasoning alone is never shown, so it does not stop a retry."""
        if self._first_deadline is not None:
            return ProviderTimeout(
                f"{model}: no first token within {self.first_token_timeout:g}s",
                model=model,
                partial_text=partial_text,
                partial_reasoning=partial_reasoning,
                retryable=True,
                billed=billed,
            )
        return StreamStalled(
            f"{model}: stream stalled, no chunk for {self.stall_timeout:g}s; cut after {len(partial_text)} characters"
            + (f" and {len(partial_reasoning)} characters of reasoning" if partial_reasoning else ""),
            model=model,
            partial_text=partial_text,
            partial_reasoning=partial_reasoning,
            retryable=not partial_text,  # a caller may try again while no speech went out
            billed=billed,
        )


class ProviderBadChunk(ProviderError):
    """The provider streamed a chunk of a shape we cannot read (content a number, choices not a
    list, a chunk that is not a JSON object...) after it had accepted the call: billed, with
    what streamed before it. Not retried by the router (billed); `retryable` says whether the
    caller may try again (False for a shape: the same request meets the same payload)."""

    reason = "PROVIDER_BAD_CHUNK"


_REASONING_BLOCKS = frozenset({"thinking", "reasoning", "reasoning_text", "summary_text"})
_SILENT_BLOCKS = frozenset({"redacted_thinking"})


def block_events(blocks: object) -> list[TextDelta | ReasoningDelta]:
    """The events of a content given as a list of typed blocks, in order: `{"type": "text",
    "text": ...}` is answer text; thinking and reasoning blocks (`{"type": "thinking",
    "thinking": "..." or [text blocks]}`, as Anthropic and Mistral send them) are reasoning;
    redacted thinking carries no text. Raises ValueError for anything else (a content that is
    not a list, a block that is not an object, an unknown type, a text that is not a string)."""
    if type(blocks) is not list:
        raise ValueError(f"content is {type(blocks).__name__}, not a string or a list of blocks")
    events: list[TextDelta | ReasoningDelta] = []
    for block in blocks:
        if not isinstance(block, dict):
            raise ValueError(f"a content block is {type(block).__name__}, not an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if type(text) is not str:
                raise ValueError(f"a text block's text is {type(text).__name__}")
            if text:
                events.append(TextDelta(text))
        elif kind in _REASONING_BLOCKS:
            value = block.get(kind, block.get("text"))
            if type(value) is list:
                value = "".join(event.text for event in block_events(value))
            if type(value) is not str:
                raise ValueError(f"a {kind} block's text is {type(value).__name__}")
            if value:
                events.append(ReasoningDelta(value))
        elif kind not in _SILENT_BLOCKS:
            raise ValueError(f"a content block of type {str(kind)[:40]!r}")
    return events


class ProviderCall(NamedTuple):
    """What one provider call starts with (`begin_call`)."""

    key: str | None  # the provider key from its environment variable; None: none is set
    secrets: tuple[str, ...]  # what the call's error text must not show (`call_secrets`)
    watchdog: Watchdog  # the call's first-token and stall timer, armed from now


def begin_call(settings: LLMSettings, api_key_env: str | None) -> ProviderCall:
    """The key, the secrets to mask and a fresh watchdog of one provider call; call it inside
    the running loop, as the call starts (the first-token limit runs from here)."""
    key = settings.provider_key(api_key_env)
    watchdog = Watchdog(settings.llm_first_token_timeout, settings.llm_stall_timeout)
    return ProviderCall(key, call_secrets(settings, key), watchdog)


def call_secrets(settings: LLMSettings, key: str | None) -> tuple[str, ...]:
    """What a provider call's error text must not show: the environment's secret values (as
    the settings captured them) and the call's own key, whatever its length."""
    return (*settings.secret_values(), key) if key else settings.secret_values()


def safe_text(text: str, secrets: Iterable[str]) -> str:
    """Text from a provider or a library with every one of `secrets` masked."""
    return redact(text, sorted({s for s in secrets if s}, key=len, reverse=True))


def estimated_usage(model: str, messages: Sequence[ChatMessage], text: str, reasoning: str = "") -> Usage:
    """The provider reported no usage: count it with the shared tokenizer, marked estimated. The
    reasoning text counts apart (as the callers count a call cut short) and inside completion."""
    reasoning_tokens = count_text_tokens(model, reasoning) if reasoning else 0
    return Usage(
        prompt_tokens=count_message_tokens(model, [m.as_dict() for m in messages]),
        completion_tokens=count_text_tokens(model, text) + reasoning_tokens,
        reasoning_tokens=reasoning_tokens,
        estimated=True,
    )


def reported_usage(
    usage: Mapping[str, object] | None, model: str, messages: Sequence[ChatMessage], text: str, reasoning: str
) -> Usage:
    """The call's usage: what the provider reported, in our normal form (conventions.py), or
    our tokenizer's estimate when it reported none."""
    if not usage:
        return estimated_usage(model, messages, text, reasoning)
    return normalise_usage(usage, model=model, fallback=lambda: estimated_usage(model, messages, text, reasoning))
