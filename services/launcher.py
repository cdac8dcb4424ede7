"""`debate-engine up`: what the suite is (`SuiteConfig`: the three services, and Envoy and the
page when the gateway is enabled, with the settings each process is started with), brought up
and kept up by `run_up` through the supervisor (services/supervisor.py).

The judge and accounting are internal: `up` gives every service the suite's service key
(SERVICE_API_KEY from the environment, or a random one made for this run), adds it to the judge's
and accounting's API_KEYS as the tenant `suite`, and limits them to that tenant
(INTERNAL_CALLERS=suite). A tenant's key then gets PERMISSION_DENIED there; the orchestrator,
which sends the service key on its calls, is the only way in (docs/reliability.md).

Replicas (`--replicas N`, README "Running several replicas"): N > 1 runs N orchestrators, N
judges and N accountings, all on one PostgreSQL (DATABASE_URL, or a throwaway server that `up
--postgres` starts and removes at stop). Replica k (from 0) of a service listens on its port +
k * `port_step` (or on `replica_ports`); each orchestrator gets its own REPLICA_ID
(`<host>:<port>`: unique on a host, and the same when that replica restarts, so it takes its own
leases back at once). Every orchestrator gets the list of the judges' and accountings' addresses
(gRPC's client-side round_robin with health checks, services.common.channels), and Envoy
balances the orchestrators with gRPC health checks (services.gateway). N = 1 is the suite as
it always was, on SQLite unless DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.auth import ApiKeys
from services.common.postgres_server import TEST_OPTIONS, PostgresServer
from services.common.settings import SERVICE_TENANT
from services.common.tls import TlsFiles
from services.gateway import STATS_PATH, GatewayConfig, envoy_config, render_envoy_yaml
from services.scrape_targets import write_scrape_targets
from services.suite_file import SuiteProcess, remove_suite_file, write_suite_file
from services.supervisor import ProcessDied, ProcessSpec, RunningProcess, Suite, http_ok

log = logging.getLogger(__name__)

SERVICES = ("accounting", "judge", "orchestrator")  # in the order they start
HEALTH_SERVICES = {
    "accounting": "debate.accounting.v1.AccountingService",
    "judge": "debate.judge.v1.JudgeService",
    "orchestrator": "debate.orchestrator.v1.OrchestratorService",
}


@dataclass
class SuiteConfig:
    host: str = "127.0.0.1"
    orchestrator_port: int = 50051
    judge_port: int = 50052
    accounting_port: int = 50053
    data_dir: str = "var"
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    # Processes of each service; N > 1 needs a PostgreSQL database (database_url or DATABASE_URL).
    replicas: int = 1
    # The services' PostgreSQL database (empty: DATABASE_URL of `variables()`, else SQLite files).
    database_url: str = ""
    # Replica k (from 0) of a service listens on its port + k * port_step, unless
    # replica_ports names each replica's port ({"judge": [p0, p1], ...}).
    port_step: int = 10
    replica_ports: dict[str, list[int]] = field(default_factory=dict)
    # Envoy (grpc-web) and the page; GATEWAY_ENABLED=0 leaves them out.
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    # Prometheus metrics: each service process serves /metrics on a free port of `host`
    # (METRICS_PORT), printed in `up`'s table. `up` turns them on; off, no port is opened.
    metrics: bool = False
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

    def ports(self, service: str) -> list[int]:
        """The ports of `service`'s replicas, one per replica. ValueError when replica_ports gives
        another count."""
        given = self.replica_ports.get(service)
        if given is not None:
            if len(given) != self.replicas:
                raise ValueError(f"replica_ports gives {service} {len(given)} ports for {self.replicas} replicas")
            return list(given)
        base = {"orchestrator": self.orchestrator_port, "judge": self.judge_port, "accounting": self.accounting_port}
        return [base[service] + k * self.port_step for k in range(self.replicas)]

    def addresses(self, service: str) -> list[str]:
        """host:port of each of `service`'s replicas."""
        return [self.address(port) for port in self.ports(service)]

    def listen_ports(self) -> list[tuple[str, str, int]]:
        """(what, its `up` flag, port) of every fixed port the suite will listen on: each service
        replica's and, with the gateway, Envoy's and the page's when given. ValueError as `ports`."""
        flags = {"orchestrator": "--orchestrator-port", "judge": "--judge-port", "accounting": "--accounting-port"}
        wanted = [
            (self.process_name(service, replica), flags[service], port)
            for service in SERVICES
            for replica, port in enumerate(self.ports(service))
        ]
        if self.gateway.enabled:
            wanted.append(("gateway", "--gateway-port", self.gateway.port))
            if self.gateway.web_available and self.gateway.web_port:
                wanted.append(("page", "WEB_PORT", self.gateway.web_port))
        return wanted

    def taken_ports(self) -> list[tuple[str, str, int]]:
        """The entries of `listen_ports` whose port cannot be bound now (another process listens on
        it, or its address is not this machine's)."""
        taken = []
        for what, flag, port in self.listen_ports():
            host = self.gateway.host if what == "gateway" else "127.0.0.1" if what == "page" else self.host
            if not _can_bind(host, port):
                taken.append((what, flag, port))
        return taken

    @property
    def database(self) -> str:
        """The services' PostgreSQL URL: `database_url`, else DATABASE_URL of `variables()`; empty:
        SQLite files in data_dir."""
        return self.database_url or self.variables().get("DATABASE_URL", "").strip()

    def process_name(self, service: str, replica: int) -> str:
        """`orchestrator` with one replica; `orchestrator-1`, `orchestrator-2`, ... with several."""
        return service if self.replicas == 1 else f"{service}-{replica + 1}"

    def process_specs(self) -> list[ProcessSpec]:
        """Every process of the suite, services first (accounting, judge, orchestrator; replica by
        replica), then the gateway's. ValueError for a bad setting: replicas < 1, replicas without
        a database, a tenant key clash (internal_env), a half-made JWT configuration."""
        if self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, not {self.replicas}")
        database = self.database
        if self.replicas > 1 and not database:
            raise ValueError(
                f"{self.replicas} replicas need PostgreSQL: give DATABASE_URL or --postgres "
                "(the replicas share their debates, leases and ledger there; SQLite serves one process)"
            )
        common = {
            "HOST": self.host,
            "DATA_DIR": self.data_dir,
            "LOG_LEVEL": self.log_level,
            "JUDGE_SERVICE_ADDR": ",".join(self.addresses("judge")),
            "ACCOUNTING_SERVICE_ADDR": ",".join(self.addresses("accounting")),
            **self.extra_env,
        }
        if self.database_url:
            common["DATABASE_URL"] = self.database_url
        internal = self.internal_env()
        python = sys.executable
        orchestrator_env = {
            **common,
            "SERVICE_API_KEY": internal["SERVICE_API_KEY"],
        }
        jwt = self.gateway.jwt() if self.gateway.enabled else None
        if jwt is not None:
            # The gateway authenticates callers and names their tenant in this header; the
            # orchestrator believes it (services.common.auth), so it must be reachable only
            # through the gateway or over mutual TLS (docs/reliability.md).
            orchestrator_env["TRUSTED_TENANT_HEADER"] = jwt.tenant_header
        base_env = {
            "accounting": {**common, **internal},
            "judge": {**common, **internal},
            "orchestrator": orchestrator_env,
        }
        host = socket.gethostname()
        specs = []
        for service in SERVICES:
            for replica, port in enumerate(self.ports(service)):
                env = {**base_env[service], "PORT": str(port)}
                metrics_url = None
                if self.metrics:
                    metrics_port = _free_port(self.host)
                    env["METRICS_PORT"] = str(metrics_port)
                    metrics_url = f"http://{self.address(metrics_port)}/metrics"
                display = None
                if service == "orchestrator" and self.replicas > 1:
                    env["REPLICA_ID"] = f"{host}:{port}"
                    display = f"{self.address(port)} (REPLICA_ID {env['REPLICA_ID']})"
                specs.append(
                    ProcessSpec(
                        self.process_name(service, replica),
                        [python, "-m", f"services.{service}"],
                        self.address(port),
                        HEALTH_SERVICES[service],
                        env,
                        display_address=display,
                        metrics_url=metrics_url,
                        # Each service calls only those before it in SERVICES: it stops first.
                        stop_tier=SERVICES.index(service),
                    )
                )
        return [*specs, *gateway_specs(self)]


