"""Evidence in the judge's prompt: the debate's source documents (unless the debate hides them
from the judge) and, after each turn, the orchestrator's check of the turn's marked quotes.

The check lines are written by the engine, outside the quoted-data blocks, so a debater cannot
forge them; the quoted words inside them are JSON strings (one line, no marker can be built)
with the debaters' names masked, as in the turns. Each line says `verified`, `partial` or
`unverified`, the words of the three statuses the page and the CLI show.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from services.judge.model import QuoteCheck, Round, Source

EVIDENCE_NOTE = (
    'Debaters were asked to mark quotes of the source documents as <quote source="ID">...</quote>. '
    "After each turn that has such quotes, the engine lists its check of each (this list is written by the "
    "engine, not by the debater): verified (word for word in the named document, up to case, spacing and "
    "quote marks), partial (close to a passage, but not exact, or in another document) or unverified "
    "(not found in the documents). An unverified quote is not evidence; weigh a partial one with care."
)
HIDDEN_NOTE = (
    "The debaters were given source documents that are not shown to you; judge their quotes by the engine's check."
)


def has_evidence(sources: Sequence[Source], rounds: Sequence[Round]) -> bool:
    return bool(sources) or any(t.quotes for r in rounds for t in r.turns)


def source_lines(sources: Sequence[Source], quote: Callable[[str, str, str], str]) -> list[str]:
    """The note on quotes and the documents as quoted data (`quote(kind, label, text)` makes a
    block), or the note that they are hidden."""
    lines = [EVIDENCE_NOTE]
    if not sources:
        return [*lines, HIDDEN_NOTE, ""]
    lines.append(f"The source documents ({len(sources)}):")
    for source in sources:
        label = source.id + (f" ({source.title})" if source.title else "")
        lines.append(quote("SOURCE", label, source.text))
    return [*lines, ""]


def quote_check_lines(quotes: Sequence[QuoteCheck], label: str, mask: Callable[[str], str]) -> list[str]:
    """The engine's check of one turn's quotes (none when it has none); `mask` hides names."""
    if not quotes:
        return []
    lines = [f"Quote check of {label}'s turn ({len(quotes)} marked quote{'s' if len(quotes) != 1 else ''}):"]
    for i, q in enumerate(quotes, 1):
        cited = f" [{q.source_id}]" if q.source_id else ""
        words = json.dumps(mask(q.text), ensure_ascii=False)
        if q.status == "verified":
            lines.append(f"- quote {i}{cited}: verified: {words}")
        elif q.status == "partial":
            near = json.dumps(mask(q.best_match), ensure_ascii=False) if q.best_match else '""'
            lines.append(
                f"- quote {i}{cited}: partial (similarity {q.score:.0f} of 100): {words}; the document reads: {near}"
            )
        else:
            lines.append(f"- quote {i}{cited}: unverified (not found in the documents): {words}")
    return lines
