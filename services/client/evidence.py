"""Evidence in the terminal client: `--source ID=PATH` and `--hide-sources-from-judge` on
`debate`, and the check of each quote under a finished turn:

    ✓ verified [doc-1] "Air quality improved on every measured street"
    ≈ partial 94/100 [doc-1] "Air quality improved on most measured streets" (the document: "... every ...")
    ✗ unverified [doc-2] "nine in ten experts agree"
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from debate.common.v1 import common_pb2

from services.client.style import Style, safe_text

MAX_SHOWN_CHARS = 120


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """`--source ID=PATH` (repeatable) and `--hide-sources-from-judge`."""
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        type=parse_source,
        metavar="ID=PATH",
        help="a source document (a UTF-8 text file) that the debaters are given and quote as "
        '<quote source="ID">...</quote>; each quote is checked against it; repeat for more',
    )
    parser.add_argument(
        "--hide-sources-from-judge",
        action="store_true",
        help="the judge sees each quote's check but not the documents (default: it sees them)",
    )


def parse_source(spec: str) -> common_pb2.SourceDocument:
    """`ID=PATH`: the file's text, titled with its name. argparse.ArgumentTypeError when unreadable."""
    doc_id, sep, path = spec.partition("=")
    if not sep or not doc_id or not path:
        raise argparse.ArgumentTypeError(f"expected ID=PATH, got {spec!r}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error}") from error
    return common_pb2.SourceDocument(id=doc_id, title=Path(path).name, text=text)


def apply_sources(args: argparse.Namespace, config: common_pb2.DebateConfig) -> None:
    """Puts the parsed `--source` documents and `--hide-sources-from-judge` in `config`."""
    config.sources.extend(getattr(args, "source", None) or [])
    config.evidence.hide_sources_from_judge = bool(getattr(args, "hide_sources_from_judge", False))


def _shown(text: str) -> str:
    text = " ".join(safe_text(text).split())
    if len(text) > MAX_SHOWN_CHARS:
        text = text[: MAX_SHOWN_CHARS - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def quote_lines(s: Style, quotes: Sequence[common_pb2.Quote]) -> list[str]:
    """One line per checked quote: its mark, the source it names and its words."""
    lines = []
    for quote in quotes:
        cited = f" [{safe_text(quote.source_id)}]" if quote.source_id else ""
        if quote.status == common_pb2.QUOTE_STATUS_VERIFIED:
            mark = s.paint(f"{s.glyph('✓', '+')} verified", "green")
            lines.append(f"{mark}{cited} {_shown(quote.text)}")
        elif quote.status == common_pb2.QUOTE_STATUS_PARTIAL:
            mark = s.paint(f"{s.glyph('≈', '~')} partial {quote.score:.0f}/100", "yellow")
            near = f" (the document: {_shown(quote.best_match)})" if quote.best_match else ""
            lines.append(f"{mark}{cited} {_shown(quote.text)}{near}")
        else:
            mark = s.paint(f"{s.glyph('✗', 'x')} unverified", "red")
            lines.append(f"{mark}{cited} {_shown(quote.text)}")
    return lines


def quote_footer(s: Style, quotes: Sequence[common_pb2.Quote]) -> str:
    """The lines to add under a turn's footer ("" without quotes), each on its own indented line."""
    return "".join(f"\n  {line}" for line in quote_lines(s, quotes))
