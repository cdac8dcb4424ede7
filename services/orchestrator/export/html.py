"""The export as one self-contained HTML file: debate.html.j2, rendered by Jinja2 with autoescape on.

Every value of the debate goes through Jinja2's escaping (a turn that says `<script>` shows those
characters and runs nothing); the style is inline, and a Content-Security-Policy in the file
forbids scripts and every fetch, so the file opens the same offline, from a mail or a disk.
The template has one macro per part, in the order of the Markdown (markdown.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from services.common.text import plural
from services.orchestrator.export.markdown import VERDICT_REASONS, amount, count, state_word
from services.orchestrator.export.model import ExportDocument, segments, unquoted

TEMPLATE = Path(__file__).with_name("debate.html.j2")
# Marks from fonts every system has (the Markdown's emoji need an emoji font), coloured by the style.
QUOTE_MARKS = {"verified": "✓", "partial": "≈", "unverified": "✗"}


def _when(rfc3339: str) -> str:
    """ "2026-11-30T11:12:13Z" -> "2026-11-30 11:12 UTC"."""
    return f"{rfc3339[:10]} {rfc3339[11:16]} UTC" if len(rfc3339) >= 16 else "—"


def _by_key(items: list[Any], key: str, value: str) -> dict[Any, Any]:
    """{item.key: item.value} for the template's lookups."""
    return {getattr(item, key): getattr(item, value) for item in items}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False, keep_trailing_newline=True
    )
    env.filters.update(
        amount=amount,
        count=count,
        state_word=state_word,
        when=_when,
        segments=segments,
        unquoted=unquoted,
        quote_mark=QUOTE_MARKS.get,
        plural=plural,
    )
    env.globals.update(by_key=_by_key, verdict_reasons=VERDICT_REASONS)
    return env


_TEMPLATE = _environment().from_string(TEMPLATE.read_text(encoding="utf-8"))


def render_html(doc: ExportDocument) -> str:
    """The document as one HTML page (UTF-8 text)."""
    return _TEMPLATE.render(doc=doc)
