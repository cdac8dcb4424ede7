"""The simulated models' provider: an `LLMClient` for every `sim/...` model, offline and paced.

A reply is the whole text of a *responder*, streamed as a real model streams it:

- responders are passed in by the service's composition root, one per model name
  (`build_llm_client(settings, responders={"sim/judge": respond})`, or the `responders`
  argument here); there is no global registry, so two services in one process never see each
  other's models;
- any other `sim/<name>` is the built-in debater: `parse_context` reads the messages
  (reading.py) and `write_debate_turn` writes the turn (writer.py), deterministic for the
  request's seed, else the provider's;
- the names in `RESPONDER_MODELS` are never the built-in debater: a client built without their
  responder answers `UnknownModel`, rather than a debate turn where other output is expected.
- a variant (`sim/judge-decisive@3`: a name of the family `sim/judge`, `model_family`) is served
  by its family's responder, which reads `request.model`; the built-in debater's variants
  (`sim/debater-converging`, converging.py) change its turn in small hooks.

Pacing: the first token after `first_token_latency` seconds, then `tokens_per_second`, sent in
chunks at most every `pace_tick` seconds (0 and 0: instant). Usage is counted with the shared
tokenizer (`services.common.tokens`), which defines the usage of `sim/*` models. The built-in
debater keeps to the budget its prompt tells it (`Length: at most N tokens`): it ends its turn
on the last whole sentence that fits. `max_tokens` cuts any reply (finish_reason "length").
Every `Completion` says `simulated=True`.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping

from services.common.llm.base import Completion, CompletionRequest, StreamEvent, TextDelta, UnknownModel
from services.common.llm.simulated.converging import with_stated_position
from services.common.llm.simulated.quality import with_quality
from services.common.llm.simulated.quoting import quote_sources
from services.common.llm.simulated.reading import parse_context
from services.common.llm.simulated.writer import write_debate_turn
from services.common.tokens import count_message_tokens, count_text_tokens
from services.common.usage import Usage

SIM_PREFIX = "sim/"
SIM_JUDGE_MODEL = "sim/judge"
# Models whose replies only a responder gives (the judge service passes `sim/judge`'s in).
RESPONDER_MODELS = frozenset({SIM_JUDGE_MODEL})

# request -> the whole reply text (or an awaitable of it).
Responder = Callable[[CompletionRequest], "str | Awaitable[str]"]


def model_family(model: str) -> str:
    """The name a variant belongs to: "sim/judge" for "sim/judge-decisive@3" (the text before the
    first "-" or "@" of the name after "sim/"). A responder given for a family also answers its
    variants, which read `request.model` for what they change."""
    name = model[len(SIM_PREFIX) :] if model.startswith(SIM_PREFIX) else model
    return model[: len(model) - len(name)] + re.split(r"[-@]", name, maxsplit=1)[0]


def is_simulated(model: str) -> bool:
    """Whether `model` is one of the built-in simulated models (`sim/...`)."""
    return model.startswith(SIM_PREFIX)


def _pieces(text: str) -> list[str]:
    """Token-sized deltas: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


def _truncate(
    model: str, pieces: list[str], max_tokens: int, count: Callable[[str, str], int]
) -> tuple[list[str], bool, int]:
    """(the longest prefix of `pieces` within max_tokens, whether it is shorter, its tokens): a
    binary search on the tokenizer, whose counts give the reply's completion tokens too."""
    tokens = count(model, "".join(pieces))
    if tokens <= max_tokens:
        return pieces, False, tokens
    lo, hi, fits = 0, len(pieces), 0  # invariant: pieces[:lo] fits (`fits` tokens), pieces[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tokens = count(model, "".join(pieces[:mid]))
        if tokens <= max_tokens:
            lo, fits = mid, tokens
        else:
            hi = mid
    return pieces[:lo], True, fits


_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”’)\]]*(?=\s|$)")


