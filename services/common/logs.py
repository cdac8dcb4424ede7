"""Logging, configured once per process in `__main__`.

Every record carries the debate and request ids of the call it belongs to (a contextvar
set by the servicers), the trace and span ids of the current OpenTelemetry span (32 and 16 hex
digits, as W3C traceparent writes them; "-" without a span, as when traces are off), and every
secret value the settings captured from the environment (`SuiteSettings.secret_values()`) is
masked before it is written.

Two formats (LOG_FORMAT): `text`, one readable line per record, and `json`, one JSON object per
line (python-json-logger) with the keys time, level, logger, message, service, debate_id,
request_id, trace_id and span_id (and exc_info for an exception).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Sequence

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

debate_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("debate_id", default="-")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with each of `secrets` (longest first, so a secret containing another goes whole)
    replaced by [REDACTED]."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def current_trace_ids() -> tuple[str, str]:
    """The current span's trace id and span id in hex, or ("-", "-") without a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "-", "-"
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


class ContextFilter(logging.Filter):
    """Adds debate_id / request_id / trace_id / span_id to records and masks secrets in the message."""

    def __init__(self, secrets: Sequence[str]):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.debate_id = debate_id_var.get()
        record.request_id = request_id_var.get()
        record.trace_id, record.span_id = current_trace_ids()
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
        return True


TEXT_FORMAT = (
    "%(asctime)s %(levelname)s {service} %(name)s "
    "[debate=%(debate_id)s req=%(request_id)s trace=%(trace_id)s] %(message)s"
)
JSON_FIELDS = ("levelname", "name", "message", "debate_id", "request_id", "trace_id", "span_id")
JSON_NAMES = {"levelname": "level", "name": "logger"}


class JsonLines(JsonFormatter):
    """python-json-logger's formatter, one object per line; `time` is ISO 8601 in UTC. An
    exception's text is the one ContextFilter masked (`exc_text`) when it made one."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_text:
            exc_info, record.exc_info = record.exc_info, None
            try:
                return super().format(record)
            finally:
                record.exc_info = exc_info
        return super().format(record)


def log_formatter(service: str, log_format: str = "text") -> logging.Formatter:
    """The formatter of LOG_FORMAT `text` or `json` (see the module docstring); ValueError otherwise.
    In json, fields passed with `extra=` are emitted too."""
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT.format(service=service))
    if log_format == "json":
        return JsonLines(
            list(JSON_FIELDS), rename_fields=JSON_NAMES, static_fields={"service": service}, timestamp="time"
        )
    raise ValueError(f"LOG_FORMAT must be text or json, not {log_format!r}")


def configure_logging(service: str, level: str = "INFO", secrets: Sequence[str] = (), log_format: str = "text") -> None:
    """One stderr handler for the process, in `log_format` (text or json); `secrets` (longest
    first) are masked in every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(secrets))
    handler.setFormatter(log_formatter(service, log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "LiteLLM", "litellm"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
