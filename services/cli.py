"""The `debate-engine` command: `up` and `envoy-config` here, the other subcommands in the
modules of COMMAND_MODULES."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

from services.gateway import COMPOSE_ENVOY_HEADER, GatewayConfig, compose_envoy_config, render_envoy_yaml
from services.launcher import SuiteConfig, run_up, suite_envoy_config

# Modules that add a subcommand: each has `register(subparsers)`, and the parser it adds
# sets `handler=` to a function of the parsed args that returns the exit code.
COMMAND_MODULES = [
    "services.cli",  # up, envoy-config
    "services.loadtest.cli",  # load
    "services.client.commands",  # demo, debate, attach, list, cancel
    "services.client.top",  # top
    "services.client.votes",  # vote, audit (i18j)
    "services.client.export",  # export (issue 19 part 5)
    "services.client.tournaments",  # tournament create/start/get/list/cancel/watch, leaderboard
    "services.client.play",  # play (submit): a human seat (issue 19 part 3)
    "services.client.verdicts",  # rejudge, continue
]


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser(
        "up",
        help="start the suite and keep it running until Ctrl-C",
        description="Starts the suite and keeps it running until Ctrl-C. Every port is checked first: "
        "when one is taken (a suite already up, say), nothing starts and the flag that moves it is named.",
    )
    defaults = SuiteConfig()
    up.add_argument("--host", default=defaults.host, help="where the services listen (default: %(default)s)")
    up.add_argument(
        "--orchestrator-port",
        type=int,
        default=defaults.orchestrator_port,
        help="the public API (default: %(default)s)",
    )
    up.add_argument("--judge-port", type=int, default=defaults.judge_port, help="(default: %(default)s)")
    up.add_argument("--accounting-port", type=int, default=defaults.accounting_port, help="(default: %(default)s)")
    up.add_argument(
        "--gateway-port",
        type=int,
        help=f"Envoy's port for grpc-web and the page (default: $GATEWAY_PORT or {defaults.gateway.port})",
    )
    up.add_argument("--data-dir", default=defaults.data_dir, help="folder of the SQLite files (default: %(default)s)")
    up.add_argument(
        "--log-level", default=defaults.log_level, help="DEBUG, INFO, WARNING or ERROR (default: %(default)s)"
    )
    up.add_argument(
        "--replicas",
        type=int,
        default=defaults.replicas,
        help="processes of each service (orchestrator, judge, accounting) behind Envoy; replica k listens on "
        f"its service's port + {defaults.port_step}*k. More than 1 needs DATABASE_URL or --postgres",
    )
    up.add_argument(
        "--postgres",
        action="store_true",
        help="start a throwaway PostgreSQL (initdb on a temporary folder, a free port) for the suite, removed at stop",
    )

    up.add_argument(
        "--no-metrics",
        action="store_true",
        help="serve no Prometheus metrics (by default each service serves /metrics on a free port, shown at start)",
    )

    def handle(args: argparse.Namespace) -> int:
        config = SuiteConfig(
            host=args.host,
            orchestrator_port=args.orchestrator_port,
            judge_port=args.judge_port,
            accounting_port=args.accounting_port,
            data_dir=args.data_dir,
            log_level=args.log_level,
            replicas=args.replicas,
            metrics=not args.no_metrics,
        )
        if args.gateway_port is not None:
            config.gateway = GatewayConfig(port=args.gateway_port)
        return asyncio.run(run_up(config, postgres=args.postgres))

    up.set_defaults(handler=handle)

    render = sub.add_parser("envoy-config", help="print the gateway's Envoy configuration")
    render.add_argument("--compose", action="store_true", help="the docker-compose set-up (gateway/envoy.yaml)")
    render.set_defaults(handler=print_envoy_config)


def print_envoy_config(args: argparse.Namespace) -> int:
    """Prints the Envoy configuration `up` would run (the GATEWAY_* and TLS_* variables of this
    environment, the suite's default ports), or with --compose docker-compose's (gateway/envoy.yaml)."""
    if args.compose:
        sys.stdout.write(render_envoy_yaml(compose_envoy_config(), COMPOSE_ENVOY_HEADER))
        return 0
    suite = SuiteConfig()
    web = f"127.0.0.1:{suite.gateway.web_port or 8081}" if suite.gateway.web_available else None
    sys.stdout.write(render_envoy_yaml(suite_envoy_config(suite, web)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="debate-engine", description="Multi-LLM debates over gRPC")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
