"""The pushed reader's short path (openai_compat._Push): a read that is one whole `data: {...}`
event of an answer delta is decoded in one go; every other read (split, several events,
comments, keep-alives, CRLF, [DONE], reasoning, usage, an error) takes the general path. Whatever
the reads, the sink gets the same deltas in the same order as the pulled reader's general path
(`_sse_payloads` and `_ChunkReader.feed`), and the watchdog's clock is stamped at every read."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.common.llm.base import LLMError, ProviderError, ReasoningDelta, TextDelta
from services.common.llm.guard import ProviderBadChunk, Watchdog
from services.common.llm.openai_compat import _ChunkReader, _Push, _sse_payloads


def _event(delta: dict | None = None, *, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices, "usage": usage}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


ROLE = _event({"role": "assistant", "content": ""})
WORDS = [_event({"content": w}) for w in ("Hello", " wor", "ld", " \u00e9t\u00e9", "!")]
END = [
    _event({}, finish="stop"),
    _event(usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}),
    b"data: [DONE]\n\n",
]
STREAM = [ROLE, *WORDS, *END]
TEXT = "Hello world \u00e9t\u00e9!"


def _reference(body: bytes) -> list[object]:
    """The events the pulled reader's general path reads from the whole body."""

    async def read() -> list[object]:
        reader = _ChunkReader("openai/m", Watchdog(60, 60), ())
        payloads, rest, done = _sse_payloads(body)
        assert rest == b"" and done
        return [event for payload in payloads for event in reader.feed(payload)]

    return asyncio.run(read())


async def _pushed(reads: list[bytes]) -> tuple[_Push, _ChunkReader, list[object], list[float]]:
    """The reads handed to a _Push one by one; its sink's events and the watchdog's stamps."""
    watchdog = Watchdog(60, 60)
    reader = _ChunkReader("openai/m", watchdog, ())
    events: list[object] = []
    push = _Push(reader, events.append, watchdog)
    stamps = []
    for data in reads:
        watchdog.read_at = -1.0
        if push(data):
            break
        stamps.append(watchdog.read_at)
    return push, reader, events, stamps


def _run(reads: list[bytes]) -> tuple[_Push, _ChunkReader, list[object], list[float]]:
    return asyncio.run(_pushed(reads))


def _check_whole(reads: list[bytes]) -> None:
    push, reader, events, stamps = _run(reads)
    assert events == _reference(b"".join(reads))
    assert "".join(e.text for e in events if type(e) is TextDelta) == TEXT
    assert push.done and push.stop and push.failure is None
    assert reader.usage == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert reader.finish_reason == "stop"
    assert "".join(reader.parts) == TEXT
    assert all(stamp > 0 for stamp in stamps), "every read that did not end the stream stamps the watchdog"


def test_one_event_per_read_takes_the_short_path_and_gives_the_general_paths_events():
    _check_whole(STREAM)


@pytest.mark.parametrize("cut", [1, 6, 7, 20, -3, -2, -1])
def test_an_event_split_across_two_reads(cut):
    word = WORDS[1]
    _check_whole([ROLE, WORDS[0], word[:cut], word[cut:], *WORDS[2:], *END])


def test_every_split_point_of_an_event():
    word = WORDS[2]
    for cut in range(1, len(word)):
        _check_whole([ROLE, WORDS[0], WORDS[1], word[:cut], word[cut:], *WORDS[3:], *END])


def test_two_events_in_one_read_and_the_end_with_the_last_word():
    _check_whole([ROLE, WORDS[0] + WORDS[1], *WORDS[2:4], WORDS[4] + b"".join(END)])


def test_comments_keep_alives_and_event_names_between_words():
    reads = [ROLE, b": ping\n\n", WORDS[0], b":\n\n", WORDS[1], b"event: delta\n" + WORDS[2], b"\n", *WORDS[3:], *END]
    _check_whole(reads)


def test_crlf_line_ends():
    _check_whole([read.replace(b"\n", b"\r\n") for read in STREAM])


