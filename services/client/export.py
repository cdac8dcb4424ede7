"""`debate-engine export`: a debate as one document to share (issue 19 part 5).

    debate-engine export DEBATE_ID [--format md|json|html] [-o FILE] [--target HOST:PORT]

Asks the orchestrator's ExportDebate for the debate in the format (Markdown by default) and writes
it to standard output, or to FILE with -o (then one line says where, and how long it is). The
document is the server's: the transcript with its quotes marked, the round scores, the verdicts
and the cost table with the ledger's exact amounts; the JSON is valid against
docs/schemas/debate-export.v1.json. Exit codes as the other commands': 0, 1 when the debate is not
found (or belongs to another tenant), the orchestrator cannot be reached or FILE cannot be
written (nothing is left half-written), 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.session import DEFAULT_TARGET, EXIT_FAILED, EXIT_OK, default_target, orchestrator, run
from services.client.style import Style

FORMATS = {"md": pb.EXPORT_FORMAT_MARKDOWN, "json": pb.EXPORT_FORMAT_JSON, "html": pb.EXPORT_FORMAT_HTML}


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="write a debate as Markdown, JSON or one HTML file: transcript, scores, verdicts, cost",
        description="Writes a debate (in any state) as one document: the participants, the transcript with "
        "its quotes marked, the round scores, the verdicts and the cost table with exact amounts.",
    )
    export.add_argument("debate_id")
    export.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default="md",
        help="md: Markdown to post as it is; json: valid against docs/schemas/debate-export.v1.json; "
        "html: one self-contained file (default: %(default)s)",
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of standard output ('-': standard output)"
    )
    export.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=default_target(),
        help=f"the orchestrator (default: $DEBATE_ENGINE_TARGET or {DEFAULT_TARGET})",
    )
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    async def main(style: Style) -> int:
        async with orchestrator(args.target, sys.stderr, style) as stub:
            reply = await stub.ExportDebate(
                pb.ExportDebateRequest(debate_id=args.debate_id, format=FORMATS[args.format]), timeout=60
            )
        if args.output in (None, "-"):
            sys.stdout.flush()
            sys.stdout.buffer.write(reply.content)
            sys.stdout.buffer.flush()
            return EXIT_OK
        try:
            write_file(Path(args.output), reply.content)
        except OSError as error:
            print(f"debate-engine: cannot write {args.output}: {error.strerror or error}", file=sys.stderr)
            return EXIT_FAILED
        print(f"wrote {args.output} ({len(reply.content):,} bytes, {reply.content_type.split(';')[0]})")
        return EXIT_OK

    return run(main, target=args.target)


def write_file(path: Path, content: bytes) -> None:
    """Writes `content` to `path` whole or not at all: a temporary file beside it, renamed over it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(content)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
