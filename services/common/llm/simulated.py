"""Built-in simulated models: offline, deterministic for a seed, paced like a real model.

`sim/debater` (and any `sim/<name>` that is not registered and not a judge) writes a debate
argument from the request's messages. The convention it reads (and the orchestrator can
write with `debater_system_prompt`):

- the system message holds the debate and the speaker, one `Key: value` per line:
  `Topic:`, `Persona:`, `Stance:` and `Round: 2 of 3` (free prose works too: "You are ...",
  "argue for/against ...");
- user messages hold the other debaters' last turns, as `Name (stance): text` or with the
  message's `name` set; assistant messages are the speaker's own earlier turns.

It parses robustly: any messages give a sensible argument. Everything it writes starts with
"[simulated]", and every Completion says `simulated=True`.

Other simulated models are registered with `register_simulated_model(name, responder)`:
the responder returns the whole reply text for a request (the judge service registers
`sim/judge` that way), and this module streams it with the same pacing and usage counting.
Usage is counted with the accounting tokenizer, which defines the usage of `sim/*` models.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.common.llm.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    StreamEvent,
    TextDelta,
    UnknownModel,
    Usage,
)

SIM_PREFIX = "sim/"
SIM_LABEL = "[simulated]"

Responder = Callable[[CompletionRequest], "str | Awaitable[str]"]
_registry: dict[str, Responder] = {}


def register_simulated_model(name: str, responder: Responder) -> None:
    """Serve `name` (a `sim/...` model) with `responder(request) -> full reply text`."""
    if not name.startswith(SIM_PREFIX):
        raise ValueError(f"simulated model names start with {SIM_PREFIX!r}: {name!r}")
    _registry[name] = responder


def unregister_simulated_model(name: str) -> None:
    _registry.pop(name, None)


def is_simulated(model: str) -> bool:
    return model.startswith(SIM_PREFIX)


def debater_system_prompt(
    *, topic: str, persona: str, stance: str, round_number: int | None = None, rounds: int | None = None,
    instructions: str = "",
) -> str:
    """A system prompt in the convention the simulated debater reads (real models read it too)."""
    lines = [f"Topic: {topic}", f"Persona: {persona}", f"Stance: {stance}"]
    if round_number is not None:
        lines.append(f"Round: {round_number}" + (f" of {rounds}" if rounds else ""))
    lines.append(
        instructions
        or "You are a debater. Argue your stance on the topic in your persona's voice; answer the other side's points."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class DebateContext:
    topic: str
    persona: str
    stance: str  # as written
    side: str  # "for" | "against" | "position"
    round_number: int
    rounds: int | None
    opponent: str  # who spoke last on the other side ("" if nobody)
    opponent_text: str  # what they said last round ("" if nothing)


def _field(text: str, *names: str) -> str:
    for name in names:
        match = re.search(rf"^\s*{name}\s*[:=]\s*(.+?)\s*$", text, re.IGNORECASE | re.MULTILINE)
        if match:
            return match.group(1).strip()
    return ""


def _side(stance: str) -> str:
    lowered = stance.lower()
    if re.search(r"\b(against|oppose[sd]?|con|no|reject)\b", lowered):
        return "against"
    if re.search(r"\b(for|support[s]?|pro|yes|in favou?r)\b", lowered):
        return "for"
    return "position"


_SPEAKER = re.compile(r"^\s*\[?([^\s:()\[\]][^:()\[\]\n]{0,40}?)\]?\s*(?:\(([^)\n]{1,60})\))?\s*:\s+")
_INSTRUCTION = re.compile(r"^\s*(round\s+\d+|your turn|please|now\b|give\b|respond\b)", re.IGNORECASE)


def _opponent(messages: Sequence[ChatMessage], own_side: str) -> tuple[str, str]:
    """(speaker, text) of the turn to answer: among the other debaters' turns since the speaker's
    own last turn, the latest from the other side, else the latest. Round instructions are skipped."""
    turns: list[tuple[str, str, str]] = []  # (speaker, side, text)
    loose: list[str] = []  # user text with no speaker: a last resort
    for message in reversed(messages):
        if message.role == "assistant":
            break
        text = message.content.strip()
        if message.role != "user" or not text:
            continue
        match = _SPEAKER.match(text)
        if match and (message.name or match.group(2) or match.group(1)[:1].isupper()):
            speaker = match.group(1).strip()
            turns.append((speaker, _side(match.group(2) or ""), text[match.end():]))
        elif message.name:
            turns.append((message.name, "position", text))
        elif not _INSTRUCTION.match(text):
            loose.append(text)
    for speaker, side, text in turns:
        if own_side != "position" and side not in (own_side, "position"):
            return speaker, text
    if turns:
        return turns[0][0], turns[0][2]
    return ("", loose[0]) if loose else ("", "")


def parse_context(messages: Sequence[ChatMessage]) -> DebateContext:
    system = "\n".join(m.content for m in messages if m.role == "system")
    topic = _field(system, "topic", "motion", "debate topic", "resolution")
    persona = _field(system, "persona", "role", "character")
    stance = _field(system, "stance", "position", "side")
    if not persona:
        match = re.search(r"\byou are ([^.\n]{3,80})", system, re.IGNORECASE)
        persona = match.group(1).strip() if match else ""
    if not stance:
        match = re.search(r"\bargue (for|against|in favou?r of)\b", system, re.IGNORECASE)
        stance = match.group(1) if match else ""
    if not topic:
        match = re.search(r"\b(?:on|about|that)\s+[\"“]?([^\"”\n]{5,160})", system, re.IGNORECASE)
        user_first = next((m.content for m in messages if m.role == "user"), "")
        topic = match.group(1).strip().rstrip(".") if match else (user_first.strip().split("\n")[0][:120])
    round_text = _field(system, "round")
    if not round_text:  # or from a round instruction: "Round 2 of 3: ..."
        instruction = next((m.content for m in reversed(messages) if m.role == "user"
                            and re.match(r"\s*round\s+\d+", m.content, re.IGNORECASE)), "")
        round_text = re.sub(r"^\s*round\s+", "", instruction.split(":")[0], flags=re.IGNORECASE)
    numbers = [int(n) for n in re.findall(r"\d+", round_text)]
    own_turns = sum(1 for m in messages if m.role == "assistant")
    round_number = numbers[0] if numbers else own_turns + 1
    rounds = numbers[1] if len(numbers) > 1 else None

    side = _side(stance)
    opponent, opponent_text = _opponent(messages, side)
    return DebateContext(
        topic=topic or "the question before us",
        persona=persona or "a debater",
        stance=stance or "a considered middle ground",
        side=side,
        round_number=max(1, round_number),
        rounds=rounds,
        opponent=opponent,
        opponent_text=opponent_text,
    )


# --------------------------------------------------------------------------- writing

_STOPWORDS = frozenset(
    ["a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "there", "their", "they", "them", "we", "our", "you", "your", "i", "my", "me", "he", "she", "his", "her", "not", "no", "so", "than", "then", "too", "very", "can", "could", "should", "would", "will", "shall", "may", "might", "must", "do", "does", "did", "done", "have", "has", "had", "having", "about", "into", "over", "under", "more", "most", "less", "least", "such", "only", "also", "just", "any", "all", "some", "each", "every", "other", "which", "who", "whom", "what", "when", "where", "why", "how", "simulated", "while", "because", "however", "therefore", "thus", "yet", "still", "even", "much", "many", "own", "same"]
)

_LENSES = {
    "econom": ("costs", "incentives", "trade-offs", "markets", "the budget line"),
    "scien": ("evidence", "measurement", "replication", "the data", "error bars"),
    "philosoph": ("principles", "first premises", "consistency", "duties", "the good life"),
    "engineer": ("systems", "failure modes", "maintenance", "scale", "the weakest component"),
    "histor": ("precedent", "the long view", "past reforms", "unintended consequences", "the record"),
    "law": ("rights", "liability", "due process", "enforceability", "the burden of proof"),
    "doctor": ("patient outcomes", "risk", "prevention", "side effects", "public health"),
    "teacher": ("learning", "students", "fairness", "habits", "the classroom"),
    "activist": ("justice", "power", "the people most affected", "accountability", "voice"),
    "skeptic": ("assumptions", "hidden costs", "overconfidence", "the base rate", "what could go wrong"),
}
_DEFAULT_LENSES = (
    ("practical results", "everyday experience", "the people involved", "common sense", "what works"),
    ("long-term effects", "trust", "responsibility", "the wider community", "resilience"),
    ("fairness", "clarity", "the hard cases", "accountability", "proportion"),
)

_OPENINGS = {
    "for": (
        "I stand firmly in favour: {topic}.",
        "Let me make the case for the motion: {topic}.",
        "The answer is yes, and I will show why: {topic}.",
        "I support the proposition that {topic_lc}",
    ),
    "against": (
        "I oppose the motion: {topic}.",
        "Let me explain why I reject the claim that {topic_lc}",
        "The answer is no, and the reasons are concrete: {topic}.",
        "I stand against this proposition: {topic}.",
    ),
    "position": (
        "My position ({stance}) on {topic_lc} is simple to state and harder to dismiss.",
        "On the question of {topic_lc} I hold this view: {stance}.",
        "I come to {topic_lc} with a clear position: {stance}.",
    ),
}
_PERSONA = (
    "Speaking as {persona}, I look first at {lens0}.",
    "As {persona}, I have learned to watch {lens0} before anything else.",
    "My perspective as {persona} keeps bringing me back to {lens0}.",
    "From where I sit, as {persona}, the question turns on {lens0}.",
)
_CLAIMS = {
    "for": (
        "When we look at {lens1}, the benefits of {key} are larger than the critics admit.",
        "Wherever {key} has been tried seriously, the record on {lens1} is encouraging.",
        "Doing nothing about {key} is itself a choice, and its costs fall on {lens2}.",
        "The strongest reason is {lens1}: {key} gives us something we cannot get otherwise.",
        "If we take {lens2} seriously, then embracing {key} is the responsible course.",
    ),
    "against": (
        "When we look at {lens1}, the promised benefits of {key} shrink quickly.",
        "The idea of {key} sounds attractive until you count its effect on {lens2}.",
        "The burden of proof lies with those who want {key}, and {lens1} does not meet it.",
        "Every serious look at {lens1} shows that the push for {key} creates more problems than it solves.",
        "We should be wary: {key} trades a visible gain for a hidden loss in {lens2}.",
    ),
    "position": (
        "Looking at {lens1}, the matter of {key} deserves a more careful answer than a simple yes or no.",
        "The real issue with {key} is {lens2}, and most of this debate has ignored it.",
        "Once you weigh {lens1}, the case around {key} looks different.",
    ),
}
_EVIDENCE = (
    "Consider a simple example: a town that changed course on {key} saw the effects on {lens2} within a year.",
    "Think about who actually bears the consequences: it is {lens2}, not the people making speeches.",
    "The pattern is consistent across cases: what matters is {lens1}, and it points one way.",
    "Ask what happens at scale: small effects on {lens3} compound into large ones.",
    "We have seen this before, and the lesson about {lens3} was not subtle.",
    "Numbers alone do not settle it, but they are hard to ignore when {lens1} shifts this much.",
)
_REBUTTALS = (
    "{Opponent} argued that \"{quote}\", but that claim skips over {lens1}.",
    "I heard {opponent} say \"{quote}\". It sounds persuasive, yet it assumes exactly what needs proving.",
    "{Opponent} leans on the idea that \"{quote}\"; the trouble is that {focus} cuts the other way.",
    "Last round {opponent} told us \"{quote}\". Look closer at {focus} and the argument weakens.",
    "My opponent's point about {focus} deserves an answer: it confuses a possibility with a likelihood.",
)
_CLOSINGS = {
    "for": (
        "So the case stands: {topic_lc}, and the alternative costs us more.",
        "For these reasons I urge you to support the motion.",
        "The evidence, the principles and the practical results all point in favour.",
    ),
    "against": (
        "So the case stands: the motion fails, and we should reject it.",
        "For these reasons I urge you to vote against the motion.",
        "The burden was on the other side, and it has not been met.",
    ),
    "position": (
        "That is why my position holds: {stance}.",
        "Weigh it carefully and I think you will land where I have.",
    ),
}
_FINAL = (
    "In closing, let me gather the threads of this debate.",
    "This is my final word, so let me be direct.",
    "As we reach the last round, the picture is clear.",
)


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z][A-Za-z'-]{3,}", text) if w.lower() not in _STOPWORDS]


def _key_phrase(topic: str, rng: random.Random) -> str:
    """A word or two from the topic (adjacent in it), e.g. "cars" or "remote work"."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", topic)
    content = [i for i, w in enumerate(words) if len(w) > 3 and w.lower() not in _STOPWORDS]
    if not content:
        return "this proposal"
    pairs = [i for i in content if i + 1 in content]
    if pairs and rng.random() < 0.6:
        i = pairs[0] if rng.random() < 0.5 else rng.choice(pairs)  # the motion's subject, mostly
        return f"{words[i]} {words[i + 1]}".lower()
    return words[rng.choice(content)].lower()