async def run_up(config: SuiteConfig, *, postgres: bool = False) -> int:
    """Brings the suite up and keeps it up until Ctrl-C/SIGTERM (exit 0) or a death (exit 1);
    a bad setting (e.g. half a JWT or TLS configuration, replicas without a database) is one
    line and exit 2. `postgres`: first start a throwaway PostgreSQL server (initdb on a
    temporary folder, a free port of 127.0.0.1) for the suite's DATABASE_URL, stopped and
    removed when the suite stops."""
    if postgres and config.database:
        print("debate-engine up: bad setting: --postgres starts its own database; unset DATABASE_URL", file=sys.stderr)
        return 2
    server: PostgresServer | None = None
    if postgres:
        try:
            # Throwaway: tuned like the tests' server (no fsync); its data goes with it at stop.
            # Started from this (the main) thread, on purpose: the server exits when the thread
            # that started it dies (a SIGKILLed `up` leaves no PostgreSQL behind), and a worker
            # thread of to_thread's pool is not ours to keep. Nothing else runs yet.
            server = PostgresServer(options=TEST_OPTIONS)
            server.start()
            config.database_url = await asyncio.to_thread(server.create_database, "debate_engine")
        except Exception as error:  # noqa: BLE001 (any failure to start it is reported the same way)
            if server is not None:
                await asyncio.to_thread(server.stop)
            print(f"debate-engine up: could not start PostgreSQL: {error}", file=sys.stderr)
            return 1
    try:
        return await _run_suite(config, server)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _run_suite(config: SuiteConfig, server: PostgresServer | None) -> int:
    try:
        taken = config.taken_ports()
        specs = [] if taken else config.process_specs()
    except ValueError as error:
        print(f"debate-engine up: bad setting: {error}", file=sys.stderr)
        return 2
    if taken:
        # Before anything starts: health checks would reach the suite already on those ports.
        what, flag, port = taken[0]
        others = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        print(
            f"debate-engine up: port {port} ({what}) is taken{others}, perhaps by a suite already up; "
            f"stop it, or choose other ports with {', '.join(dict.fromkeys(f for _, f, _ in taken))}",
            file=sys.stderr,
        )
        return 1
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
    # For `debate-engine top` and other commands: the suite's processes and /metrics URLs.
    write_suite_file(
        config.data_dir,
        [SuiteProcess(s.name, s.health_address, s.metrics_url) for s in suite.specs],
    )
    print("debate-engine suite is up:")
    width = max(13, *(len(spec.name) + 1 for spec in suite.specs))
    if server is not None:
        print(f"  {'postgres':<{width}} 127.0.0.1:{server.port} (throwaway: removed when the suite stops)")
    for spec in suite.specs:
        shown = spec.display_address or spec.health_address or ""
        print(f"  {spec.name:<{width}} {shown}" + (f"   metrics {spec.metrics_url}" if spec.metrics_url else ""))
    if config.metrics:
        targets = write_scrape_targets(config.data_dir, suite.specs)
        print(f"Prometheus targets (file_sd): {targets}")
    if config.gateway.enabled and any(spec.name == "web" for spec in suite.specs):
        print(f"Open http://{config.gateway.browse_host}:{config.gateway.port}/ to run a debate in the browser.")
    print("Ctrl-C stops it.", flush=True)
    exited = asyncio.create_task(_last_replica_exit(suite, config))
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    remove_suite_file(config.data_dir)
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


