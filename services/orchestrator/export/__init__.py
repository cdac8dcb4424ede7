"""Export (issue 19 part 5): a debate as one document to share, in Markdown, JSON or HTML.

    render(debate, "md" | "json" | "html") -> Rendered(content_type, content, file_name)

`model.build_document` turns the `Debate` message (what GetDebate returns) into the one model
every format renders (model.ExportDocument); `markdown`, `html` and the JSON below render it.
The JSON is the model as it is, valid against the JSON Schema `json_schema()` returns, published
as docs/schemas/debate-export.v1.json (scripts/gen_export_schema.py writes it; a test fails when
it drifts). The servicer's ExportDebate and, through it, the CLI's `debate-engine export` and the
page's export buttons all call `render`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.orchestrator.export.html import render_html
from services.orchestrator.export.markdown import render_markdown
from services.orchestrator.export.model import SCHEMA_ID, SCHEMA_VERSION, ExportDocument, build_document

FORMATS = ("md", "json", "html")
CONTENT_TYPES = {
    "md": "text/markdown; charset=utf-8",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
}
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Rendered:
    content_type: str
    content: bytes  # UTF-8
    file_name: str


def render_json(doc: ExportDocument) -> str:
    """The document as JSON: two-space indents, keys in the model's order, amounts as strings."""
    return doc.model_dump_json(by_alias=True, indent=2) + "\n"


RENDERERS = {"md": render_markdown, "json": render_json, "html": render_html}


def render(debate: pb.Debate, fmt: str) -> Rendered:
    """The debate as a document in `fmt` (one of FORMATS; KeyError for any other)."""
    text = RENDERERS[fmt](build_document(debate))
    return Rendered(CONTENT_TYPES[fmt], text.encode("utf-8"), f"debate-{debate.debate_id}.{fmt}")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the JSON export, as published."""
    schema = ExportDocument.model_json_schema(by_alias=True, mode="serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "version": SCHEMA_VERSION,
        "title": "Debate Engine debate export",
        "description": (
            "A debate exported by the Debate Engine (ExportDebate with EXPORT_FORMAT_JSON, or "
            "`debate-engine export ID --format json`): settings, participants, the transcript with "
            "checked quotes, round scores, verdict versions, votes, an early stop and the cost. "
            "Amounts are exact decimal strings."
        ),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
