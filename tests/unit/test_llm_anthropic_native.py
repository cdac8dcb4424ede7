"""Anthropic's Messages stream events as the lean path reads them (anthropic_native._EventReader):
what each event carries, the events it skips, and the ones that are errors."""

from __future__ import annotations

import json

import pytest

from services.common.llm import ProviderBadChunk, ProviderError, ReasoningDelta, TextDelta
from services.common.llm.anthropic_native import _EventReader
from services.common.llm.guard import Watchdog


def _reader() -> _EventReader:
    return _EventReader("anthropic/claude-test", Watchdog(30, 15), ("sk-ant-secret",))


def _feed(reader: _EventReader, event: dict) -> list:
    return reader.feed(json.dumps(event).encode())


async def test_a_whole_stream_is_read_into_events_usage_and_stop():
    reader = _reader()
    usage = {"input_tokens": 20, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0, "output_tokens": 1}
    assert _feed(reader, {"type": "message_start", "message": {"usage": usage, "content": [], "id": "m"}}) == []
    assert reader.waiting  # accepted, not started: the first-token wait goes on
    assert _feed(reader, {"type": "ping"}) == []
    block = {"type": "thinking", "thinking": "", "signature": ""}
    assert _feed(reader, {"type": "content_block_start", "index": 0, "content_block": block}) == []
    thought = {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm."}}
    assert _feed(reader, thought) == [ReasoningDelta("Hm.")] and not reader.waiting
    signature = {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}}
    assert _feed(reader, signature) == []
    text = {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Cars out."}}
    assert _feed(reader, text) == [TextDelta("Cars out.")]
    citation = {"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta", "citation": {}}}
    assert _feed(reader, citation) == []  # a delta type we do not show: skipped
    end = {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9}}
    assert _feed(reader, end) == [] and reader.finish_reason == "length"
    assert reader.usage == {**usage, "output_tokens": 9}
    assert _feed(reader, {"type": "message_stop"}) == [] and reader.ended
    assert (reader.text(), reader.thought()) == ("Cars out.", "Hm.")


async def test_an_error_event_is_a_billed_provider_error_with_the_text_so_far():
    reader = _reader()
    _feed(reader, {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Half"}})
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded sk-ant-secret"}}
    with pytest.raises(ProviderError) as caught:
        _feed(reader, error)
    assert caught.value.billed and caught.value.partial_text == "Half" and not caught.value.retryable
    assert "overloaded_error" in caught.value.message and "sk-ant-secret" not in caught.value.message


@pytest.mark.parametrize(
    "payload, retryable",
    [
        (b'{"type": "content_block_delta", "delta": {"type": "text_delta", "text": 42}}', False),
        (b'{"type": "message_start", "message": {"usage": "lots"}}', False),
        (b"[1, 2]", False),
        (b'{"type": "content_block_delta", "delta": {"ty', True),
        (b'{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "\xff"}}', True),
    ],
    ids=["text-number", "usage-string", "not-object", "not-json", "not-utf8"],
)
async def test_an_event_we_cannot_read_is_a_billed_bad_chunk(payload, retryable):
    with pytest.raises(ProviderBadChunk) as caught:
        _reader().feed(payload)
    assert caught.value.billed and caught.value.retryable is retryable