async def _last_replica_exit(suite: Suite, config: SuiteConfig) -> RunningProcess:
    """The process whose exit ends the suite: any, with one replica of each service; with several,
    Envoy or the page, or the last replica of a service when none of its replicas lives or is
    coming back. A replica that dies while others of its service live is reported in one line and
    restarted (`_Restarts`), after a back-off that grows while it keeps dying; the others carry on."""
    restarts = _Restarts()
    pending: dict[asyncio.Task[Any], RunningProcess] = {}  # restarts under way -> the dead process
    while True:
        alive: dict[asyncio.Task[Any], RunningProcess] = {
            asyncio.create_task(p.process.wait()): p for p in suite.running if p.process.returncode is None
        }
        done, _ = await asyncio.wait({*alive, *pending}, return_when=asyncio.FIRST_COMPLETED)
        for waiting in alive.keys() - done:
            waiting.cancel()
        for task in done:
            if task in pending:
                dead = pending.pop(task)
                if task.exception() is None:
                    print(f"debate-engine up: {dead.spec.name} is back", file=sys.stderr, flush=True)
                    continue
                proc = next(p for p in suite.running if p.spec is dead.spec)
                if proc.process.returncode is None:  # not ready in time, yet alive: stop it, try again
                    proc.process.kill()
                    await proc.process.wait()
            else:
                proc = alive[task]
                if proc.relay:
                    await asyncio.wait({proc.relay}, timeout=1.0)
            service = proc.spec.name.rpartition("-")[0]
            others = [
                p
                for p in suite.running
                if p is not proc and p.spec.name.rpartition("-")[0] == service and p.process.returncode is None
            ]
            coming = [p for p in pending.values() if p.spec.name.rpartition("-")[0] == service]
            if config.replicas == 1 or service not in SERVICES or not (others or coming):
                for task in pending:
                    task.cancel()
                return proc
            delay = restarts.delay(proc.spec.name)
            go_on = ", ".join(p.spec.name for p in others) + (" carries on" if len(others) == 1 else " carry on")
            if delay is None:
                what = f"it has died {restarts.limit} times in a row and is not restarted again"
            else:
                what = f"restarting it in {delay:g} s"
                pending[asyncio.create_task(_restart_after(suite, proc, delay))] = proc
            print(
                f"debate-engine up: {proc.spec.name} exited with code {proc.process.returncode}; {what}"
                + (f"; {go_on}" if others else ""),
                file=sys.stderr,
                flush=True,
            )


