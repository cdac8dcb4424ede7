"""Token usage: the one domain type, and its one conversion to and from the wire.

`Usage` is what a model call consumed. The LLM layer reports it, pricing prices it, the
judge and the ledger add it up. `cached_prompt_tokens` (cache reads) and
`cache_creation_prompt_tokens` (cache writes) are parts of `prompt_tokens`, and
`reasoning_tokens` part of `completion_tokens`, as in `debate.common.v1.TokenUsage`, whatever
the provider's own convention (the LLM layer normalises at its edge); `estimated` is True when
our tokenizer counted some of it or the provider's figures could not be reconciled.

On the wire a usage is a `common_pb2.TokenUsage`, whose `total_tokens` is prompt plus
completion. `usage_to_proto` and `usage_from_proto` are the only converters;
`add_token_usage` adds one wire usage into a running total in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from debate.common.v1 import common_pb2

__all__ = ["Usage", "add_token_usage", "usage_from_proto", "usage_to_proto"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call (or a sum of calls); every field is a count of tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    # True when counted with our tokenizer (no usage reported, or the call was cut), or when
    # the provider's figures could not be reconciled.
    estimated: bool = False
    cache_creation_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        """The field-wise sum; estimated when either part is."""
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
            cache_creation_prompt_tokens=self.cache_creation_prompt_tokens + other.cache_creation_prompt_tokens,
        )


def usage_to_proto(usage: Usage, *, estimated: bool | None = None) -> common_pb2.TokenUsage:
    """The wire form, total_tokens = prompt + completion. `estimated` overrides the usage's
    own flag, for callers that keep the flag beside the usage (the ledger's rows)."""
    return common_pb2.TokenUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated if estimated is None else estimated,
        cache_creation_prompt_tokens=usage.cache_creation_prompt_tokens,
    )


def usage_from_proto(pb: common_pb2.TokenUsage) -> Usage:
    """The domain form; the wire's total_tokens is not kept (it is derived), so a caller that
    must check it against prompt + completion reads it from `pb` itself."""
    return Usage(
        prompt_tokens=pb.prompt_tokens,
        completion_tokens=pb.completion_tokens,
        cached_prompt_tokens=pb.cached_prompt_tokens,
        reasoning_tokens=pb.reasoning_tokens,
        estimated=pb.estimated,
        cache_creation_prompt_tokens=pb.cache_creation_prompt_tokens,
    )


def add_token_usage(total: common_pb2.TokenUsage, usage: common_pb2.TokenUsage) -> None:
    """Adds `usage` into the running `total` in place: every count, total_tokens as given,
    and estimated when either is."""
    total.prompt_tokens += usage.prompt_tokens
    total.completion_tokens += usage.completion_tokens
    total.cached_prompt_tokens += usage.cached_prompt_tokens
    total.reasoning_tokens += usage.reasoning_tokens
    total.cache_creation_prompt_tokens += usage.cache_creation_prompt_tokens
    total.total_tokens += usage.total_tokens
    total.estimated = total.estimated or usage.estimated
