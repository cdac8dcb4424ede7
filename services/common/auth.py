"""Who is calling: the tenant of the current call.

Callers authenticate with an API key sent as `authorization: Bearer <key>`. The keys come
from the settings (`API_KEYS="key1=tenantA,key2=tenantB"`); each maps to one tenant.

- With keys configured, `AuthInterceptor` answers UNAUTHENTICATED to a call without a key or
  with an unknown one (health and reflection stay open, so probes and grpcurl's `list` work),
  and runs every other handler with `tenant_var` set to the key's tenant.
- Without configured keys every caller is the tenant "default" (the local demo and tests).

Domain code reads `current_tenant()` and stores it with what it creates.

A key is never logged and never part of an error message: keys are kept as SHA-256 digests
once parsed, and a rejected call's log line and status say only "missing" or "unknown".

Behind a gateway that authenticates callers itself (Envoy's jwt_authn, see
docs/reliability.md), the orchestrator can take the tenant from a header that gateway sets:
`TRUSTED_TENANT_HEADER=x-debate-tenant`. Only then, and only for that one header, does
`AuthInterceptor` believe what a caller says about itself, so such a service must be reachable
only through that gateway (or over mutual TLS by the suite's own peers): the header is the
trust boundary. A call without the header falls back to the API keys (if any; otherwise it is
refused, never the tenant "default").

Service-to-service calls carry the calling service's own key (`SERVICE_API_KEY`), added by
`services.common.channels.open_channel` as call metadata; give that key an entry in the
called services' `API_KEYS` (for example `API_KEYS="<user key>=alice,<service key>=suite"`).

Internal services. `INTERNAL_CALLERS` (ServiceSettings.internal_callers; comma-separated
tenant names; empty: off) limits a service to the tenants it names: any other authenticated
caller gets PERMISSION_DENIED (reason INTERNAL_SERVICE) on every method but health and
reflection. The judge and accounting default to `suite` (SERVICE_TENANT), the tenant that
the suite's service key belongs to: none of their methods serves a tenant (tenants reach
costs and verdicts through the orchestrator, which checks that they own the debate). A
service with internal callers refuses to start when a named caller has no key in `API_KEYS`,
or with TRUSTED_TENANT_HEADER (a header could name an internal caller). Without API keys
there is no identity to check, and every caller is still the tenant "default".
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping

import grpc

from services.common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.common.grpc_errors import abort_with
from services.common.handlers import HandlerCache, replace_behavior, wrap_behavior

DEFAULT_TENANT = "default"
INTERNAL_CALLERS_SETTING = "INTERNAL_CALLERS"
INTERNAL_SERVICE_REASON = "INTERNAL_SERVICE"

tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default=DEFAULT_TENANT)

log = logging.getLogger(__name__)

AUTHORIZATION_HEADER = "authorization"
BEARER = "bearer"

# Methods every caller may use without a key: health probes and server reflection.
OPEN_METHOD_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MIN_KEY_LENGTH = 8

# The setting (ServiceSettings.trusted_tenant_header) that names a header whose value is taken
# as the caller's tenant (off when empty).
TRUSTED_TENANT_HEADER_SETTING = "TRUSTED_TENANT_HEADER"
_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_RESERVED_HEADERS = {AUTHORIZATION_HEADER, "content-type", "te", "user-agent", "host"}


def parse_tenant_header(name: str | None) -> str:
    """The validated (lower-case) header name of TRUSTED_TENANT_HEADER, or "" when off."""
    name = (name or "").strip().lower()
    if not name:
        return ""
    if not _HEADER_NAME.match(name) or name in _RESERVED_HEADERS or name.startswith("grpc-") or name.endswith("-bin"):
        raise ValueError(
            f"{TRUSTED_TENANT_HEADER_SETTING} {name!r} must be a plain lower-case header name "
            "(letters, digits, '-'; not authorization, grpc-*, or *-bin)"
        )
    return name


def parse_internal_callers(spec: str | None) -> frozenset[str]:
    """The tenant names of INTERNAL_CALLERS (`suite` or `suite,ops`; empty: off).
    ValueError for a name that is not a valid tenant name."""
    names = frozenset(part.strip() for part in (spec or "").split(",") if part.strip())
    for name in sorted(names):
        if not _TENANT_NAME.match(name):
            raise ValueError(f"{INTERNAL_CALLERS_SETTING}: {name!r} must be a tenant name ({_TENANT_NAME.pattern})")
    return names


def header_values(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> list[str]:
    """Every value of header `name` in call metadata."""
    values = []
    for key, value in metadata or ():
        if key.lower() == name:
            values.append(value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value)
    return values


def current_tenant() -> str:
    return tenant_var.get()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """API key -> tenant, held as SHA-256 digests of the keys (the keys themselves are dropped)."""

    def __init__(self, pairs: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        self._tenants: dict[bytes, str] = {}
        for index, (key, tenant) in enumerate(items, start=1):
            # Error messages name the entry's position and the tenant, never the key.
            if len(key) < _MIN_KEY_LENGTH or any(c.isspace() for c in key):
                raise ValueError(
                    f"API key #{index} (tenant {tenant!r}) must be at least {_MIN_KEY_LENGTH} characters without spaces"
                )
            if not _TENANT_NAME.match(tenant):
                raise ValueError(f"API key #{index}: tenant {tenant!r} must match {_TENANT_NAME.pattern}")
            digest = _digest(key)
            if digest in self._tenants and self._tenants[digest] != tenant:
                raise ValueError(f"API key #{index} is given twice with different tenants")
            self._tenants[digest] = tenant

    @classmethod
    def parse(cls, spec: str) -> ApiKeys:
        """`key1=tenantA,key2=tenantB` (commas or newlines between entries, spaces ignored)."""
        pairs = []
        for index, entry in enumerate(re.split(r"[,\n]", spec or ""), start=1):
            entry = entry.strip()
            if not entry:
                continue
            key, sep, tenant = entry.partition("=")
            if not sep:
                raise ValueError(f"API_KEYS entry #{index} is not of the form key=tenant")
            pairs.append((key.strip(), tenant.strip()))
        return cls(pairs)

    def __bool__(self) -> bool:
        return bool(self._tenants)

    def __len__(self) -> int:
        return len(self._tenants)

    def __repr__(self) -> str:  # never shows a key
        return f"ApiKeys({len(self)} keys, tenants={sorted(set(self._tenants.values()))})"

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants.values())

    def key_count(self, tenant: str) -> int:
        """How many distinct keys belong to `tenant`."""
        return sum(1 for owner in self._tenants.values() if owner == tenant)

    def tenant_for(self, key: str) -> str | None:
        digest = _digest(key)
        # A dict lookup by digest leaks nothing useful about the key; compare_digest guards the last step.
        for known, tenant in self._tenants.items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    for name, value in metadata or ():
        if name.lower() != AUTHORIZATION_HEADER:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == BEARER and token.strip():
            return token.strip()
        return None
    return None


def bearer_metadata(key: str) -> tuple[tuple[str, str], ...]:
    """Metadata a client sends to authenticate with `key`."""
    return ((AUTHORIZATION_HEADER, f"Bearer {key}"),)


def is_open_method(method: str) -> bool:
    return method.startswith(OPEN_METHOD_PREFIXES)


# --- server side -------------------------------------------------------------------------


def _with_tenant(behavior, tenant: str):
    """Runs a handler behaviour with `tenant_var` set, inside the call's own task."""

    @contextlib.asynccontextmanager
    async def as_tenant(request_or_iterator, context) -> AsyncIterator[bool]:
        tenant_var.set(tenant)  # the call's task owns this context; nothing leaks out of it
        yield True

    return wrap_behavior(behavior, as_tenant)