async def _restart_after(suite: Suite, proc: RunningProcess, delay: float) -> RunningProcess:
    await asyncio.sleep(delay)
    return await suite.restart(proc)


class _Restarts:
    """The back-off of a replica's restarts: 1 s after a death, doubled for each death that comes
    within `quiet` seconds of the one before, up to `ceiling`; after `limit` such deaths in a row
    the replica is left dead (a crash loop, such as a bad setting, is not hammered)."""

    def __init__(self, first: float = 1.0, ceiling: float = 30.0, quiet: float = 60.0, limit: int = 5):
        self.first, self.ceiling, self.quiet, self.limit = first, ceiling, quiet, limit
        self._streak: dict[str, tuple[int, float]] = {}  # name -> (deaths in a row, last death)

    def delay(self, name: str, now: float | None = None) -> float | None:
        """Seconds to wait before restarting `name`, which just died; None: do not restart it."""
        now = time.monotonic() if now is None else now
        count, last = self._streak.get(name, (0, -math.inf))
        count = count + 1 if now - last < self.quiet else 1
        self._streak[name] = (count, now)
        if count > self.limit:
            return None
        return min(self.ceiling, self.first * 2 ** (count - 1))


def _can_bind(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as servers bind: a port left in
    TIME_WAIT by a suite that just stopped counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def _free_loopback_port() -> int:
    return _free_port("127.0.0.1")


def _free_port(host: str) -> int:
    """A port of `host` that nothing listens on now (the process given it binds it soon after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host.strip("[]"), 0))
        return sock.getsockname()[1]


def suite_envoy_config(config: SuiteConfig, web: str | None, *, admin_port: int = 0) -> dict:
    """The Envoy configuration `up` runs for the suite of `config` (a dict for
    `render_envoy_yaml`), with the page's file server at `web` (host:port; None: the API only)
    and the admin interface on 127.0.0.1:admin_port (0: any free port).
    ValueError for a half-made JWT configuration."""
    gateway = config.gateway
    internal = (
        {"judge": config.addresses("judge"), "accounting": config.addresses("accounting")}
        if gateway.expose_internal
        else None
    )
    return envoy_config(
        listen_host=gateway.host,
        listen_port=gateway.port,
        orchestrator=config.addresses("orchestrator"),
        web=web,
        internal=internal,
        allowed_origins=gateway.allowed_origins,
        admin_port=admin_port,
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
    # With metrics on, the admin gets a known port: its /stats/prometheus is Envoy's metrics URL.
    admin_port = _free_loopback_port() if config.metrics else 0
    config_path.write_text(render_envoy_yaml(suite_envoy_config(config, web_address, admin_port=admin_port)))
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
            metrics_url=f"http://127.0.0.1:{admin_port}{STATS_PATH}" if admin_port else None,
            stop_tier=len(SERVICES),  # the browsers' way in: it stops before the services
        )
    )
    return specs
