"""The request bytes of a load run: serialised once up front, or rendered per call from a
template that holds ghz's call-template actions ({{.RequestNumber}}, {{.UUID}}, {{newUUID}}, ...).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from services.loadtest.reflection import CallError, Method, decode_json

_TEMPLATE = re.compile(r"\{\{\s*(?:\.(\w+)|(newUUID))\s*\}\}")


class Payloads:
    """The request bytes of request number i: pre-serialised, or rendered from the template."""

    def __init__(self, method: Method, data_text: str | None):
        self.method = method
        self.template: str | None = None
        self.data: Any = None
        self.fixed: list[bytes] = []
        text = data_text if data_text is not None and data_text.strip() else "{}"
        if _TEMPLATE.search(text):
            self.template = text
            # Reported as ghz does (the JSON as given); rendered and parsed once now so that a
            # bad template fails before the run rather than on every call.
            try:
                self.data = decode_json(text, "data")
            except CallError:
                self.data = text
            self._render_messages(0, "0")
        else:
            self.data = decode_json(text, "data")
            self.fixed = [m.SerializeToString() for m in method.parse_messages(self.data)]

    def _context(self, number: int, worker_id: str) -> dict[str, str]:
        now_ns = time.time_ns()
        m = self.method
        return {
            "WorkerID": worker_id,
            "RequestNumber": str(number),
            "FullyQualifiedName": m.full_name,
            "MethodName": m.name,
            "ServiceName": m.service,
            "InputName": m.descriptor.input_type.full_name,
            "OutputName": m.descriptor.output_type.full_name,
            "IsClientStreaming": str(m.client_streaming).lower(),
            "IsServerStreaming": str(m.server_streaming).lower(),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ns / 1e9)),
            "TimestampUnix": str(now_ns // 1_000_000_000),
            "TimestampUnixMilli": str(now_ns // 1_000_000),
            "TimestampUnixNano": str(now_ns),
            "UUID": str(uuid.uuid4()),
        }

    def _render_messages(self, number: int, worker_id: str) -> list[bytes]:
        assert self.template is not None
        context = self._context(number, worker_id)

        def sub(match: re.Match) -> str:
            if match.group(2):
                return str(uuid.uuid4())
            key = match.group(1)
            if key not in context:
                raise CallError(f"data template: unknown field .{key}")
            return context[key]

        rendered = _TEMPLATE.sub(sub, self.template)
        data = decode_json(rendered, "data (after the template)")
        return [m.SerializeToString() for m in self.method.parse_messages(data)]

    def for_call(self, number: int, worker_id: str) -> list[bytes]:
        """All messages of a call (client streaming) or a one-item list (unary requests,
        round-robin over a data list)."""
        messages = self._render_messages(number, worker_id) if self.template is not None else self.fixed
        if self.method.client_streaming:
            return messages
        return [messages[number % len(messages)]]
