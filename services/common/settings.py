"""Typed settings, read once from the environment and command-line flags.

Every service has its own subclass; each is built once in `__main__` and passed down to every
client, channel and interceptor. These settings modules are the only modules of the services
that read the environment (a test checks it). Environment variables use the field names in
upper case (`PORT`, `JUDGE_SERVICE_ADDR`); flags use them in kebab case (`--port 0`).

- `SuiteSettings`: what every settings class shares: the values of the environment's secret
  variables (`*API_KEY`, `*_TOKEN`, `*_SECRET`, `*PASSWORD`), captured when the settings are
  built, which logs and provider errors mask.
- `ChannelSettings`: what a channel to a service of the suite needs (the service key, the TLS
  files); the tools that dial the suite build one too.
- `ServiceSettings`: what every service reads.
- `DatabaseSettings`: DATABASE_URL, for a service that keeps its state in PostgreSQL when it is
  set (accounting's ledger, the orchestrator's debates) and in SQLite files otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The tenant of the suite's own services: the one their service key (SERVICE_API_KEY) belongs to
# in an internal service's API_KEYS, and the judge's and accounting's INTERNAL_CALLERS.
SERVICE_TENANT = "suite"

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SECRET_NAME = re.compile(r"(API_KEY|_TOKEN|_SECRET|PASSWORD)$", re.IGNORECASE)
_MIN_SECRET_LENGTH = 8


def environment_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Values (8 characters or more) of the variables whose names say they are secrets,
    longest first, so that a secret containing another is masked whole."""
    env = os.environ if environ is None else environ
    return tuple(
        sorted(
            {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LENGTH},
            key=len,
            reverse=True,
        )
    )


def secret_parts(value: str) -> set[str]:
    """What to mask of a secret setting's value (8 characters or more): the value whole and, in a
    `key=tenant` list such as API_KEYS, each key on its own."""
    parts = {value.strip()}
    for entry in re.split(r"[,\n]", value):
        key, sep, _ = entry.partition("=")
        if sep:
            parts.add(key.strip())
    return {part for part in parts if len(part) >= _MIN_SECRET_LENGTH}


class SuiteSettings(BaseSettings):
    """The base of every settings class of the suite."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    _secrets: tuple[str, ...] = PrivateAttr(default_factory=environment_secrets)

    def secret_values(self) -> tuple[str, ...]:
        """Every secret these settings know, longest first: the environment's secret values when
        they were built, and the values of their secret fields however given (a flag such as
        `--service-api-key` or `--api-keys` too, whose keys are masked one by one)."""
        values = set(self._secrets)
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                values |= secret_parts(value.get_secret_value())
        return tuple(sorted(values, key=len, reverse=True))


class ChannelSettings(SuiteSettings):
    """What a channel to another service of the suite needs (see `services.common.channels`)."""

    service_api_key: SecretStr = Field(
        SecretStr(""), description="key this service sends as a bearer token on its calls to other services"
    )
    tls_cert_file: str = Field("", description="PEM certificate chain of this service (enables TLS with the key)")
    tls_key_file: str = Field("", description="PEM private key of this service")
    tls_ca_file: str = Field("", description="PEM CA bundle that peers' certificates must chain to (mutual TLS)")
    tls_server_name: str = Field("", description="name to verify in the server certificate, if not the host")


class ServiceSettings(ChannelSettings):
    """What every service reads."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(0, ge=0, le=65535, description="port to listen on (0: any free port)")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    grace_seconds: float = Field(5.0, ge=0, description="how long in-flight calls may finish on SIGTERM")
    data_dir: str = Field("var", description="folder of the service's SQLite files")
    uvloop: bool = Field(
        True,
        description="run the service on uvloop where it is installed (false: asyncio's own loop; uvloop cut a "
        "streamed provider chunk's CPU by a third, docs/streaming-floor.md)",
    )

    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of the Prometheus metrics endpoint, http://HOST:METRICS_PORT/metrics (empty: no metrics, "
        "no port opened; 0: any free port; see services.common.metrics)",
    )

    # Traces (services.common.tracing): on only when an OTLP endpoint is set. These are the standard
    # OpenTelemetry variables; the SDK reads the others (OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*, ...).
    otel_exporter_otlp_endpoint: str = Field(
        "", description="OTLP/gRPC endpoint of traces, e.g. http://127.0.0.1:4317 (empty: no traces, nothing installed)"
    )
    otel_exporter_otlp_traces_endpoint: str = Field(
        "", description="OTLP/gRPC endpoint of traces only; wins over OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_service_name: str = Field("", description="service.name of the traces (empty: debate-<service>)")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: one readable line per record; json: one JSON object per line (time, level, logger, "
        "message, service, debate_id, request_id, trace_id, span_id)",
    )

    loop_stall_trace_ms: float = Field(
        0,
        ge=0,
        description="log the event loop thread's Python stack when the loop stalls longer than this many "
        "milliseconds (0: off; a diagnostic thread, services.common.loop_watch)",
    )

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # Authentication and transport security (see docs/reliability.md). Empty: off.
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys this service accepts and their tenants: key1=tenantA,key2=tenantB "
        "(empty: no authentication, every caller is the tenant 'default')",
    )
    trusted_tenant_header: str = Field(
        "",
        description="header whose value is taken as the caller's tenant, set by a gateway that authenticates "
        "callers itself (e.g. x-debate-tenant; empty: off; see services.common.auth)",
    )
    max_streams_per_caller: int = Field(
        0, ge=0, description="server-streaming calls one tenant may hold open at once (0: no limit)"
    )
    internal_callers: str = Field(
        "",
        description="tenants that may call this service, comma-separated (e.g. suite, the tenant of the suite's "
        "service key); any other caller gets PERMISSION_DENIED (empty: every authenticated caller; see "
        "services.common.auth)",
    )


class DatabaseSettings(SuiteSettings):
    """DATABASE_URL: the service's PostgreSQL database, or none (SQLite files in DATA_DIR)."""

    # A secret: it may carry a password (masked in logs like the other secret settings).
    database_url: SecretStr = Field(
        SecretStr(""),
        description="the service's PostgreSQL database, postgresql://user:password@host:port/database, shared by "
        "every replica of the service (empty: SQLite files in data_dir)",
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith(POSTGRES_SCHEMES):
            raise ValueError("must be empty or a postgresql:// URL")
        return value


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(cls: type[SettingsT], argv: Sequence[str] | None = None) -> SettingsT:
    """Build settings from the environment, then flags (flags win)."""
    return cls(_cli_parse_args=list(argv) if argv is not None else False)
