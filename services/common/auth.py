"""Who is calling: the tenant of the current call.

An interceptor (filled in by the reliability issue) sets `tenant_var` from the caller's
bearer token; without configured API keys every caller is the tenant "default".
Domain code reads `current_tenant()` and stores it with what it creates.
"""

from __future__ import annotations

import contextvars

DEFAULT_TENANT = "default"

tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default=DEFAULT_TENANT)


def current_tenant() -> str:
    return tenant_var.get()
