"""`debate-engine load`: a ghz-compatible load client.

    debate-engine load --call debate.accounting.v1.AccountingService/CalculateCost \\
        -d '{"model":"claude-3-5-sonnet-20241022","usage":{"promptTokens":1000,"completionTokens":500}}' \\
        -n 2000 -c 20 --insecure -O json 127.0.0.1:50053

Takes ghz's main flags with ghz's defaults (-n 200, -c 50, -t 20s, --connections 1,
-O summary) and writes ghz's report formats: summary, json, pretty, csv. Methods and types
come from the server's reflection service (or --protoset). -d takes JSON, `@` for stdin or
`@path` for a file (-D path too); a JSON list is sent round-robin over unary calls; ghz's
call-template actions ({{.RequestNumber}}, {{.UUID}}, {{.WorkerID}}, {{.TimestampUnixNano}},
{{newUUID}}, ...) are rendered per call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys

from services.loadtest.config import LoadConfig
from services.loadtest.formats import format_csv, format_summary, to_json
from services.loadtest.multi import run_procs
from services.loadtest.reflection import CallError, decode_json, load_json_argument
from services.loadtest.runner import LoadRunner

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Go's time.ParseDuration subset ("10s", "1m30s", "250ms", "0"), in seconds; a bare
    number is taken as seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 10s, 1m30s, 250ms)")
    return total


def _json_object(text: str, what: str) -> dict[str, str]:
    value = decode_json(text, what)
    if not isinstance(value, dict):
        raise CallError(f"{what} must be a JSON object")
    return {str(k): str(v) for k, v in value.items()}


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.add_argument("host", help="the server, host:port (only ever a service you run)")
    p.add_argument("--call", required=True, help="the method, package.Service.Method or package.Service/Method")
    p.add_argument("--protoset", default="", help="a compiled protoset instead of server reflection")
    p.add_argument("-d", "--data", default=None, help="request data as JSON; @ reads stdin, @path a file")
    p.add_argument("-D", "--data-file", default="", help="file of request data as JSON")
    p.add_argument("-m", "--metadata", default=None, help="request metadata as a JSON object")
    p.add_argument("-M", "--metadata-file", default="", help="file of request metadata as a JSON object")
    p.add_argument("-n", "--total", type=int, default=200, help="number of requests (default 200)")
    p.add_argument("-c", "--concurrency", type=int, default=50, help="concurrent workers (default 50)")
    p.add_argument("-z", "--duration", type=go_duration, default=0.0, help="run for this long, ignoring -n (e.g. 10s)")
    p.add_argument(
        "-x", "--max-duration", type=go_duration, default=0.0, help="stop after this long even if -n calls are not done"
    )
    p.add_argument(
        "--duration-stop",
        default="close",
        choices=["close", "wait", "ignore"],
        help="calls in flight when -z ends: close (report Canceled), wait, ignore",
    )
    p.add_argument("-r", "--rps", type=int, default=0, help="requests per second limit (default none)")
    p.add_argument("-t", "--timeout", type=go_duration, default=20.0, help="per call, 0 for none (default 20s)")
    p.add_argument("--connect-timeout", type=go_duration, default=10.0, help="dial timeout (default 10s)")
    p.add_argument("--keepalive", type=go_duration, default=0.0, help="keepalive time")
    p.add_argument("--connections", type=int, default=1, help="HTTP/2 connections, workers spread over them")
    p.add_argument("--insecure", action="store_true", help="plaintext connection")
    p.add_argument("--cacert", default="", help="trusted root certificates (TLS)")
    p.add_argument("--cert", default="", help="client certificate (TLS)")
    p.add_argument("--key", default="", help="client private key (TLS)")
    p.add_argument("--cname", default="", help="server name override for TLS")
    p.add_argument("--authority", default="", help=":authority pseudo-header")
    p.add_argument("-e", "--enable-compression", action="store_true", help="gzip requests")
    p.add_argument(
        "--stream-call-count",
        type=int,
        default=0,
        help="end each server stream after this many messages (counts as OK)",
    )
    p.add_argument(
        "--stream-call-duration",
        type=go_duration,
        default=0.0,
        help="end each server stream after this long (counts as OK)",
    )
    p.add_argument("-O", "--format", default="summary", choices=["summary", "json", "pretty", "csv"])
    p.add_argument("-o", "--output", default="", help="write the report to this file instead of stdout")
    p.add_argument("--name", default="", help="a name for the run")
    p.add_argument("--tags", default=None, help="JSON object of string tags")
    p.add_argument(
        "--skipFirst",
        "--skip-first",
        dest="skip_first",
        type=int,
        default=0,
        help="leave the first N calls out of the report",
    )
    p.add_argument("--count-errors", action="store_true", help="count errors in latency statistics")
    p.add_argument(
        "--cpus",
        type=int,
        default=os.cpu_count() or 1,
        help="reported as ghz's CPUs (see --procs for more than one core of load)",
    )
    p.add_argument(
        "--procs",
        type=int,
        default=1,
        help="processes driving the load (each about one core); -n, -c and --rps are split among them",
    )
    return p


def config_from_args(args: argparse.Namespace, stdin_reader=None) -> LoadConfig:
    if args.data is not None and args.data_file:
        raise CallError("give -d or -D, not both")
    data = None
    if args.data is not None:
        data = load_json_argument(args.data, stdin_reader)
    elif args.data_file:
        data = load_json_argument("@" + args.data_file)
    metadata = None
    if args.metadata is not None:
        metadata = _json_object(load_json_argument(args.metadata, stdin_reader), "metadata")
    elif args.metadata_file:
        metadata = _json_object(load_json_argument("@" + args.metadata_file), "metadata")
    if not args.insecure and not (args.cacert or args.cert):
        # ghz dials TLS unless told --insecure; say so rather than hang on a plaintext port.
        print("debate-engine load: no --insecure: using TLS with the system's roots", file=sys.stderr)
    return LoadConfig(
        target=args.host,
        call=args.call,
        data=data,
        total=args.total,
        concurrency=args.concurrency,
        duration=args.duration,
        max_duration=args.max_duration,
        duration_stop=args.duration_stop,
        rps=args.rps,
        timeout=args.timeout,
        dial_timeout=args.connect_timeout,
        keepalive=args.keepalive,
        connections=args.connections,
        insecure=args.insecure,
        cacert=args.cacert,
        cert=args.cert,
        key=args.key,
        cname=args.cname,
        authority=args.authority,
        metadata=metadata,
        protoset=args.protoset,
        name=args.name,
        tags=_json_object(args.tags, "tags") if args.tags else None,
        skip_first=args.skip_first,
        count_errors=args.count_errors,
        enable_compression=args.enable_compression,
        cpus=args.cpus,
        stream_call_count=args.stream_call_count,
        stream_call_duration=args.stream_call_duration,
    )


def render(report: dict, fmt: str) -> str:
    if fmt == "json":
        return to_json(report) + "\n"
    if fmt == "pretty":
        return to_json(report, pretty=True) + "\n"
    if fmt == "csv":
        return format_csv(report)
    return format_summary(report)


async def _run(runner: LoadRunner) -> dict:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, runner.stop)
    return await runner.run()


def _event_loop_runner():
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def handle(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        if args.procs > 1:
            LoadRunner(config).prepare()  # a bad call or address fails here, once
            report = run_procs(config, args.procs)
        else:
            runner = LoadRunner(config)
            runner.prepare()
            report = _event_loop_runner()(_run(runner))
    except (CallError, OSError) as error:
        print(f"debate-engine load: {error}", file=sys.stderr)
        return 1
    text = render(report, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "load",
        help="ghz-compatible gRPC load test of any method found through reflection",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build_parser(parser)
    parser.set_defaults(handler=handle)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        argparse.ArgumentParser(
            prog="debate-engine load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    )
    return handle(parser.parse_args(argv))