def _rejecting(message: str):
    async def reject(request_or_iterator, context):
        await abort_with(context, Unauthenticated(message, reason="UNAUTHENTICATED"))

    return reject


def _forbidding():
    async def forbid(request_or_iterator, context):
        await abort_with(
            context,
            PermissionDenied(
                "this is an internal service of the suite: only the suite's own services may call it",
                reason=INTERNAL_SERVICE_REASON,
            ),
        )

    return forbid


class StreamLimiter:
    """At most `limit` server-streaming calls open at once per tenant (0: no limit)."""

    def __init__(self, limit: int = 0):
        self.limit = limit
        self.open: dict[str, int] = {}

    def wrap(self, behavior, tenant: str, method: str):
        limiter = self

        async def refuse(context) -> None:
            log.warning(
                "refused a stream %s: tenant %s has %d open (limit %d)",
                method,
                tenant,
                limiter.open.get(tenant, 0),
                limiter.limit,
            )
            await abort_with(
                context,
                ResourceExhausted(
                    f"too many open streams for this caller (limit {limiter.limit}); close one and retry",
                    reason="TOO_MANY_STREAMS",
                    metadata={"limit": str(limiter.limit)},
                ),
            )

        @contextlib.asynccontextmanager
        async def slot(request_or_iterator, context) -> AsyncIterator[bool]:
            if limiter.open.get(tenant, 0) >= limiter.limit:
                await refuse(context)
                yield False
                return
            limiter.open[tenant] = limiter.open.get(tenant, 0) + 1
            try:
                yield True
            finally:
                limiter._release(tenant)

        return wrap_behavior(behavior, slot)

    def _release(self, tenant: str) -> None:
        left = self.open.get(tenant, 1) - 1
        if left > 0:
            self.open[tenant] = left
        else:
            self.open.pop(tenant, None)


