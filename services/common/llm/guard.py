"""What every real-provider stream shares: the timeout watchdog, usage, and safe messages.

The watchdog times only the waits on the network. A per-chunk `asyncio.wait_for` costs a
task per chunk, and an `asyncio.timeout` around the whole generator would also time (and
cancel) the consumer's own work between chunks. Instead a reader calls `begin()` before each
network read and `end()` after it (a float and two attribute writes), and one lazily re-armed
timer cancels the reading task only if a read has been waiting longer than its limit; the
reader turns that cancellation into ProviderTimeout (no first token yet) or StreamStalled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from services.common.llm.base import (
    ChatMessage,
    LLMError,
    ProviderTimeout,
    StreamStalled,
)
from services.common.llm.settings import LLMSettings
from services.common.logs import redact
from services.common.tokens import count_message_tokens, count_text_tokens
from services.common.usage import Usage


class Watchdog:
    __slots__ = (
        "_deadline",
        "_first_deadline",
        "_handle",
        "_loop",
        "_reading",
        "_task",
        "fired",
        "first_token_timeout",
        "stall_timeout",
    )

    def __init__(self, first_token_timeout: float, stall_timeout: float):
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.first_token_timeout = first_token_timeout
        self.stall_timeout = stall_timeout
        # Until the first token, the limit runs from the request, not from the last read.
        self._first_deadline: float | None = self._loop.time() + first_token_timeout
        self._deadline = self._first_deadline
        self._reading = False
        self.fired = False

    def first_token(self) -> None:
        self._first_deadline = None
        self.close()  # the stall deadline may come before the armed first-token one

    def begin(self) -> None:
        self._deadline = self._first_deadline or (self._loop.time() + self.stall_timeout)
        self._reading = True
        if self._handle is None:
            self._task = asyncio.current_task()
            self._handle = self._loop.call_at(self._deadline, self._fire)

    def end(self) -> None:
        self._reading = False

    def _fire(self) -> None:
        self._handle = None
        if not self._reading:
            return  # re-armed by the next begin()
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._fire)
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

    def error(self, model: str, partial_text: str) -> LLMError:
        if self._first_deadline is not None:
            return ProviderTimeout(
                f"{model}: no first token within {self.first_token_timeout:g}s",
                model=model,
                partial_text=partial_text,
                retryable=True,
            )
        return StreamStalled(
            f"{model}: stream stalled, no chunk for {self.stall_timeout:g}s; cut after {len(partial_text)} characters",
            model=model,
            partial_text=partial_text,
            retryable=False,
        )


def call_secrets(settings: LLMSettings, key: str | None) -> tuple[str, ...]:
    """What a provider call's error text must not show: the environment's secret values (as
    the settings captured them) and the call's own key, whatever its length."""
    return (*settings.secret_values(), key) if key else settings.secret_values()


def safe_text(text: str, secrets: Iterable[str]) -> str:
    """Text from a provider or a library with every one of `secrets` masked."""
    return redact(text, sorted({s for s in secrets if s}, key=len, reverse=True))


def usage_from_openai(usage: dict) -> Usage:
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_prompt_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def estimated_usage(model: str, messages: Sequence[ChatMessage], text: str) -> Usage:
    """The provider reported no usage: count it with the shared tokenizer, marked estimated."""
    return Usage(
        prompt_tokens=count_message_tokens(model, [m.as_dict() for m in messages]),
        completion_tokens=count_text_tokens(model, text),
        estimated=True,
    )