def test_a_done_read_alone_ends_the_stream_and_later_reads_are_ignored():
    push, reader, events, _ = _run([ROLE, *WORDS, END[0], b"data: [DONE]\n\n", WORDS[0]])
    assert push.done and "".join(reader.parts) == TEXT
    assert len(events) == len(WORDS)


def test_the_first_token_goes_through_the_general_path_and_ends_the_first_token_wait():
    async def run() -> tuple[bool, bool]:
        watchdog = Watchdog(60, 60)
        reader = _ChunkReader("openai/m", watchdog, ())
        events: list[object] = []
        push = _Push(reader, events.append, watchdog)
        push(ROLE)  # a role-only chunk says nothing of the model
        waiting_after_role = reader.waiting
        push(WORDS[0])
        return waiting_after_role, reader.waiting

    assert asyncio.run(run()) == (True, False)


def test_reasoning_beside_the_answer_is_not_taken_for_answer_text():
    thought = _event({"content": None, "reasoning_content": "hmm"})
    both = _event({"content": "A", "reasoning": "so"})
    push, reader, events, _ = _run([ROLE, WORDS[0], thought, both, *END])
    assert events == [TextDelta("Hello"), ReasoningDelta("hmm"), ReasoningDelta("so"), TextDelta("A")]
    assert reader.reasoning == ["hmm", "so"] and reader.parts == ["Hello", "A"]


def test_an_error_event_fails_the_stream_billed_with_the_text_before_it():
    error = b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
    push, _, events, _ = _run([ROLE, WORDS[0], WORDS[1], error, WORDS[2]])
    assert push.stop and not push.done
    assert isinstance(push.failure, ProviderError) and push.failure.billed
    assert push.failure.partial_text == "Hello wor" and "overloaded" in str(push.failure)
    assert events == [TextDelta("Hello"), TextDelta(" wor")]


@pytest.mark.parametrize(
    "bad",
    [
        b"data: {not json}\n\n",
        b'data: {"choices":[{"delta":{"content":5}}]}\n\n',
        b'data: {"choices":{"delta":{"content":"x"}}}\n\n',
        b'data: {"choices":[{"delta":{"content":"x"}}],"usage":"many"}\n\n',
        b'data: {"choices":[{"delta":{"content":"\xff"}}]}\n\n',  # not UTF-8
    ],
)
def test_a_chunk_of_another_shape_on_the_short_path_is_the_typed_billed_error(bad):
    push, _, events, _ = _run([ROLE, WORDS[0], bad])
    assert isinstance(push.failure, ProviderBadChunk) and push.failure.billed
    assert push.failure.partial_text == "Hello"
    assert events == [TextDelta("Hello")]


def test_a_sink_that_raises_on_the_short_path_fails_the_stream_with_its_error():
    class Refused(Exception):
        pass

    async def run() -> _Push:
        watchdog = Watchdog(60, 60)
        reader = _ChunkReader("openai/m", watchdog, ())
        seen: list[object] = []

        def sink(event: object) -> None:
            seen.append(event)
            if len(seen) == 2:
                raise Refused

        push = _Push(reader, sink, watchdog)
        for data in [ROLE, *WORDS]:
            if push(data):
                break
        return push

    push = asyncio.run(run())
    assert isinstance(push.failure, Refused) and push.stop and not push.done
    assert not isinstance(push.failure, LLMError)


async def _pushed_wait(reads: int, every: float, first_token: bool) -> tuple[float, float, LLMError]:
    """A task waiting for a whole pushed stream (begin() once), its reads coming from the loop's
    callbacks every `every` s: the time of the last read, of the cut, and the cut's error."""
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(0.4, 0.2)
    last = [loop.time()]

    def read(left: int) -> None:
        if first_token:
            watchdog.first_token()
        watchdog.read_at = watchdog.time()  # what the short path does per read
        last[0] = loop.time()
        if left > 1:
            loop.call_later(every, read, left - 1)

    async def wait() -> None:
        watchdog.begin()
        try:
            loop.call_later(every, read, reads)
            await asyncio.sleep(30)
        finally:
            watchdog.end()

    task = asyncio.create_task(wait())
    try:
        await task
    except asyncio.CancelledError:
        assert watchdog.timed_out()
    finally:
        watchdog.close()
    return last[0], loop.time(), watchdog.error("openai/m", "text")


