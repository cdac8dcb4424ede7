"""The simulated debater's quotes of a debate's source documents (evidence), so that the quote
checker's path runs offline.

When the request carries the documents (the message `services.common.quotes.sources_message`
writes), each turn gets one or two quotes of a sentence of a document, marked
`<quote source="ID">...</quote>` as debaters are asked to, inserted after the turn's first
sentence (so that a turn cut to its budget keeps them). Deterministic for (seed, round,
documents). Some are inexact, as a real model's are:

- `exact` (about half): the words as the document writes them: verified;
- `case`, `space`, `marks`: different case, doubled spaces or a line break, curly quote marks:
  verified too (the checker tolerates them);
- `changed`: one word replaced: partial;
- `invented`: a sentence that is in no document: unverified.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from services.common.llm.base import ChatMessage
from services.common.quotes import read_sources_message

KINDS = ("exact", "exact", "exact", "case", "space", "marks", "changed", "invented")
_LEADS = (
    "The record says it plainly: {quote}.",
    "As the source puts it, {quote}.",
    "Look at the evidence we were given: {quote}.",
    "The document is explicit that {quote}.",
)
_INVENTED = (
    "every independent study has confirmed this beyond any doubt",
    "nine in ten experts agree that the change paid for itself within a year",
    "the results were unanimous across all forty sites that were measured",
    "no serious observer has ever disputed these figures",
)
_SWAPS = {"not": "never", "more": "less", "most": "many", "all": "some", "is": "was", "are": "were"}
_SENTENCE = re.compile(r"[^.!?…\n]+[.!?…]?")


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def documents(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """The (id, text) documents the request carries (none without a sources message)."""
    for message in messages:
        if message.role == "system":
            found = read_sources_message(message.content)
            if found:
                return found
    return []


def _excerpts(text: str) -> list[str]:
    """Sentences of a document worth quoting: 5 to 30 words, without their final punctuation."""
    out = []
    for match in _SENTENCE.finditer(text):
        sentence = match.group(0).strip().rstrip(".!?…").strip()
        if 5 <= len(sentence.split()) <= 30 and "<" not in sentence and ">" not in sentence:
            out.append(sentence)
    return out


def _alter(excerpt: str, kind: str, rng: random.Random) -> str:
    words = excerpt.split()
    if kind == "case":
        return excerpt.upper() if rng.random() < 0.5 else excerpt.lower()
    if kind == "space":
        at = rng.randrange(1, len(words))
        return " ".join(words[:at]) + ("  \n" if rng.random() < 0.5 else "   ") + " ".join(words[at:])
    if kind == "marks":
        return "\u201c" + excerpt.replace("'", "\u2019").replace('"', "\u201d") + "\u201d"
    if kind == "changed":
        at = rng.randrange(1, len(words))
        word = words[at].lower().strip(",;:")
        words[at] = _SWAPS.get(word, "hardly" if word != "hardly" else "surely")
        return " ".join(words)
    return excerpt


def quote_sources(text: str, messages: Sequence[ChatMessage], seed: int, round_number: int) -> str:
    """`text` (a simulated turn) with quotes of the request's documents inserted after its first
    sentence; `text` as it is when the request has no documents or they have no quotable sentence."""
    docs = [(doc_id, excerpts) for doc_id, body in documents(messages) if (excerpts := _excerpts(body))]
    if not docs:
        return text
    rng = _rng(seed, round_number, *(doc_id for doc_id, _ in docs))
    sentences = []
    for _ in range(rng.choice((1, 2))):
        doc_id, excerpts = rng.choice(docs)
        kind = rng.choice(KINDS)
        words = rng.choice(_INVENTED) if kind == "invented" else _alter(rng.choice(excerpts), kind, rng)
        sentences.append(rng.choice(_LEADS).format(quote=f'<quote source="{doc_id}">{words}</quote>'))
    quotes = " ".join(sentences)
    first = re.search(r"(?<=[.!?])\s+", text)
    if first is None:
        return f"{text} {quotes}"
    return f"{text[: first.end()]}{quotes} {text[first.end() :]}"
