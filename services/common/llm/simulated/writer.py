"""Built-in simulated models: offline, deterministic for a seed, paced like a real model.

`sim/debater` (and any `sim/<name>` that is not registered and not a judge) writes a debate
argument from the request's messages. The convention it reads (and the orchestrator can
write with `debater_system_prompt`):

- the system message holds the debate and the speaker, one `Key: value` per line:
  `Topic:`, `Persona:`, `Stance:` and `Round: 2 of 3` (free prose works too: "You are ...",
  "argue for/against ...");
- user messages hold the other debaters' last turns, as `Name (stance): text` or with the
  message's `name` set; assistant messages are the speaker's own earlier turns;
- the orchestrator's round instruction ("Please give your opening argument (round 1 of 3).",
  "Round 2 of 3: ...", "Moderator: ...") is a user message too, but never a debater's turn: it
  only tells the round and the phase when the system message does not.

It writes like a debater: round 1 opens (the stance, the persona's angle), later rounds answer
the other side's latest turn by quoting a short phrase of it verbatim, the last round closes;
each round brings claims and evidence-like sentences not used before, in the persona's voice.
The motion is read as a proposal ("Cities should ban X" -> "banning X", "the ban") or a claim.
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
    *,
    topic: str,
    persona: str,
    stance: str,
    round_number: int | None = None,
    rounds: int | None = None,
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
    opponent_side: str = "position"  # the side of the turn answered
    phase: str = "opening"  # "opening" | "rebuttal" | "closing"


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
    )


# --------------------------------------------------------------------------- the motion

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "they",
        "them",
        "we",
        "our",
        "you",
        "your",
        "i",
        "my",
        "me",
        "he",
        "she",
        "his",
        "her",
        "not",
        "no",
        "so",
        "than",
        "then",
        "too",
        "very",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "about",
        "into",
        "over",
        "under",
        "more",
        "most",
        "less",
        "least",
        "such",
        "only",
        "also",
        "just",
        "any",
        "all",
        "some",
        "each",
        "every",
        "other",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
        "simulated",
        "while",
        "because",
        "however",
        "therefore",
        "thus",
        "yet",
        "still",
        "even",
        "much",
        "many",
        "own",
        "same",
    ]
)
_PREPOSITIONS = frozenset(
    [
        "from",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "to",
        "into",
        "across",
        "within",
        "over",
        "under",
        "during",
        "than",
        "without",
        "through",
        "between",
    ]
)
_DETERMINERS = frozenset(["a", "an", "the", "their", "our", "its", "all", "every", "some", "any", "his", "her"])
_GERUNDS = {
    "be": "being",
    "see": "seeing",
    "agree": "agreeing",
    "flee": "fleeing",
    "die": "dying",
    "lie": "lying",
    "tie": "tying",
    "go": "going",
    "do": "doing",
}
_SHORT_NAMES = {
    "the ban": ("ban", "prohibit", "outlaw", "forbid", "bar"),
    "the tax": ("tax",),
    "the cap": ("cap", "limit", "restrict"),
    "the requirement": ("require", "mandate", "compel", "oblige"),
    "abolition": ("abolish", "scrap", "end", "eliminate"),
}


@dataclass(frozen=True, slots=True)
class Motion:
    text: str  # as written, without its final punctuation
    proposal: str  # a noun phrase: "banning private cars from historic centres" or "the motion"
    it: str  # a short name: "the ban", "the proposal", "the motion"
    subject: str  # what it is about: "private cars"
    policy: bool  # "X should do Y" (a proposal), not a claim about the world


def _gerund(verb: str) -> str:
    v = verb.lower()
    if v in _GERUNDS:
        return _GERUNDS[v]
    if v.endswith("ie"):
        return v[:-2] + "ying"
    if v.endswith("e") and not v.endswith(("ee", "ye", "oe")) and len(v) > 2:
        return v[:-1] + "ing"
    if re.fullmatch(r"[^aeiou]*[aeiou][^aeiouwxy]", v):  # one syllable ending consonant-vowel-consonant
        return v + v[-1] + "ing"
    return v + "ing"


def _noun_phrase(words: list[str]) -> str:
    """The first noun phrase of `words`: up to a preposition or comma, without a leading determiner."""
    phrase: list[str] = []
    for word in words:
        bare = word.strip(",;:").lower()
        if bare in _PREPOSITIONS or bare in ("that", "which", "who", "and", "or", "is", "are", "will"):
            break
        if not phrase and bare in _DETERMINERS:
            continue
        phrase.append(word.strip(",;:"))
        if word.endswith((",", ";", ":")) or len(phrase) == 4:
            break
    return " ".join(phrase)


def parse_motion(topic: str) -> Motion:
    text = re.sub(r"\s+", " ", topic).strip().strip("\"“”'").rstrip(".!;: ").strip()
    if text.isupper() and len(text) > 12:  # SHOUTED: sentence case, short acronyms kept
        text = " ".join(
            w if len(w) <= 3 and w.isalpha() and w.lower() not in _STOPWORDS else w.lower() for w in text.split()
        )
        text = _capital(text)
    body = re.sub(
        r"^(this house (believes|thinks|holds)( that)?|resolved|motion|th[wb])\s*[:,]?\s*",
        "",
        text,
        flags=re.IGNORECASE,
    )
    body = re.sub(r"^this house (would|should)\s+", "we should ", body, flags=re.IGNORECASE)
    question = re.match(
        r"^should\s+((?:the|a|an|our|all|every|local|national)\s+)?(\S+)\s+(.+?)\?*$", body, re.IGNORECASE
    )
    if question:
        body = f"{(question.group(1) or '')}{question.group(2)} should {question.group(3)}"
    policy = re.match(
        r"^(?P<actor>.+?)\s+(?:should|must|ought to|needs? to|ha(?:ve|s) to)\s+(?P<neg>not\s+)?"
        r"(?P<verb>[A-Za-z-]+)\s+(?P<rest>.+)$",
        body.rstrip("?"),
        re.IGNORECASE,
    )
    if policy and len(policy.group("actor").split()) <= 6:
        verb = policy.group("verb")
        rest = re.sub(r"\s+", " ", re.sub(r"\btheir\s+(?!own\b)", "", policy.group("rest"))).strip()
        proposal = ("not " if policy.group("neg") else "") + f"{_gerund(verb)} {rest}"
        it = next((name for name, verbs in _SHORT_NAMES.items() if verb.lower() in verbs), "the proposal")
        if policy.group("neg"):
            it = "the proposal"
        subject = _noun_phrase(rest.split()) or rest
        return Motion(text, proposal, it, subject.lower() if not subject.isupper() else subject, True)
    words = body.rstrip("?").split()
    subject = ""
    for i, word in enumerate(words):
        if i and word.lower() in (
            "is",
            "are",
            "will",
            "can",
            "does",
            "do",
            "has",
            "have",
            "was",
            "were",
            "would",
            "could",
            "makes",
            "make",
            "beats",
            "beat",
        ):
            subject = _noun_phrase(words[:i])
            break
    wh_question = bool(re.match(r"^(what|why|how|who|which|when|where|is|are|do|does|can|will)\b", body, re.IGNORECASE))
    it = subject if subject and not wh_question and len(subject.split()) <= 3 else "the motion"
    subject = subject if subject and not wh_question else "this question"
    if len(subject) > 1 and not subject.isupper() and not subject[1:2].isupper():
        subject = subject[:1].lower() + subject[1:]
        it = it[:1].lower() + it[1:] if it != "the motion" else it
    return Motion(text, "the motion", it, subject, False)


# --------------------------------------------------------------------------- writing

# Persona archetypes: (stems in the persona, concerns it weighs, how it cites evidence).
# A concern fits "the effect on X", "X came out ahead" and "X paid the price".
_ARCHETYPES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("econom", "financ", "banker", "accountant"),
        ("the local economy", "household budgets", "public finances", "productivity"),
        ("The numbers bear this out: {finding}.", "Run the figures and the pattern is plain: {finding}."),
    ),
    (
        ("scien", "research", "statistic", "data"),
        ("health outcomes", "public health", "long-term outcomes", "the quality of daily life"),
        ("The studies are consistent on this: {finding}.", "The data point one way: {finding}."),
    ),
    (
        ("shop", "retail", "business", "merchant", "trader", "owner", "entrepreneur"),
        ("small businesses", "local trade", "footfall", "family livelihoods"),
        ("I see it on my own street: {finding}.", "Ask any trader and you will hear the same: {finding}."),
    ),
    (
        ("libert", "rights", "freedom"),
        ("personal freedom", "freedom of movement", "trust in local government", "local democracy"),
        ("The record on rules like this is clear: {finding}.", "We have been here before: {finding}."),
    ),
    (
        ("histor",),
        ("public trust", "past reforms", "the social fabric", "the next generation"),
        ("History is a reliable guide here: {finding}.", "The precedents are instructive: {finding}."),
    ),
    (
        ("law", "judge", "legal", "attorney", "barrister", "solicitor"),
        ("individual rights", "equal treatment", "respect for the rules", "due process"),
        ("The case law tells the same story: {finding}.", "Courts have seen this before: {finding}."),
    ),
    (
        ("doctor", "nurse", "physician", "medic", "health", "clinic", "paramedic"),
        ("public health", "patient outcomes", "vulnerable patients", "emergency access"),
        ("On the wards we see it plainly: {finding}.", "The health figures agree: {finding}."),
    ),
    (
        ("teach", "educat", "professor", "student", "school", "lecturer"),
        ("young people", "learning", "equal opportunity", "the next generation"),
        ("Every classroom teaches the same lesson: {finding}.", "The school records agree: {finding}."),
    ),
    (
        ("activist", "campaign", "organi", "communit", "union"),
        ("the people most affected", "local communities", "accountability", "working families"),
        (
            "Talk to the people affected and you hear it: {finding}.",
            "The communities I work with know this: {finding}.",
        ),
    ),
    (
        ("planner", "architect", "urban", "transport", "traffic"),
        ("public transport", "road safety", "public space", "everyday journeys"),
        ("The planning record is clear: {finding}.", "The design lessons are well known: {finding}."),
    ),
    (
        ("engineer", "developer", "programmer", "software"),
        ("reliability", "security", "maintenance costs", "productivity"),
        ("The engineering record is clear: {finding}.", "Every post-mortem I have read says the same: {finding}."),
    ),
    (
        ("environment", "climate", "ecolog", "green", "conservation"),
        ("air quality", "emissions", "green space", "future generations"),
        ("The environmental data are unambiguous: {finding}.", "The measurements tell the story: {finding}."),
    ),
    (
        ("skeptic", "sceptic", "critic", "cautious", "contrarian"),
        ("hidden costs", "unintended consequences", "public trust", "the taxpayer"),
        ("Look past the brochures and the record is plain: {finding}.", "The track record is sobering: {finding}."),
    ),
    (
        ("parent", "mother", "father", "resident", "citizen", "neighbo", "commuter"),
        ("family life", "daily routines", "child safety", "the neighbourhood"),
        ("Every family I know has seen it: {finding}.", "Ask the people who live with it: {finding}."),
    ),
    (
        ("philosoph", "ethic", "theolog"),
        ("fairness", "individual freedom", "our duties to others", "human dignity"),
        ("The argument has been tested before: {finding}.", "Experience backs the principle: {finding}."),
    ),
    (
        ("chef", "cook", "restaura", "food"),
        ("the customers", "the craft", "local suppliers", "tradition"),
        ("Any kitchen will tell you: {finding}.", "I have seen it over thirty years of service: {finding}."),
    ),
)
_DEFAULT_CONCERNS = ("everyday life", "the people involved", "fairness", "long-term outcomes", "public trust")
_DEFAULT_EVIDENCE = ("Experience bears this out: {finding}.", "The record is clear: {finding}.")

_NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)

_OPENINGS = {
    "for": (
        "I am here to argue for the motion: {motion}.",
        'I rise in support of the motion, "{motion}".',
        "P:I support {proposal}, and I will argue that it is overdue.",
        "P:The case for {proposal} is stronger than its critics admit, and I intend to make it.",
        "My answer to this motion is yes: {motion}.",
    ),
    "against": (
        "I oppose the motion: {motion}.",
        'I rise to oppose the motion, "{motion}".',
        "P:I am against {proposal}, and not for lack of sympathy with its goals.",
        "P:{Proposal} sounds decisive, but I will argue that it is the wrong answer.",
    ),
    "position": (
        'My position on "{motion}" is this: {stance}.',
        'I will not give either easy answer to "{motion}". My position is this: {stance}.',
    ),
}
_ANGLES = (
    "I speak as {persona}, so I judge {it} by its effect on {c0}.",
    "As {persona}, I look first at {c0}, because that is where this question is won or lost.",
    "My angle is that of {persona}: when I think about {subject}, I think first about {c0}.",
)
_LATER_ANGLES = (
    "Speaking again as {persona_short}, I keep returning to {c0}.",
    "As {persona_short}, I would add one more point, about {c1}.",
    "From where I stand, as {persona_short}, the test is still {c0}.",
    "Nothing in this debate has moved me, as {persona_short}, from asking about {c0}.",
    "My own starting point, as {persona_short}, has not changed: {c0}.",
)
_CLAIMS = {
    "for": (
        "Take {c}: the effect of {it} on {c} is both large and measurable.",
        "On {c} the case is strong, because the gains arrive early and keep compounding.",
        "Doing nothing is also a choice, and its cost shows up in {c} every single year.",
        "P:{It} asks no more than the best-run places already do of their own accord.",
        (
            "The critics describe the costs in detail and the benefits in a whisper; put them side by side on {c} and"
            " the balance is not close."
        ),
        "What this motion really offers is a better deal for {c}, and that is worth some inconvenience.",
        "The longer we wait, the more the same decision costs, above all in {c}.",
        "Every argument against this is an argument for a status quo that is quietly failing {c}.",
    ),
    "against": (
        "Take {c}: the effect of {it} on {c} is the part its supporters keep skipping.",
        "P:{It} promises a clean result, but on {c} it delivers a blunt rule with sharp edges.",
        "The burden of proof is on the side that wants change, and on {c} that burden has not been met.",
        "P:The people who pay for {it} are not the people voting for it, and it shows in {c}.",
        "P:There are gentler tools that reach the same goal without the damage to {c}.",
        "An idea that looks tidy on paper gets messy in practice, and the mess lands on {c}.",
        "P:Once a rule like this is in place it is very hard to undo, and {c} would carry the risk.",
        "Confident predictions about {it} have a poor record, and {c} is where they failed before.",
        "The supporters promise precision, but the effects on {c} would be broad and hard to reverse.",
    ),
    "position": (
        "Both sides have a point, but neither has looked hard at {c}.",
        "The honest answer depends on {c}, and on that the evidence favours my view.",
        "Once you weigh {c}, a simple yes or no stops looking sensible.",
        "The details decide this, not the slogan, and the detail that matters most is {c}.",
        "What works in one place can fail in the next, and which one it is depends on {c}.",
    ),
}
_FINDINGS = {
    "for": (
        "P:in {n} of the {m} places that tried something similar, {c} came out ahead within {years}",
        "C:in {n} of the {m} cases I have looked at, {c} came out ahead within {years}",
        "about {pct} per cent of the people most affected said afterwards that they would not go back",
        "the early complaints faded within a year, while the gains for {c} stayed",
        "the predicted chaos never arrived, and {c} came out ahead",
        "P:within {years}, support for the change was higher than before it started",
        "the places that moved first are now the ones others copy, and the gains for {c} are the reason",
    ),
    "against": (
        "P:in {n} of the {m} places that tried something similar, {c} paid the price within {years}",
        "C:in {n} of the {m} cases I have looked at, {c} paid the price within {years}",
        "roughly {pct} per cent of the people affected were never consulted, and most opposed it once they were",
        "the costs arrived on day one, while the promised benefits were still being promised {years} later",
        "the people with the least room to adapt paid the most, and {c} paid the price",
        "the promised gains shrank with every review, and {c} ended up worse off",
        "{pct} per cent of the people asked afterwards said they were worse off",
    ),
    "position": (
        "the results vary from place to place, and most of the difference comes down to {c}",
        "in {n} of the {m} cases I know, the outcome turned on the details rather than the principle",
        "about {pct} per cent of the people affected wanted something between the two extremes",
        "the same idea produced opposite results in neighbouring places, because {c} differed",
    ),
}
_QUOTES = (
    '{Opp} said: "{phrase}".',
    '{Opp} summed up their case in one line: "{phrase}".',
    'Let me take {opp}\'s words directly: "{phrase}".',
    '{Opp}\'s argument leans on this claim: "{phrase}".',
    'Let me start with what {opp} actually said: "{phrase}".',
)
_CLOSING_QUOTES = (
    '{Opp}\'s best line in this debate was "{phrase}".',
    'Everything {opp} argued comes down to one line: "{phrase}".',
    'Remember {opp}\'s words: "{phrase}".',
)
_ALLY_QUOTES = (
    '{Opp} made a point I want to build on: "{phrase}".',
    'I agree with {opp}, who said: "{phrase}".',
)
_COUNTERS = {
    "for": (
        "P:That is a fair worry, but it describes the first months of {it}, not the years after.",
        "P:But every reform of this kind met the same objection, and the places that went ahead rarely went back.",
        "C:That is a fear about {it}, not a finding, and the record on {c} says otherwise.",
        (
            "But that compares {it} with a perfect world, when the real comparison is the status quo, and the status"
            " quo is failing {c}."
        ),
        "That is an assertion, not evidence, and the evidence on {c} points the other way.",
        "P:Change always has critics at the start; what matters is whether {c} is better off at the end, and it is.",
        "Look at where it has actually happened and you find the opposite, above all on {c}.",
    ),
    "against": (
        "That sounds appealing, but it assumes the benefits arrive and the costs do not.",
        "But good intentions are not the test; the test is what happens to {c}, and there the record is poor.",
        "That is an assertion, not evidence, and the evidence on {c} points the other way.",
        "P:But notice what that leaves out: who pays for {it}, and what it does to {c}.",
        "C:But that is a forecast, not a record, and forecasts about {it} have been wrong before.",
        "That describes the plan, not the result, and the result is what {c} has to live with.",
        "It is easy to promise and harder to show, and on {c} nobody has shown it.",
    ),
    "position": (
        "There is something in that, but it is only half the picture, because {c} cuts both ways.",
        "I would not go that far: the evidence on {c} is more mixed than that.",
        "Both halves of that can be true, which is exactly why the details matter for {c}.",
    ),
}
_NUMBER_COUNTERS = {  # when the phrase answered is a figure
    "for": (
        "Numbers like that depend on which places you count, and the wider record on {c} points the other way.",
        "That figure catches the disruption of the first months and misses what came after.",
    ),
    "against": (
        "That figure counts the people who adapted, not the ones who were pushed out.",
        "Numbers like that depend on which places you count, and the wider record on {c} points the other way.",
    ),
    "position": ("That figure is real, but it hides how much the results varied, above all on {c}.",),
}
_FIGURE = re.compile(r"\d|\bper cent\b|\b(one|two|three|four|five|six|seven|eight|nine|ten) of the\b", re.IGNORECASE)
_ALLY_COUNTERS = (
    "I would add that {c} makes the point even stronger.",
    "And the effect on {c} only strengthens it.",
)
_PRESS = (
    "If {opp} were right, we would already see it in {c}, and we do not.",
    "{Opp} has still not told us what happens to {c}.",
    "Nothing {opp} said changes the picture on {c}.",
)
_SIGNPOSTS = (
    "That is my opening case, and I look forward to hearing how the other side answers it.",
    "I will come back to {c1} when we reach the rebuttals.",
    "Those are the grounds on which I ask you to judge this debate.",
)
_MIDDLE_ENDS = {
    "for": (
        "Until the other side answers the point about {c0}, the case for the motion stands.",
        "That is why I remain firmly for the motion.",
    ),
    "against": (
        "Until the other side answers the point about {c0}, the case against the motion stands.",
        "That is why I remain firmly against the motion.",
    ),
    "position": (
        "That is why I hold my position: {stance}.",
        "So my view is unchanged: {stance}.",
    ),
}
_FINAL_LEADS = (
    "In closing, let me bring the threads of this debate together.",
    "This is my final word, so let me be direct.",
    "As we reach the last round, the picture is clear.",
    "We have heard the arguments; let me weigh them.",
    "One last time, here is what this debate has shown.",
)
_SUMMARIES = (
    "Across this debate I have argued from {c0}, from {c1} and from {c2}, and each points the same way.",
    "Three things have carried my case: {c0}, {c1} and {c2}.",
)
_APPEALS = {
    "for": (
        "For these reasons I urge you to support the motion.",
        "P:The case stands: {proposal} is worth doing, and the alternative costs us more.",
        "Weigh the arguments on {c0} and {c1}, and I believe you will vote for the motion.",
    ),
    "against": (
        "For these reasons I urge you to vote against the motion.",
        "The burden was on the other side, and it has not been met; I ask you to oppose the motion.",
        "Weigh the arguments on {c0} and {c1}, and I believe you will reject the motion.",
    ),
    "position": (
        "That is why my position holds: {stance}.",
        "Weigh it carefully, and I think you will land where I have: {stance}.",
    ),
}


def _usable(templates: Sequence[str], policy: bool) -> list[str]:
    """Templates that fit the motion: "P:" marks those that need a proposal (a policy motion), "C:" those
    for a claim about the world."""
    return [t[2:] if t[:2] in ("P:", "C:") else t for t in templates if not t.startswith("P:" if not policy else "C:")]


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z][A-Za-z'-]{3,}", text) if w.lower() not in _STOPWORDS]


_META = re.compile(
    r"^(as\b|i speak as|speaking|from where|my angle|my perspective|in closing|this is my|let me|for these|"
    r"so the case|that is why|that is my|until the|those are|i will|i am here|i rise|my answer|weigh|"
    r"the case stands|across this debate|three things|i am\b|i support|i oppose|on the motion|but\b|"
    r"one last time|we have heard)",
    re.IGNORECASE,
)
_EDGE_WORDS = _STOPWORDS | {"said", "says"}
# Clauses that lean on another ("in three of seven places, ...", "when ..."): quoted only when alone.
_SUBORDINATE = re.compile(
    r"^(in|on|at|by|for|from|with|after|before|once|when|while|where|if|as|since|though|"
    r"although|unless|until|across|within)\b",
    re.IGNORECASE,
)
# Sentences about the debate rather than the motion: reported speech, replies to "that", sign-offs.
_REPORTED = re.compile(
    r"\b(said|says|told us|argued|argues|summed up|comes down to|leans on|has still not|were right|agree with|"
    r"build on|in one line|words directly|best line|the motion)\b|^(that (is|sounds)|there is something|i would not|and the effect|nothing\b)",
    re.IGNORECASE,
)


def _quote(text: str, rng: random.Random, topic: str = "") -> str:
    """A short phrase of `text`, verbatim: a clause of one of its substantive sentences (not a quotation
    of someone else, not a speaker's introduction, opening or closing formula)."""
    text = re.sub(r"\s+", " ", text.replace(SIM_LABEL, " ")).strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    topic_lc = topic.lower().rstrip(".!? ")
    unquoted = [s for s in sentences if not re.search(r"[\"“”]", s)]
    good = [
        s
        for s in unquoted
        if not _META.match(s) and not _REPORTED.search(s) and (not topic_lc or topic_lc not in s.lower())
    ]
    pool = good or unquoted or sentences or [text]
    sentence = rng.choice(pool)
    if len(sentence.split()) <= 18:  # a short sentence is quoted whole
        return sentence.strip("\"“”' ").rstrip(".,;:!?")
    pieces = re.split(r"([,;:()]|\s[-–—]\s)", sentence)
    clauses: list[tuple[str, bool]] = []  # (clause, introduces what follows a colon)
    for i in range(0, len(pieces), 2):
        clause = pieces[i].strip()
        if len(clause.split()) >= 4:
            clauses.append((clause, i + 1 < len(pieces) and pieces[i + 1] == ":"))
    clause = max(
        clauses,
        key=lambda c: (
            not c[1],
            not _SUBORDINATE.match(c[0]),
            min(len(_content_words(c[0])), 6),
            -abs(len(c[0].split()) - 9),
        ),
        default=(sentence, False),
    )[0]
    words = clause.strip("\"“”' ").split()
    while len(words) > 4 and words[0].lower().strip(".,;:!?") in ("but", "and", "so", "yet", "because", "while"):
        words = words[1:]
    cut = len(words) > 16
    if cut:
        words = words[:14]
        while len(words) > 3 and words[-1].lower().strip(".,;:!?") in _EDGE_WORDS:
            words = words[:-1]
    return " ".join(words).strip().rstrip(".,;:!?") + ("…" if cut else "")


def _persona_short(persona: str) -> str:
    cut = re.split(r"[,;(]|\s+(?:who|whose|that|which|with|from|wary|known|living|working|based)\b", persona, 1)[0]
    words = cut.split()
    return " ".join(words[:8]) if words else persona


def _concerns_and_evidence(persona: str) -> tuple[list[str], list[str]]:
    lowered = persona.lower()
    concerns: list[str] = []
    evidence: list[str] = []
    for stems, cares, cites in _ARCHETYPES:
        if any(stem in lowered for stem in stems):
            concerns += [c for c in cares if c not in concerns]
            evidence += cites
    if len(concerns) < 4:
        concerns += [c for c in _DEFAULT_CONCERNS if c not in concerns]
    return concerns, evidence or list(_DEFAULT_EVIDENCE)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _tidy(text: str) -> str:
    """No doubled or stray punctuation, whatever the slots held."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    text = re.sub(r"(?<!\.)([.!?])([\"”]?)\s*[.,;:](?!\.)", r"\1\2", text)
    text = re.sub(r",\s*([.!?])", r"\1", text)
    text = re.sub(r"([;:])\s*([.,;:])", r"\1", text)
    text = re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)
    return text.strip()


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def write_debate_turn(ctx: DebateContext, seed: int) -> str:
    """The simulated debater's reply: deterministic for (seed, context).

    Round 1 opens (the stance and the persona's angle), later rounds answer a phrase the other side
    actually said, and the last round closes; each round adds claims and evidence not used before."""
    base = _rng(ctx.topic, ctx.persona, ctx.stance)  # the debater's case: the same every round
    rng = _rng(seed, ctx.topic, ctx.persona, ctx.stance, ctx.round_number, ctx.opponent_text)
    motion = parse_motion(ctx.topic)
    concerns, evidence = _concerns_and_evidence(ctx.persona)
    base.shuffle(concerns)
    claims = _usable(_CLAIMS[ctx.side], motion.policy)
    base.shuffle(claims)
    findings = _usable(_FINDINGS[ctx.side], motion.policy)
    base.shuffle(findings)
    stance = ctx.stance.strip().rstrip(".!;: ")
    n = rng.randint(3, 8)
    slots = {
        "motion": motion.text,
        "proposal": motion.proposal,
        "Proposal": _capital(motion.proposal),
        "it": motion.it,
        "It": _capital(motion.it),
        "subject": motion.subject,
        "stance": stance,
        "persona": ctx.persona.strip().rstrip("."),
        "persona_short": _persona_short(ctx.persona.strip().rstrip(".")),
        "c0": concerns[0],
        "c1": concerns[1],
        "c2": concerns[2],
        "n": _NUMBER_WORDS[n],
        "m": _NUMBER_WORDS[n + rng.randint(1, 4)],
        "pct": str(rng.randrange(55, 86)),
        "years": rng.choice(("a year", "two years", "three years")),
    }

    def fill(template: str, **extra: str) -> str:
        return template.format(**{**slots, **extra})

    r = ctx.round_number
    rotation = concerns[(r - 1) % len(concerns) :] + concerns[: (r - 1) % len(concerns)]
    parts: list[str] = []
    if ctx.phase == "closing":
        parts.append(rng.choice(_FINAL_LEADS))
    if ctx.phase == "opening" or (not ctx.opponent_text and ctx.phase != "closing"):
        parts.append(fill(rng.choice(_usable(_OPENINGS[ctx.side], motion.policy))))
        parts.append(fill(rng.choice(_ANGLES)))
    if ctx.opponent_text and ctx.phase != "opening":
        opp = ctx.opponent or "the other side"
        phrase = _quote(ctx.opponent_text, rng, ctx.topic)
        ally = ctx.side != "position" and ctx.opponent_side == ctx.side
        lead = rng.choice(_ALLY_QUOTES if ally else _CLOSING_QUOTES if ctx.phase == "closing" else _QUOTES)
        counters = _NUMBER_COUNTERS[ctx.side] if _FIGURE.search(phrase) else _usable(_COUNTERS[ctx.side], motion.policy)
        counter = rng.choice(_ALLY_COUNTERS if ally else counters)
        parts.append(fill(lead, opp=opp, Opp=_capital(opp), phrase=phrase))
        parts.append(fill(counter, c=rotation[1]))
        if ctx.phase == "rebuttal":
            parts.append(fill(rng.choice(_LATER_ANGLES), c1=rotation[2]))
    count = 1 if ctx.phase == "closing" else 2
    first = 2 * (r - 1)  # each round its own claims, findings and ways of citing them
    for i in range(count):
        c = rotation[i % len(rotation)]
        parts.append(fill(claims[(first + i) % len(claims)], c=c))
        finding = fill(findings[(first + i) % len(findings)], c=rotation[(i + 2) % len(rotation)])
        parts.append(fill(evidence[(first + i) % len(evidence)], finding=finding))
    if ctx.phase == "rebuttal" and ctx.opponent_text and ctx.opponent_side != ctx.side:
        opp = ctx.opponent or "the other side"
        parts.append(fill(rng.choice(_PRESS), opp=opp, Opp=_capital(opp), c=rotation[0]))
    if ctx.phase == "closing":
        parts.append(fill(rng.choice(_SUMMARIES)))
        parts.append(fill(rng.choice(_usable(_APPEALS[ctx.side], motion.policy))))
    elif ctx.phase == "opening":
        if ctx.rounds == 1:
            parts.append(fill(rng.choice(_usable(_APPEALS[ctx.side], motion.policy))))
        else:
            parts.append(fill(rng.choice(_SIGNPOSTS)))
    else:
        parts.append(fill(rng.choice(_MIDDLE_ENDS[ctx.side])))
    return f"{SIM_LABEL} " + _tidy(" ".join(parts))


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

    pace_tick = 0.1  # seconds between the chunks of a paced stream

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
        from services.common.tokens import count_message_tokens, count_text_tokens

        loop = asyncio.get_running_loop()
        started = loop.time()
        text = await self._reply_text(request)
        pieces, truncated = _truncate(request.model, _pieces(text), max(0, request.max_tokens), count_text_tokens)
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
            completion_tokens=count_text_tokens(request.model, "".join(pieces)),
        )
        yield Completion(
            model=request.model, usage=usage, finish_reason="length" if truncated else "stop", simulated=True
        )
