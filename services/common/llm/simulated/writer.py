"""The simulated debater's writer: a debate turn from a `DebateContext`, deterministic for a seed.

It writes like a debater: round 1 opens (the stance, the persona's angle), later rounds answer
the other side's latest turn by quoting a short phrase of it verbatim, the last round closes;
each round brings claims and evidence-like sentences not used before, in the persona's voice.
The motion is read as a proposal ("Cities should ban X" -> "banning X", "the ban") or a claim
(`parse_motion`). Everything it writes starts with `SIM_LABEL`.

The sentences come from the phrasebook (phrasebook.py); this module decides which, in what
order, and fills their slots.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.llm.simulated.phrasebook import (
    ALLY_COUNTERS,
    ALLY_QUOTES,
    ANGLES,
    APPEALS,
    ARCHETYPES,
    CLAIMS,
    CLOSING_QUOTES,
    COUNTERS,
    DEFAULT_CONCERNS,
    DEFAULT_EVIDENCE,
    DETERMINERS,
    FIGURE,
    FINAL_LEADS,
    FINDINGS,
    GERUNDS,
    LATER_ANGLES,
    MIDDLE_ENDS,
    NUMBER_COUNTERS,
    NUMBER_WORDS,
    OPENINGS,
    PREPOSITIONS,
    PRESS,
    QUOTES,
    SHORT_NAMES,
    SIGNPOSTS,
    STOPWORDS,
    SUMMARIES,
    VERBS_AFTER_SUBJECT,
)
from services.common.llm.simulated.reading import DebateContext

SIM_LABEL = "[simulated]"

# --------------------------------------------------------------------------- the motion


@dataclass(frozen=True, slots=True)
class Motion:
    """The motion as the writer names it in its sentences."""

    text: str  # as written, without its final punctuation
    proposal: str  # a noun phrase: "banning private cars from historic centres" or "the motion"
    it: str  # a short name: "the ban", "the proposal", "the motion"
    subject: str  # what it is about: "private cars"
    policy: bool  # "X should do Y" (a proposal), not a claim about the world


def _gerund(verb: str) -> str:
    v = verb.lower()
    if v in GERUNDS:
        return GERUNDS[v]
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
        if bare in PREPOSITIONS or bare in ("that", "which", "who", "and", "or", "is", "are", "will"):
            break
        if not phrase and bare in DETERMINERS:
            continue
        phrase.append(word.strip(",;:"))
        if word.endswith((",", ";", ":")) or len(phrase) == 4:
            break
    return " ".join(phrase)


def parse_motion(topic: str) -> Motion:
    """The motion read from its text: a proposal ("Cities should ban X" -> "banning X", "the ban"),
    or a claim about the world ("Remote work is better ..." -> "remote work"). Never fails."""
    text = re.sub(r"\s+", " ", topic).strip().strip("\"“”'").rstrip(".!;: ").strip()
    if text.isupper() and len(text) > 12:  # SHOUTED: sentence case, short acronyms kept
        text = " ".join(
            w if len(w) <= 3 and w.isalpha() and w.lower() not in STOPWORDS else w.lower() for w in text.split()
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
        it = next((name for name, verbs in SHORT_NAMES.items() if verb.lower() in verbs), "the proposal")
        if policy.group("neg"):
            it = "the proposal"
        subject = _noun_phrase(rest.split()) or rest
        return Motion(text, proposal, it, subject.lower() if not subject.isupper() else subject, True)
    words = body.rstrip("?").split()
    subject = ""
    for i, word in enumerate(words):
        if i and word.lower() in VERBS_AFTER_SUBJECT:
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


def _usable(templates: Sequence[str], policy: bool) -> list[str]:
    """Templates that fit the motion: "P:" marks those that need a proposal (a policy motion), "C:" those
    for a claim about the world."""
    return [t[2:] if t[:2] in ("P:", "C:") else t for t in templates if not t.startswith("P:" if not policy else "C:")]


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z][A-Za-z'-]{3,}", text) if w.lower() not in STOPWORDS]


_META = re.compile(
    r"^(as\b|i speak as|speaking|from where|my angle|my perspective|in closing|this is my|let me|for these|"
    r"so the case|that is why|that is my|until the|those are|i will|i am here|i rise|my answer|weigh|"
    r"the case stands|across this debate|three things|i am\b|i support|i oppose|on the motion|but\b|"
    r"one last time|we have heard)",
    re.IGNORECASE,
)
_EDGE_WORDS = STOPWORDS | {"said", "says"}
# Clauses that lean on another ("in three of seven places, ...", "when ..."): quoted only when alone.
_SUBORDINATE = re.compile(
    r"^(in|on|at|by|for|from|with|after|before|once|when|while|where|if|as|since|though|"
    r"although|unless|until|across|within)\b",
    re.IGNORECASE,
)
# Sentences about the debate rather than the motion: reported speech, replies to "that", sign-offs.
_REPORTED = re.compile(
    r"\b(said|says|told us|argued|argues|summed up|comes down to|leans on|has still not|were right|agree with|"
    r"build on|in one line|words directly|best line|the motion)\b"
    r"|^(that (is|sounds)|there is something|i would not|and the effect|nothing\b)",
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
    cut = re.split(
        r"[,;(]|\s+(?:who|whose|that|which|with|from|wary|known|living|working|based)\b", persona, maxsplit=1
    )[0]
    words = cut.split()
    return " ".join(words[:8]) if words else persona


def _concerns_and_evidence(persona: str) -> tuple[list[str], list[str]]:
    lowered = persona.lower()
    concerns: list[str] = []
    evidence: list[str] = []
    for stems, cares, cites in ARCHETYPES:
        if any(stem in lowered for stem in stems):
            concerns += [c for c in cares if c not in concerns]
            evidence += cites
    if len(concerns) < 4:
        concerns += [c for c in DEFAULT_CONCERNS if c not in concerns]
    return concerns, evidence or list(DEFAULT_EVIDENCE)


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
    claims = _usable(CLAIMS[ctx.side], motion.policy)
    base.shuffle(claims)
    findings = _usable(FINDINGS[ctx.side], motion.policy)
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
        "n": NUMBER_WORDS[n],
        "m": NUMBER_WORDS[n + rng.randint(1, 4)],
        "pct": str(rng.randrange(55, 86)),
        "years": rng.choice(("a year", "two years", "three years")),
    }

    def fill(template: str, **extra: str) -> str:
        return template.format(**{**slots, **extra})

    r = ctx.round_number
    rotation = concerns[(r - 1) % len(concerns) :] + concerns[: (r - 1) % len(concerns)]
    parts: list[str] = []
    if ctx.phase == "closing":
        parts.append(rng.choice(FINAL_LEADS))
    if ctx.phase == "opening" or (not ctx.opponent_text and ctx.phase != "closing"):
        parts.append(fill(rng.choice(_usable(OPENINGS[ctx.side], motion.policy))))
        parts.append(fill(rng.choice(ANGLES)))
    if ctx.opponent_text and ctx.phase != "opening":
        opp = ctx.opponent or "the other side"
        phrase = _quote(ctx.opponent_text, rng, ctx.topic)
        ally = ctx.side != "position" and ctx.opponent_side == ctx.side
        lead = rng.choice(ALLY_QUOTES if ally else CLOSING_QUOTES if ctx.phase == "closing" else QUOTES)
        counters = NUMBER_COUNTERS[ctx.side] if FIGURE.search(phrase) else _usable(COUNTERS[ctx.side], motion.policy)
        counter = rng.choice(ALLY_COUNTERS if ally else counters)
        parts.append(fill(lead, opp=opp, Opp=_capital(opp), phrase=phrase))
        parts.append(fill(counter, c=rotation[1]))
        if ctx.phase == "rebuttal":
            parts.append(fill(rng.choice(LATER_ANGLES), c1=rotation[2]))
    count = 1 if ctx.phase == "closing" else 2
    first = 2 * (r - 1)  # each round its own claims, findings and ways of citing them
    for i in range(count):
        c = rotation[i % len(rotation)]
        parts.append(fill(claims[(first + i) % len(claims)], c=c))
        finding = fill(findings[(first + i) % len(findings)], c=rotation[(i + 2) % len(rotation)])
        parts.append(fill(evidence[(first + i) % len(evidence)], finding=finding))
    if ctx.phase == "rebuttal" and ctx.opponent_text and ctx.opponent_side != ctx.side:
        opp = ctx.opponent or "the other side"
        parts.append(fill(rng.choice(PRESS), opp=opp, Opp=_capital(opp), c=rotation[0]))
    if ctx.phase == "closing":
        parts.append(fill(rng.choice(SUMMARIES)))
        parts.append(fill(rng.choice(_usable(APPEALS[ctx.side], motion.policy))))
    elif ctx.phase == "opening":
        if ctx.rounds == 1:
            parts.append(fill(rng.choice(_usable(APPEALS[ctx.side], motion.policy))))
        else:
            parts.append(fill(rng.choice(SIGNPOSTS)))
    else:
        parts.append(fill(rng.choice(MIDDLE_ENDS[ctx.side])))
    return f"{SIM_LABEL} " + _tidy(" ".join(parts))