def within_budget(model: str, text: str, max_tokens: int, count: Callable[[str, str], int]) -> str:
    """The whole sentences of `text` that fit in `max_tokens` (as a debater told its budget ends its
    turn in time); the first sentence alone when not even it fits, which the stream's `max_tokens`
    then cuts (finish_reason "length")."""
    if count(model, text) <= max_tokens:
        return text
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    lo, hi = 0, len(ends)  # binary search: ends[:lo] fit, ends[hi:] do not
    while lo < hi:
        mid = (lo + hi) // 2
        if count(model, text[: ends[mid]]) <= max_tokens:
            lo = mid + 1
        else:
            hi = mid
    if lo:
        return text[: ends[lo - 1]]
    return text[: ends[0]] if ends else text


class SimulatedLLM:
    """Serves every `sim/...` model: the responders it is given, else the built-in debater.

    `responders` maps `sim/...` names to responders (ValueError for another name);
    `first_token_latency` (seconds) and `tokens_per_second` pace the stream (0: instant);
    `seed` is the debater's seed when a request gives none. `stream` raises `UnknownModel` for
    a name in `RESPONDER_MODELS` that has no responder here."""

    pace_tick = 0.1  # seconds between the chunks of a paced stream

    def __init__(
        self,
        *,
        responders: Mapping[str, Responder] | None = None,
        first_token_latency: float = 0.0,
        tokens_per_second: float = 0.0,
        seed: int = 0,
    ):
        self.responders = dict(responders or {})
        for name in self.responders:
            if not is_simulated(name):
                raise ValueError(f"simulated model names start with {SIM_PREFIX!r}: {name!r}")
        self.first_token_latency = first_token_latency
        self.tokens_per_second = tokens_per_second
        self.seed = seed

    async def _reply_text(self, request: CompletionRequest) -> str:
        responder = self.responders.get(request.model) or self.responders.get(model_family(request.model))
        if responder is not None:
            result = responder(request)
            return await result if inspect.isawaitable(result) else result
        if request.model in RESPONDER_MODELS or model_family(request.model) in RESPONDER_MODELS:
            raise UnknownModel(
                f"simulated model {request.model} is not registered: the service that serves it passes its"
                " responder in (build_llm_client(settings, responders=...))",
                model=request.model,
            )
        seed = self.seed if request.seed is None else request.seed
        context = parse_context(request.messages)
        text = with_quality(request.model, write_debate_turn(context, seed), seed)  # quality.py
        text = with_stated_position(request.model, context, text)  # converging.py
        text = quote_sources(text, request.messages, seed, context.round_number)  # evidence, when given
        if context.max_tokens:
            text = within_budget(request.model, text, context.max_tokens, count_text_tokens)
        return text

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        text = await self._reply_text(request)
        pieces, truncated, completion_tokens = _truncate(
            request.model, _pieces(text), max(0, request.max_tokens), count_text_tokens
        )
        latency, rate = self.first_token_latency, self.tokens_per_second
        if not (latency or rate):
            for i, piece in enumerate(pieces):
                if i % 32 == 31:
                    await asyncio.sleep(0)  # instant mode still lets other debates run
                yield TextDelta(piece)
        else:
            # Paced: token i is due at started + latency + i/rate, and the tokens due go out as
            # one chunk at most every `pace_tick` seconds: one timer per tick rather than one per
            # token (40,000 timers a second for 200 debates), at the same average rate.
            first, tick = started + latency, self.pace_tick
            i, n, last = 0, len(pieces), float("-inf")
            while i < n:
                delay = max(first + (i / rate if rate else 0.0), last + tick) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                last = loop.time()
                end = min(n, max(i + 1, int((last - first) * rate + 1e-9) + 1)) if rate else n
                yield TextDelta("".join(pieces[i:end]))
                i = end
        usage = Usage(
            prompt_tokens=count_message_tokens(request.model, [m.as_dict() for m in request.messages]),
            completion_tokens=completion_tokens,
        )
        yield Completion(
            model=request.model, usage=usage, finish_reason="length" if truncated else "stop", simulated=True
        )
