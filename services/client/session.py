"""A session with the orchestrator: connecting to one (or starting the suite here), running or
watching a debate through the live view, and turning every failure into a message and an
exit code (see services/client/__init__.py for the codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TextIO

import grpc
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.client.follow import StreamLost, follow
from services.client.style import Style, Wrapper, money, safe_text
from services.client.verdict_history import history_lines
from services.client.view import TERMINAL_STATES, DebateView, state_name
from services.common.channels import open_channel
from services.common.debate_rules import ProviderKeyMissing
from services.common.grpc_errors import error_details, precondition_violations
from services.common.settings import ChannelSettings
from services.common.text import plural
from services.gateway import GatewayConfig
from services.launcher import SuiteConfig
from services.supervisor import ProcessDied, Suite

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROVIDER_KEY_MISSING = ProviderKeyMissing.reason
# FailedPrecondition reasons that name something the command line got wrong, whatever the state
# (the seat named is not a human seat): bad input, exit 2, as InvalidArgument is.
USAGE_REASONS = frozenset({"NOT_A_HUMAN_SEAT"})
DEFAULT_TARGET = "127.0.0.1:50051"  # the orchestrator's port under `debate-engine up`


def default_target() -> str:
    """The orchestrator attach, list and cancel call without --target: $DEBATE_ENGINE_TARGET or
    DEFAULT_TARGET."""
    return os.environ.get("DEBATE_ENGINE_TARGET") or DEFAULT_TARGET


# -- connections --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _channel(address: str) -> grpc.aio.Channel:
    """A channel with the user's key (DEBATE_ENGINE_API_KEY), when the suite asks for one; else
    SERVICE_API_KEY, and the TLS_* files, from the environment (ChannelSettings)."""
    return open_channel(
        address,
        ChannelSettings(),
        service_key=os.environ.get("DEBATE_ENGINE_API_KEY") or None,
        health_checks=False,  # the target may be Envoy, which has no grpc.health.v1 to watch
    )


@asynccontextmanager
async def orchestrator(
    target: str | None, out: TextIO, style: Style, *, data_dir: str | None = None, verbose: bool = False
) -> AsyncIterator[orchestrator_pb2_grpc.OrchestratorServiceAsyncStub]:
    """A stub for `target`, or for a suite started here (free ports, a temporary data dir)
    and stopped on the way out."""
    if target:
        async with _channel(target) as channel:
            yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        return
    with tempfile.TemporaryDirectory(prefix="debate-engine-") as scratch:
        config = SuiteConfig(
            orchestrator_port=free_port(),
            judge_port=free_port(),
            accounting_port=free_port(),
            data_dir=data_dir or scratch,
            log_level="INFO" if verbose else "WARNING",
            extra_env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            gateway=GatewayConfig(enabled=False),
        )  # a terminal needs no grpc-web
        relay = (lambda line: print(style.paint(line, "dim"), file=sys.stderr, flush=True)) if verbose else None
        suite = Suite(config.process_specs(), output=relay)
        began = time.monotonic()
        out.write(style.paint("starting the suite: accounting, judge, orchestrator ...", "dim") + "\n")
        out.flush()
        await suite.start()
        try:
            out.write(
                style.paint(
                    f"suite up in {time.monotonic() - began:.1f}s; orchestrator on {config.orchestrator_address}", "dim"
                )
                + "\n"
            )
            async with _channel(config.orchestrator_address) as channel:
                yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        finally:
            out.write(style.paint("stopping the suite ...", "dim") + "\n")
            out.flush()
            await asyncio.shield(suite.stop())


# -- running and watching -----------------------------------------------------------------


def intro_lines(style: Style, config: common_pb2.DebateConfig, debate_id: str = "") -> list[str]:
    s = style
    order = {common_pb2.TURN_ORDER_SEQUENTIAL: "sequential"}.get(config.format.turn_order, "simultaneous")
    lines = ["", s.rule("Debate"), "  " + s.paint(safe_text(config.topic), "bold")]
    facts = [
        plural(config.format.round_limit, "round"),
        f"{order} turns",
        f"judge {', '.join(config.judge.models) or 'default'}",
    ]
    if config.HasField("budget") and config.budget.amount:
        facts.append(f"budget {money(config.budget.amount, config.budget.currency_code)}")
    if debate_id:
        facts.append(f"id {debate_id}")
    lines.append("  " + s.paint(" · ".join(facts), "dim"))
    width = max(len(p.name) for p in config.participants) if config.participants else 0
    for index, p in enumerate(config.participants):
        about = " · ".join(x for x in (p.stance and f"argues {p.stance}", p.model) if x)
        lines.append(
            f"  {s.debater(index, s.glyph('●', '*') + ' ' + p.name.ljust(width), 'bold')}  {s.paint(about, 'dim')}"
        )
        wrapper = Wrapper(s.width, " " * (width + 6), width + 6)
        lines.append(wrapper.feed(safe_text(p.persona)) + wrapper.finish().rstrip("\n"))
    if any(p.model.startswith("sim/") for p in config.participants) or any(
        m.startswith("sim/") for m in config.judge.models
    ):
        lines.append(
            s.paint("  sim/... are the built-in simulated models: offline, deterministic, paced like real ones.", "dim")
        )
    return lines


async def run_debate(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
    config: common_pb2.DebateConfig,
    out: TextIO,
    style: Style,
    *,
    target: str | None = None,
    cancel_on_exit: bool = False,
) -> int:
    """Creates, starts and watches one debate. Ctrl-C detaches: the debate goes on, and how to
    re-attach and cancel is printed (exit 130); with `cancel_on_exit`, Ctrl-C cancels it. `target`
    is the orchestrator named on the command line (None: a suite started here, which stops)."""
    created = await stub.CreateDebate(pb.CreateDebateRequest(config=config, request_id=str(uuid.uuid4())), timeout=30)
    debate = created.debate
    if debate.HasField("config"):
        config = debate.config  # as the server stored it
    out.write("\n".join(intro_lines(style, config, debate.debate_id)) + "\n")
    out.flush()
    began = time.monotonic()
    await stub.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id), timeout=30)
    view = DebateView(out, style, participants=config.participants, round_limit=config.format.round_limit)
    try:
        try:
            await follow(stub, debate.debate_id, view)
        finally:
            view.close()
    except asyncio.CancelledError:
        if not cancel_on_exit:
            out.write(style.paint("\n" + "\n".join(detach_lines(debate.debate_id, target)), "yellow") + "\n")
            out.flush()
            return EXIT_INTERRUPTED
        out.write(style.paint("\ninterrupted: cancelling the debate ...", "yellow") + "\n")
        out.flush()
        with contextlib.suppress(grpc.RpcError):
            await asyncio.shield(
                stub.CancelDebate(
                    pb.CancelDebateRequest(debate_id=debate.debate_id, reason="interrupted from the terminal"),
                    timeout=5,
                )
            )
        out.write(style.paint(f"debate {debate.debate_id} cancelled", "yellow") + "\n")
        out.flush()
        return EXIT_INTERRUPTED
    return _outcome(view, out, style, time.monotonic() - began)


def detach_lines(debate_id: str, target: str | None) -> list[str]:
    """What Ctrl-C prints: the debate goes on, and the commands that re-attach and cancel it; or,
    when the suite was started here (`target` None), that the suite stops and the debate with it."""
    if target is None:
        return [
            f"interrupted: the suite started here stops, and debate {debate_id} with it.",
            "To keep a debate running after Ctrl-C, start the suite with `debate-engine up` and pass --target.",
        ]
    at = "" if target == default_target() else f" --target {target}"
    return [
        f"detached: debate {debate_id} goes on.",
        f"  watch it again:  debate-engine attach {debate_id}{at}",
        f"  cancel it:       debate-engine cancel {debate_id}{at}",
    ]


async def watch(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
    debate_id: str,
    after: int,
    out: TextIO,
    style: Style,
    *,
    target: str | None = None,
) -> int:
    """Watches a debate to its end; Ctrl-C stops watching only (exit 130)."""
    got = await stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id), timeout=30)
    config = got.debate.config
    out.write("\n".join(intro_lines(style, config, debate_id)) + "\n")
    out.write(
        style.paint(
            f"  {state_name(got.debate.state)} · {got.debate.last_sequence} events so far"
            f"{f'; showing those after {after}' if after else ''}",
            "dim",
        )
        + "\n"
    )
    if len(got.debate.verdicts) > 1:  # re-judged or continued: its verdict versions so far
        out.write("\n".join(history_lines(style, got.debate.verdicts)) + "\n")
    view = DebateView(out, style, participants=config.participants, round_limit=config.format.round_limit)
    if got.debate.state in TERMINAL_STATES:  # a continued debate ended more than once: watch to its last end
        view.ends_after = got.debate.last_sequence
    try:
        try:
            await follow(stub, debate_id, view, after=after)
        finally:
            view.close()
    except asyncio.CancelledError:  # Ctrl-C: only the watching stops
        out.write(style.paint("\n" + "\n".join(detach_lines(debate_id, target)), "yellow") + "\n")
        out.flush()
        return EXIT_INTERRUPTED
    return _outcome(view, out, style)


def _outcome(view: DebateView, out: TextIO, style: Style, seconds: float | None = None) -> int:
    if view.succeeded:
        took = f" in {seconds:.1f}s" if seconds is not None else ""
        out.write("\n" + style.paint(f"{style.glyph('✓', 'OK')} debate completed{took}", "bold", "green") + "\n")
        out.flush()
        return EXIT_OK
    if not view.finished:  # a finished debate's end is on the screen already
        print("debate-engine: the stream ended before the debate did", file=sys.stderr)
    return EXIT_FAILED


# -- error handling -----------------------------------------------------------------------


def report_rpc_error(error: grpc.RpcError, style: Style, target: str | None = None) -> int:
    """Prints what failed in a line or a few (the server's field violations, one a line) and returns the
    exit code. `target`: the orchestrator the command called, named when nothing answers there."""
    info, violations = error_details(error)
    err = sys.stderr
    if target and error.code() == grpc.StatusCode.UNAVAILABLE and "resolving" in (error.details() or ""):
        print(f"debate-engine: the host of {target} is not known here; check --target HOST:PORT", file=err)
        return EXIT_FAILED
    if target and _nothing_listens(error):
        print(
            f"debate-engine: no orchestrator answers at {target}: start the suite with `debate-engine up` "
            "(in another terminal), or pass --target HOST:PORT",
            file=err,
        )
        return EXIT_FAILED
    if violations:
        print(style.paint("debate-engine: the server rejected the request:", "bold", "red"), file=err)
        width = max(len(f) for f, _ in violations)
        for field_path, description in violations:
            print(f"  {field_path.ljust(width)}  {description}", file=err)
        return EXIT_USAGE
    if info is not None and info.reason == PROVIDER_KEY_MISSING:
        # Refused before anything started (the API's rule): one line that names the variable.
        variables = info.metadata.get("variables", "the provider key")
        it = "them" if "," in variables else "it"
        print(
            f"debate-engine: not started: {error.details()}; export {it} where the suite runs "
            "(before `debate-engine up`, or before this command when it starts the suite)",
            file=err,
        )
        return EXIT_USAGE
    reason = f" [{info.reason}]" if info and info.reason and info.reason != error.code().name else ""
    print(f"debate-engine: {error.code().name}{reason}: {error.details()}", file=err)
    for subject, description in precondition_violations(error):
        if description != error.details():
            print(f"  {subject}  {description}", file=err)
        else:
            print(f"  {subject}", file=err)
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        print("  set DEBATE_ENGINE_API_KEY to an API key the orchestrator accepts", file=err)
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT or (info is not None and info.reason in USAGE_REASONS):
        return EXIT_USAGE
    return EXIT_FAILED


def _nothing_listens(error: grpc.RpcError) -> bool:
    """Whether the call failed because no server could be reached (refused, no route, bad name)."""
    said = (error.details() or "").lower()
    return error.code() == grpc.StatusCode.UNAVAILABLE and any(
        words in said for words in ("failed to connect", "connection refused", "dns resolution failed", "unreachable")
    )


def run(main: Callable[[Style], Coroutine[Any, Any, int]], *, target: str | None = None) -> int:
    """Runs a command's coroutine and turns every failure into a message and an exit code; `target`
    is the orchestrator given on the command line (or by default), named when nothing answers."""
    style = Style.for_stream(sys.stdout)
    err_style = Style.for_stream(sys.stderr)
    try:
        return asyncio.run(main(style))
    except KeyboardInterrupt:
        print("\ndebate-engine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `debate-engine demo | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except grpc.RpcError as error:
        return report_rpc_error(error, err_style, target)
    except (ProcessDied, TimeoutError, StreamLost) as error:
        print(f"debate-engine: {error}", file=sys.stderr)
        return EXIT_FAILED