def _quote(text: str, rng: random.Random) -> str:
    text = text.replace(SIM_LABEL, " ")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    if len(sentences) > 2:
        sentences = sentences[1:-1]  # the substance, not the opening or the closing line
    if not sentences:
        sentences = [text.strip()]
    words = rng.choice(sentences).strip("\"“” ").split()
    quote = " ".join(words[:12]).rstrip(".,;:!?\"")
    return quote + ("..." if len(words) > 12 else "")


def _lenses(persona: str, rng: random.Random) -> list[str]:
    lowered = persona.lower()
    for stem, lens in _LENSES.items():
        if stem in lowered:
            chosen = list(lens)
            break
    else:
        chosen = list(rng.choice(_DEFAULT_LENSES))
    rng.shuffle(chosen)
    return chosen


def write_debate_turn(ctx: DebateContext, seed: int) -> str:
    """The simulated debater's reply: deterministic for (seed, context)."""
    digest = hashlib.sha256(
        "\x1f".join(
            (str(seed), ctx.topic, ctx.persona, ctx.stance, str(ctx.round_number), ctx.opponent_text)
        ).encode()
    ).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    lens = _lenses(ctx.persona, rng)
    key = _key_phrase(ctx.topic, rng)
    topic = ctx.topic.rstrip(".!? ")
    slots = {
        "topic": topic,
        "topic_lc": (topic[:1].lower() + topic[1:]) + ".",
        "stance": ctx.stance,
        "persona": ctx.persona,
        "key": key,
        "Key": key[:1].upper() + key[1:],
        "lens0": lens[0],
        "lens1": lens[1],
        "lens2": lens[2],
        "lens3": lens[3],
    }
    final = ctx.rounds is not None and ctx.round_number >= ctx.rounds and ctx.round_number > 1
    parts: list[str] = []
    if final:
        parts.append(rng.choice(_FINAL))
    if ctx.round_number == 1 or not ctx.opponent_text:
        parts.append(rng.choice(_OPENINGS[ctx.side]).format(**slots))
    parts.append(rng.choice(_PERSONA).format(**slots))
    if ctx.opponent_text:
        opponent = ctx.opponent or "the other side"
        focus_words = _content_words(ctx.opponent_text) or [key]
        rebuttal = rng.choice(_REBUTTALS).format(
            opponent=opponent,
            Opponent=opponent[:1].upper() + opponent[1:],
            quote=_quote(ctx.opponent_text, rng),
            focus=rng.choice(focus_words).lower(),
            **{k: v for k, v in slots.items() if k != "key"},
        )
        parts.append(rebuttal)
    claims = list(_CLAIMS[ctx.side])
    rng.shuffle(claims)
    evidence = list(_EVIDENCE)
    rng.shuffle(evidence)
    for i in range(rng.randint(2, 3)):
        parts.append(claims[i % len(claims)].format(**slots))
        if i < 2:
            parts.append(evidence[i].format(**slots))
    parts.append(rng.choice(_CLOSINGS[ctx.side]).format(**slots))
    return f"{SIM_LABEL} " + " ".join(parts)


