"""Typed settings, read once from the environment and command-line flags.

Every service has its own subclass; each is built once in `__main__` and passed down.
Environment variables use the field names in upper case (`PORT`, `JUDGE_SERVICE_ADDR`);
flags use them in kebab case (`--port 0`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
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

    # Authentication and transport security (see docs/reliability.md). Empty: off.
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys this service accepts and their tenants: key1=tenantA,key2=tenantB "
        "(empty: no authentication, every caller is the tenant 'default')",
    )
    service_api_key: SecretStr = Field(
        SecretStr(""), description="key this service sends as a bearer token on its calls to other services"
    )
    max_streams_per_caller: int = Field(
        0, ge=0, description="server-streaming calls one tenant may hold open at once (0: no limit)"
    )
    tls_cert_file: str = Field("", description="PEM certificate chain of this service (enables TLS with the key)")
    tls_key_file: str = Field("", description="PEM private key of this service")
    tls_ca_file: str = Field("", description="PEM CA bundle that peers' certificates must chain to (mutual TLS)")
    tls_server_name: str = Field("", description="name to verify in the server certificate, if not the host")


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(cls: type[SettingsT], argv: Sequence[str] | None = None) -> SettingsT:
    """Build settings from the environment, then flags (flags win)."""
    return cls(_cli_parse_args=list(argv) if argv is not None else False)  # type: ignore[call-arg]
