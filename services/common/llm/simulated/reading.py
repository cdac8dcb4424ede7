"""Reading the simulated debater's request: who speaks, on which side, in which round, answering whom.

`parse_context(messages)` reads any chat messages into a `DebateContext`; it never fails, and
fills what it cannot find with neutral defaults. It reads best the convention that the
orchestrator's context builder writes (`services.orchestrator.context`, `system_prompt`,
`round_instruction` and `ContextBuilder.build`); that module's docstring states the same
contract, and tests/unit/test_llm_simulated.py checks that this reader reads what the builder
writes:

- the system message holds the debate and the speaker, one `Key: value` per line:
  `Topic:`, `Persona:`, `Stance:`, `Round: 2 of 3` and `Length: at most 160 tokens ...` (the
  turn's budget, which the debater keeps to) (free prose works too: "You are ...", "argue
  for/against ...");
- user messages hold the other debaters' turns, as `Name (stance): text`, with the message's
  `name` set; assistant messages are the speaker's own earlier turns;
- the round instruction ("Please give your opening argument (round 1 of 3).", "Round 2 of 3:
  ...", "Moderator: ...") is a user message without a `Name:` prefix, and never a debater's
  turn: it only tells the round and the phase when the system message does not.

The stance words decide the side: "against", "oppose", "con", "no", "reject" -> against;
"for", "support", "pro", "yes", "in favour" -> for; anything else is a position of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.llm.base import ChatMessage


@dataclass(frozen=True, slots=True)
class DebateContext:
    """What the debater's messages say about its turn (round numbers are 1-based)."""

    topic: str
    persona: str
    stance: str  # as written
    side: str  # "for" | "against" | "position"
    round_number: int
    rounds: int | None
    opponent: str  # who spoke last on the other side ("" if nobody)
    opponent_text: str  # what they said last round ("" if nothing)
    opponent_side: str = "position"  # the side of the turn answered
    phase: str = "opening"  # "opening" | "rebuttal" | "closing"
    max_tokens: int | None = None  # the turn's budget, when the prompt tells it ("Length: at most N tokens")


def _field(text: str, *names: str) -> str:
    for name in names:
        match = re.search(rf"^[ \t]*{name}[ \t]*[:=][ \t]*(\S.*?)[ \t]*$", text, re.IGNORECASE | re.MULTILINE)
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
# Labels that name the debate's machinery, never a debater ("Round 2 of 3:", "Moderator:", ...).
_NOT_A_SPEAKER = re.compile(
    r"^(round|turn|instructions?|task|moderator|system|note|prompt|user|question|context|debate|topic|motion|"
    r"please|now|your|next|reminder|rules?|format|judge|host|chair|orchestrator|assistant)\b",
    re.IGNORECASE,
)
# Round instructions: "Please give your opening argument (round 1 of 3).", "Round 2 of 3: respond ...",
# "Your turn.", "Now give your closing statement."
_INSTRUCTION_START = re.compile(
    r"^\W*(round\s+\d+|(it\s+is\s+)?your\s+turn|please\b|now\b|give\b|respond\b|reply\b|answer\b|write\b|"
    r"continue\b|make\s+your|present\s+your|deliver\s+your|state\s+your|next\s+round|final\s+round|"
    r"opening\s+round|closing\s+round)",
    re.IGNORECASE,
)
_INSTRUCTION_ANYWHERE = re.compile(
    r"\b(round\s+\d+\s*(of|/)\s*\d+|your\s+(opening|closing|final|rebuttal|turn|argument|response|case)|"
    r"advance\s+your\s+case|(opening|closing|final)\s+(argument|statement|speech|remarks|round))\b",
    re.IGNORECASE,
)


def _is_instruction(text: str) -> bool:
    return bool(_INSTRUCTION_START.match(text) or _INSTRUCTION_ANYWHERE.search(text))


def _debater_turn(message: ChatMessage) -> tuple[str, str, str] | None:
    """(speaker, side, text) when this user message is another debater's turn, else None: a round
    instruction or any other note from the orchestrator is never a debater's turn."""
    text = message.content.strip()
    match = _SPEAKER.match(text)
    label = match.group(1).strip() if match else ""
    if match and label and not _NOT_A_SPEAKER.match(label) and not re.search(r"\d", label) and len(label.split()) <= 4:
        body = text[match.end() :].strip()
        if body and (message.name or match.group(2) or (label[:1].isupper() and not _is_instruction(body))):
            return label, _side(match.group(2) or ""), body
    name = (message.name or "").strip()
    if name and not _NOT_A_SPEAKER.match(name) and not _is_instruction(text):
        return name, "position", text
    return None


def _opponent(messages: Sequence[ChatMessage], own_side: str) -> tuple[str, str, str]:
    """(speaker, side, text) of the turn to answer: the latest other debater's turn from the other
    side, else the latest other debater's turn. Round instructions are never answered."""
    turns: list[tuple[str, str, str]] = []  # latest first
    loose: list[str] = []  # user text with no speaker that reads like an argument: a last resort
    user_messages = [m for m in messages if m.role == "user" and m.content.strip()]
    for index, message in enumerate(reversed(user_messages)):
        turn = _debater_turn(message)
        if turn is not None:
            turns.append(turn)
            continue
        text = message.content.strip()
        if (
            index > 0
            and not message.name
            and not _is_instruction(text)
            and not text.endswith("?")
            and len(text.split()) >= 6
        ):
            loose.append(text)
    for speaker, side, text in turns:
        if own_side != "position" and side not in (own_side, "position"):
            return speaker, side, text
    if turns:
        return turns[0]
    return ("", "position", loose[0]) if loose else ("", "position", "")


def parse_context(messages: Sequence[ChatMessage]) -> DebateContext:
    """The debate and the speaker as `messages` tell them; never fails (empty messages give a
    round-1 opening on "the question before us")."""
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
    instruction = next(
        (
            m.content
            for m in reversed(messages)
            if m.role == "user"
            and m.content.strip()
            and _debater_turn(m) is None
            and _is_instruction(m.content.strip())
        ),
        "",
    )
    round_text = _field(system, "round")
    if not round_text:  # or from a round instruction: "Round 2 of 3: ...", "... (round 2 of 3)."
        match = re.search(r"\bround\s+(\d+(?:\s*(?:of|/)\s*\d+)?)", instruction, re.IGNORECASE)
        round_text = match.group(1) if match else ""
    numbers = [int(n) for n in re.findall(r"\d+", round_text)]
    own_turns = sum(1 for m in messages if m.role == "assistant")
    round_number = max(1, numbers[0] if numbers else own_turns + 1)
    rounds = numbers[1] if len(numbers) > 1 else None

    budget = re.search(r"\bat most (\d+) tokens\b", _field(system, "length"), re.IGNORECASE)
    side = _side(stance)
    opponent, opponent_side, opponent_text = _opponent(messages, side)
    if rounds is not None and round_number >= rounds and round_number > 1:
        phase = "closing"
    elif round_number == 1:
        phase = "opening"
    elif re.search(r"\b(closing|final)\b", instruction, re.IGNORECASE):
        phase = "closing"
    else:
        phase = "rebuttal"
    return DebateContext(
        topic=topic or "the question before us",
        persona=persona or "a debater",
        stance=stance or "a considered middle ground",
        side=side,
        round_number=round_number,
        rounds=rounds,
        opponent=opponent,
        opponent_text=opponent_text,
        opponent_side=opponent_side,
        phase=phase,
        max_tokens=int(budget.group(1)) if budget else None,
    )
