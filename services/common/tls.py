"""Mutual TLS between the services, when certificates are configured.

Set all three of `TLS_CERT_FILE`, `TLS_KEY_FILE` and `TLS_CA_FILE` (PEM files) on every
service of the suite:

- a server then listens with TLS only and requires a client certificate that chains to the CA
  (a client without one is refused during the handshake);
- `services.common.channels.open_channel` then connects with TLS, verifies the server's
  certificate against the same CA and presents its own certificate.

Certificates must name the host the peers dial (a subjectAlternativeName such as
`DNS:judge` or `IP:127.0.0.1`), or `TLS_SERVER_NAME` names what to verify instead.
With none of the three set, servers and channels use plaintext (the local default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert_file: str
    key_file: str
    ca_file: str
    server_name: str = ""

    @classmethod
    def from_settings(cls, settings) -> TlsFiles | None:
        """The configured files, None when TLS is off; a partial configuration is an error."""
        names = {
            "TLS_CERT_FILE": getattr(settings, "tls_cert_file", "") or "",
            "TLS_KEY_FILE": getattr(settings, "tls_key_file", "") or "",
            "TLS_CA_FILE": getattr(settings, "tls_ca_file", "") or "",
        }
        given = {k: v for k, v in names.items() if v}
        if not given:
            return None
        missing = sorted(set(names) - set(given))
        if missing:
            raise ValueError(
                f"mutual TLS needs TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE; missing: {', '.join(missing)}"
            )
        for name, path in given.items():
            if not Path(path).is_file():
                raise ValueError(f"{name} is not a readable file: {path}")
        return cls(
            names["TLS_CERT_FILE"],
            names["TLS_KEY_FILE"],
            names["TLS_CA_FILE"],
            getattr(settings, "tls_server_name", "") or "",
        )

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> TlsFiles | None:
        """As `from_settings`, from the TLS_* entries of `variables`.

        The launcher uses it for what it dials itself (readiness checks, Envoy's upstream), with
        the variables a service is started with, so both sides read the same files.
        """
        return cls.from_settings(
            SimpleNamespace(
                tls_cert_file=variables.get("TLS_CERT_FILE", ""),
                tls_key_file=variables.get("TLS_KEY_FILE", ""),
                tls_ca_file=variables.get("TLS_CA_FILE", ""),
                tls_server_name=variables.get("TLS_SERVER_NAME", ""),
            )
        )

    def _read(self) -> tuple[bytes, bytes, bytes]:
        return Path(self.cert_file).read_bytes(), Path(self.key_file).read_bytes(), Path(self.ca_file).read_bytes()

    def server_credentials(self) -> grpc.ServerCredentials:
        cert, key, ca = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        cert, key, ca = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def server_credentials(settings) -> grpc.ServerCredentials | None:
    files = TlsFiles.from_settings(settings)
    return files.server_credentials() if files else None
