"""Logging, configured once per process in `__main__`.

Every record carries the debate and request ids of the call it belongs to (a contextvar
set by the servicers), and every secret value the settings captured from the environment
(`SuiteSettings.secret_values()`) is masked before it is written.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Sequence

debate_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("debate_id", default="-")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with each of `secrets` (longest first, so a secret containing another goes whole)
    replaced by [REDACTED]."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


class ContextFilter(logging.Filter):
    """Adds debate_id / request_id to records and masks secrets in the message."""

    def __init__(self, secrets: Sequence[str]):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.debate_id = debate_id_var.get()
        record.request_id = request_id_var.get()
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
        return True


def configure_logging(service: str, level: str = "INFO", secrets: Sequence[str] = ()) -> None:
    """One stderr handler for the process; `secrets` (longest first) are masked in every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(secrets))
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {service} %(name)s [debate=%(debate_id)s req=%(request_id)s] %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "LiteLLM", "litellm"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