def test_a_pushed_stream_whose_reads_keep_coming_is_not_cut_then_its_stall_is():
    """The reads stamp a time only; the armed timer re-arms itself for the deadline then due."""
    last, cut, error = asyncio.run(_pushed_wait(reads=8, every=0.1, first_token=True))
    assert error.reason == "PROVIDER_STALLED"
    assert cut - last >= 0.2 * 0.95  # the stall limit, from the last read
    assert cut - last < 0.2 + 0.25  # and not much after it: the timer followed the reads


def test_reads_without_a_first_token_are_cut_at_the_first_token_limit():
    _, cut, error = asyncio.run(_pushed_wait(reads=8, every=0.1, first_token=False))
    assert error.reason == "PROVIDER_TIMEOUT"


# The template: a token read with the template's bytes around another text.
HEAD, TAIL = WORDS[1].split(b" wor")


def _token(raw: bytes) -> bytes:
    return HEAD + raw + TAIL


def test_the_template_is_learnt_from_a_token_read_whose_text_stands_unescaped():
    push, _, _, _ = _run([ROLE, *WORDS[:2]])
    assert (push.head, push.tail) == (HEAD, TAIL)
    assert HEAD.endswith(b'"delta":{"content":"') and TAIL.startswith(b'"},"finish_reason":null}')
    push, _, _, _ = _run([ROLE, WORDS[0], WORDS[3]])  # " \u00e9t\u00e9", escaped by json.dumps
    assert push.head == b"" and push.learn == 3


@pytest.mark.parametrize(
    "raw",
    [
        b"plain",
        " \u00e9t\u00e9 \u4e2d\U0001f600".encode(),  # UTF-8 as is
        b"a\\nb",  # escapes: msgspec reads them
        b'say \\"hi\\"',
        b"\\u00e9\\/",
        b"",  # no text: no event
        b"\x7f",
    ],
)
def test_a_read_of_the_templates_shape_gives_the_general_paths_events(raw):
    reads = [ROLE, *WORDS[:2], _token(raw), WORDS[2], *END]
    push, reader, events, stamps = _run(reads)
    assert push.head == HEAD, "the template was learnt before the read"
    assert events == _reference(b"".join(reads))
    assert push.done and push.failure is None and all(stamp > 0 for stamp in stamps)
    assert "".join(reader.parts) == "".join(e.text for e in events if type(e) is TextDelta)


@pytest.mark.parametrize("raw", [b"a\tb", b"a\x00", b"\xff", b"\xed\xa0\x80", b"a\nb", b'a"b'])
def test_a_read_of_the_templates_shape_that_is_not_json_is_the_typed_billed_error(raw):
    push, _, events, _ = _run([ROLE, *WORDS[:3], _token(raw), WORDS[4]])
    assert push.head == HEAD
    assert isinstance(push.failure, ProviderBadChunk) and push.failure.billed
    assert push.failure.partial_text == "Hello world"
    assert events == [TextDelta("Hello"), TextDelta(" wor"), TextDelta("ld")]


@pytest.mark.parametrize(
    "other",
    [
        _event({"content": "x"}, finish="stop"),  # the same head, another tail
        WORDS[2].replace(b'"id":"c1"', b'"id":"c2"'),  # another head
        WORDS[2].replace(b'"usage":null', b'"usage":{"prompt_tokens":1,"completion_tokens":1}'),
        WORDS[2][:-2] + b"\n" + WORDS[3],  # two events in one read
    ],
)
def test_a_read_that_differs_from_the_template_outside_the_text_takes_the_other_paths(other):
    reads = [ROLE, *WORDS[:2], other, *WORDS[3:], *END]
    push, _, events, _ = _run(reads)
    assert push.head == HEAD and push.failure is None
    assert events == _reference(b"".join(reads))
