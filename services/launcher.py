"""`debate-engine up`: what the suite is (`SuiteConfig`: the three services, and Envoy and the
page when the gateway is enabled, with the settings each process is started with), brought up
and kept up by `run_up` through the supervisor (services/supervisor.py).

The judge and accounting are internal: `up` gives every service the suite's service key
(SERVICE_API_KEY from the environment, or a random one made for this run), adds it to the judge's
and accounting's API_KEYS as the tenant `suite`, and limits them to that tenant
(INTERNAL_CALLERS=suite). A tenant's key then gets PERMISSION_DENIED there; the orchestrator,
which sends the service key on its calls, is the only way in (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from services.common.auth import ApiKeys
from services.common.settings import SERVICE_TENANT
from services.common.tls import TlsFiles
from services.gateway import GatewayConfig, envoy_config, render_envoy_yaml
from services.supervisor import ProcessDied, ProcessSpec, Suite, http_ok

log = logging.getLogger(__name__)


@dataclass
class SuiteConfig:
    host: str = "127.0.0.1"
    orchestrator_port: int = 50051
    judge_port: int = 50052
    accounting_port: int = 50053
    data_dir: str = "var"
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    # Envoy (grpc-web) and the page; GATEWAY_ENABLED=0 leaves them out.
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    # The service key made for this run when the environment gives no SERVICE_API_KEY.
    _made_service_key: str = field(default="", init=False, repr=False, compare=False)

    def address(self, port: int) -> str:
        return f"{self.host}:{port}"

    def variables(self) -> dict[str, str]:
        """The environment the processes start with: ours, then `extra_env`."""
        return {**os.environ, **self.extra_env}

    @property
    def service_api_key(self) -> str:
        """The suite's service key: SERVICE_API_KEY of `variables()`, else a random key made once
        for this config (so every process of one run gets the same)."""
        given = self.variables().get("SERVICE_API_KEY", "").strip()
        if given:
            return given
        if not self._made_service_key:
            self._made_service_key = secrets.token_urlsafe(32)
        return self._made_service_key

    def internal_env(self) -> dict[str, str]:
        """What the judge and accounting get on top of the common variables: the service key,
        the tenants' API_KEYS with the service key added as the tenant `suite`,
        INTERNAL_CALLERS=suite, and no TRUSTED_TENANT_HEADER. ValueError when API_KEYS gives
        the tenant `suite` another key, or the service key another tenant."""
        key = self.service_api_key
        tenants = self.variables().get("API_KEYS", "").strip()
        given = ApiKeys.parse(tenants)  # ValueError for a malformed entry (never shows a key)
        owner = given.tenant_for(key)
        if owner not in (None, SERVICE_TENANT):
            raise ValueError(f"API_KEYS gives SERVICE_API_KEY to the tenant {owner!r}; it is the suite's own key")
        if given.key_count(SERVICE_TENANT) > (1 if owner == SERVICE_TENANT else 0):
            raise ValueError(
                f"API_KEYS gives the tenant {SERVICE_TENANT!r} (the suite's own services) a key other than "
                "SERVICE_API_KEY; rename that tenant"
            )
        keys = ",".join(part for part in (tenants, f"{key}={SERVICE_TENANT}") if part)
        ApiKeys.parse(keys)  # a SERVICE_API_KEY that is not a valid key stops here, not in a child
        # No tenant header either: a header must never name the suite's tenant to an internal service.
        return {
            "SERVICE_API_KEY": key,
            "API_KEYS": keys,
            "INTERNAL_CALLERS": SERVICE_TENANT,
            "TRUSTED_TENANT_HEADER": "",
        }

    @property
    def orchestrator_address(self) -> str:
        return self.address(self.orchestrator_port)

    def process_specs(self) -> list[ProcessSpec]:
        common = {
            "HOST": self.host,
            "DATA_DIR": self.data_dir,
            "LOG_LEVEL": self.log_level,
            "JUDGE_SERVICE_ADDR": self.address(self.judge_port),
            "ACCOUNTING_SERVICE_ADDR": self.address(self.accounting_port),
            **self.extra_env,
        }
        internal = self.internal_env()
        python = sys.executable
        orchestrator_env = {
            **common,
            "SERVICE_API_KEY": internal["SERVICE_API_KEY"],
            "PORT": str(self.orchestrator_port),
        }
        jwt = self.gateway.jwt() if self.gateway.enabled else None
        if jwt is not None:
            # The gateway authenticates callers and names their tenant in this header; the
            # orchestrator believes it (services.common.auth), so it must be reachable only
            # through the gateway or over mutual TLS (docs/reliability.md).
            orchestrator_env["TRUSTED_TENANT_HEADER"] = jwt.tenant_header
        return [
            ProcessSpec(
                "accounting",
                [python, "-m", "services.accounting"],
                self.address(self.accounting_port),
                "debate.accounting.v1.AccountingService",
                {**common, **internal, "PORT": str(self.accounting_port)},
            ),
            ProcessSpec(
                "judge",
                [python, "-m", "services.judge"],
                self.address(self.judge_port),
                "debate.judge.v1.JudgeService",
                {**common, **internal, "PORT": str(self.judge_port)},
            ),
            ProcessSpec(
                "orchestrator",
                [python, "-m", "services.orchestrator"],
                self.orchestrator_address,
                "debate.orchestrator.v1.OrchestratorService",
                orchestrator_env,
            ),
            *gateway_specs(self),
        ]


async def run_up(config: SuiteConfig) -> int:
    """Brings the suite up and keeps it up until Ctrl-C/SIGTERM (exit 0) or a death (exit 1);
    a bad setting (e.g. half a JWT or TLS configuration) is one line and exit 2."""
    try:
        specs = config.process_specs()
    except ValueError as error:
        print(f"debate-engine up: bad setting: {error}", file=sys.stderr)
        return 2
    suite = Suite(specs)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await suite.start()
    except (ProcessDied, TimeoutError) as error:
        print(f"debate-engine up: {error}", file=sys.stderr)
        return 1
    print("debate-engine suite is up:")
    for spec in suite.specs:
        print(f"  {spec.name:<13} {spec.display_address or spec.health_address}")
    if config.gateway.enabled and any(spec.name == "web" for spec in suite.specs):
        print(f"Open http://{config.gateway.browse_host}:{config.gateway.port}/ to run a debate in the browser.")
    print("Ctrl-C stops it.", flush=True)
    exited = asyncio.create_task(suite.wait_for_exit())
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if exited.done():
        proc = exited.result()
        died = ProcessDied(proc.spec.name, proc.process.returncode, list(proc.tail))
        print(f"debate-engine up: {died}", file=sys.stderr)
        await suite.stop()
        return 1
    exited.cancel()
    print("stopping the suite ...", flush=True)
    await suite.stop()
    print("stopped.")
    return 0


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def suite_envoy_config(config: SuiteConfig, web: str | None) -> dict:
    """The Envoy configuration `up` runs for the suite of `config` (a dict for
    `render_envoy_yaml`), with the page's file server at `web` (host:port; None: the API only).
    ValueError for a half-made JWT configuration."""
    gateway = config.gateway
    internal = (
        {"judge": config.address(config.judge_port), "accounting": config.address(config.accounting_port)}
        if gateway.expose_internal
        else None
    )
    return envoy_config(
        listen_host=gateway.host,
        listen_port=gateway.port,
        orchestrator=config.orchestrator_address,
        web=web,
        internal=internal,
        allowed_origins=gateway.allowed_origins,
        jwt=gateway.jwt(),
        # Envoy dials the services with the suite's own TLS files, when they are configured.
        upstream_tls=TlsFiles.from_variables(config.variables()),
    )


def gateway_specs(config: SuiteConfig) -> list[ProcessSpec]:
    """The page's file server and Envoy, when the gateway is enabled."""
    gateway = config.gateway
    if not gateway.enabled:
        return []
    specs: list[ProcessSpec] = []
    web_address = None
    if gateway.web_available:
        web_port = gateway.web_port or _free_loopback_port()
        web_address = f"127.0.0.1:{web_port}"
        specs.append(
            ProcessSpec(
                "web",
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    str(web_port),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    gateway.web_dir,
                ],
                None,
                env={"PYTHONUNBUFFERED": "1"},
                ready_check=lambda: http_ok(f"http://{web_address}/index.html"),
                display_address=f"{web_address} (web/dist, served through the gateway)",
            )
        )
    else:
        log.warning("%s has no built page (run `make web`); the gateway serves the API only", gateway.web_dir)
    run_dir = Path(config.data_dir).resolve() / "gateway"
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / f"envoy-{gateway.port}.yaml"
    admin_path = run_dir / f"envoy-{gateway.port}.admin"
    config_path.write_text(render_envoy_yaml(suite_envoy_config(config, web_address)))
    admin_path.unlink(missing_ok=True)

    async def envoy_ready() -> bool:
        # Envoy picks a free admin port on loopback and writes its address to admin_path.
        try:
            admin = admin_path.read_text().strip()
        except FileNotFoundError:
            return False
        return bool(admin) and await http_ok(f"http://{admin}/ready")

    specs.append(
        ProcessSpec(
            "envoy",
            [
                gateway.envoy_binary,
                "-c",
                str(config_path),
                "--admin-address-path",
                str(admin_path),
                "--disable-hot-restart",  # no shared memory: several Envoys (tests) can run at once
                "--log-level",
                gateway.log_level,
            ],
            None,
            ready_check=envoy_ready,
            display_address=f"{gateway.browse_host}:{gateway.port} (grpc-web and the page)",
        )
    )
    return specs