# --------------------------------------------------------------------------- streaming


def _pieces(text: str) -> list[str]:
    """Token-sized deltas: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


def _truncate(model: str, pieces: list[str], max_tokens: int, count) -> tuple[list[str], bool]:
    """The longest prefix of `pieces` within max_tokens (binary search on the tokenizer)."""
    if count(model, "".join(pieces)) <= max_tokens:
        return pieces, False
    lo, hi = 0, len(pieces)  # invariant: pieces[:lo] fits, pieces[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(model, "".join(pieces[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid
    return pieces[:lo], True


class SimulatedLLM:
    """Serves every `sim/...` model: registered responders, else the built-in debater."""

    def __init__(self, *, first_token_latency: float = 0.0, tokens_per_second: float = 0.0, seed: int = 0):
        self.first_token_latency = first_token_latency
        self.tokens_per_second = tokens_per_second
        self.seed = seed

    async def _reply_text(self, request: CompletionRequest) -> str:
        responder = _registry.get(request.model)
        if responder is not None:
            result = responder(request)
            return await result if inspect.isawaitable(result) else result
        if "judge" in request.model.removeprefix(SIM_PREFIX).lower():
            raise UnknownModel(
                f"simulated model {request.model} is not registered (the judge service registers it with"
                " register_simulated_model)",
                model=request.model,
            )
        seed = self.seed if request.seed is None else request.seed
        return write_debate_turn(parse_context(request.messages), seed)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        from services.accounting.tokens import count_message_tokens, count_text_tokens

        loop = asyncio.get_running_loop()
        started = loop.time()
        text = await self._reply_text(request)
        pieces, truncated = _truncate(request.model, _pieces(text), max(0, request.max_tokens), count_text_tokens)
        latency, rate = self.first_token_latency, self.tokens_per_second
        for i, piece in enumerate(pieces):
            if latency or rate:
                due = started + latency + (i / rate if rate else 0.0)
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 32 == 31:
                await asyncio.sleep(0)  # instant mode still lets other debates run
            yield TextDelta(piece)
        usage = Usage(
            prompt_tokens=count_message_tokens(request.model, [m.as_dict() for m in request.messages]),
            completion_tokens=count_text_tokens(request.model, "".join(pieces)),
        )
        yield Completion(
            model=request.model, usage=usage, finish_reason="length" if truncated else "stop", simulated=True
        )