def _is_streaming(handler: grpc.RpcMethodHandler) -> bool:
    return handler.unary_stream is not None or handler.stream_stream is not None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer key of every call and sets the caller's tenant for its handler.

    With no keys configured it lets every call through as the tenant "default".
    With `trusted_tenant_header` (the service's TRUSTED_TENANT_HEADER setting; empty: off) a call
    that carries that header exactly once with a valid tenant name runs as that tenant without a
    key; a bad value answers UNAUTHENTICATED; a call without it needs a key (and is refused when
    no keys are configured).
    With `internal_callers` (INTERNAL_CALLERS: tenant names; empty: off) a caller whose key
    belongs to another tenant answers PERMISSION_DENIED (reason INTERNAL_SERVICE); health and
    reflection stay open. ValueError at construction when a named caller has no key, or with
    `trusted_tenant_header` too.
    With `max_streams_per_caller` > 0, a tenant's server-streaming calls beyond that many open at
    once answer RESOURCE_EXHAUSTED (reason TOO_MANY_STREAMS).
    """

    def __init__(
        self,
        keys: ApiKeys | Mapping[str, str] | None = None,
        *,
        max_streams_per_caller: int = 0,
        trusted_tenant_header: str = "",
        internal_callers: Iterable[str] | str = (),
    ):
        if keys is None:
            keys = ApiKeys()
        elif not isinstance(keys, ApiKeys):
            keys = ApiKeys(keys)
        self.keys = keys
        self.trusted_tenant_header = parse_tenant_header(trusted_tenant_header)
        if self.trusted_tenant_header:
            log.info("trusting the tenant named by the %r header (set by the gateway)", self.trusted_tenant_header)
        self.internal_callers = (
            parse_internal_callers(internal_callers)
            if isinstance(internal_callers, str)
            else parse_internal_callers(",".join(internal_callers))
        )
        self._check_internal_callers()
        self.streams = StreamLimiter(max_streams_per_caller)
        self._admitted = HandlerCache()  # a method's handler run as a tenant, by (method, tenant)

    def _check_internal_callers(self) -> None:
        if not self.internal_callers:
            return
        if self.trusted_tenant_header:
            raise ValueError(
                f"{INTERNAL_CALLERS_SETTING} and {TRUSTED_TENANT_HEADER_SETTING} together: a caller could name an "
                f"internal caller in the {self.trusted_tenant_header!r} header; an internal service takes keys only"
            )
        if not self.keys:
            log.warning(
                "%s=%s has no effect without API_KEYS: every caller is admitted as the tenant %r",
                INTERNAL_CALLERS_SETTING,
                ",".join(sorted(self.internal_callers)),
                DEFAULT_TENANT,
            )
            return
        keyless = sorted(self.internal_callers - self.keys.tenants)
        if keyless:
            raise ValueError(
                f"{INTERNAL_CALLERS_SETTING} names {', '.join(map(repr, keyless))}, which no API_KEYS entry belongs to "
                '(give the suite\'s service key an entry: API_KEYS="<service key>=suite")'
            )

    def _limited(self, handler: grpc.RpcMethodHandler, tenant: str, method: str) -> grpc.RpcMethodHandler:
        if self.streams.limit <= 0 or not _is_streaming(handler):
            return handler
        return replace_behavior(handler, lambda behavior: self.streams.wrap(behavior, tenant, method))

    def _as_tenant(self, handler: grpc.RpcMethodHandler, tenant: str, method: str) -> grpc.RpcMethodHandler:
        """The handler run as `tenant`, or refused when this service admits only its internal callers."""
        if self.internal_callers and tenant not in self.internal_callers:
            log.warning("refused a call to %s: tenant %s is not an internal caller of this service", method, tenant)
            return replace_behavior(handler, lambda _: _forbidding(), request_deserializer=None)
        return self._admitted.get(
            (method, tenant),
            handler,
            lambda h: replace_behavior(
                self._limited(h, tenant, method), lambda behavior: _with_tenant(behavior, tenant)
            ),
        )

    def _from_header(self, handler: grpc.RpcMethodHandler, values: list[str], method: str) -> grpc.RpcMethodHandler:
        if len(values) != 1 or not _TENANT_NAME.match(values[0]):
            log.warning("rejected a call to %s: malformed %s header", method, self.trusted_tenant_header)
            return replace_behavior(handler, lambda _: _rejecting("malformed tenant header"), request_deserializer=None)
        return self._as_tenant(handler, values[0], method)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if is_open_method(method):
            return handler
        if self.trusted_tenant_header:
            values = header_values(handler_call_details.invocation_metadata, self.trusted_tenant_header)
            if values:
                return self._from_header(handler, values, method)
            if not self.keys:
                log.warning("rejected a call to %s: no tenant header and no API keys", method)
                return replace_behavior(
                    handler,
                    lambda _: _rejecting("missing tenant (authenticate at the gateway)"),
                    request_deserializer=None,
                )
        if not self.keys:
            return self._admitted.get(
                (method, DEFAULT_TENANT), handler, lambda h: self._limited(h, DEFAULT_TENANT, method)
            )
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            log.warning("rejected a call to %s: no bearer key", method)
            return replace_behavior(handler, lambda _: _rejecting("missing bearer API key"), request_deserializer=None)
        tenant = self.keys.tenant_for(token)
        if tenant is None:
            log.warning("rejected a call to %s: unknown API key", method)
            return replace_behavior(handler, lambda _: _rejecting("unknown API key"), request_deserializer=None)
        return self._as_tenant(handler, tenant, method)
