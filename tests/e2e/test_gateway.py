"""grpc-web through Envoy, from a script: the suite as `debate-engine up` starts it.

A small grpc-web client (framing over httpx, as a browser's fetch would send it) creates a
debate, starts it and follows its event stream for well over 20 seconds, longer than Envoy's
default 15 s route timeout, so a gateway that cuts long streams fails here. Also: the CORS
preflight exposes the grpc-* headers, the server's field violations arrive through the
gateway, the page is served on the same origin, and the judge and accounting are not routed.
"""

from __future__ import annotations

import base64
import os
import re
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx
import pytest
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from tests.helpers import BIN, ROOT, free_port

pytestmark = pytest.mark.e2e

SERVICE = "/debate.orchestrator.v1.OrchestratorService/"


# --- a grpc-web client ---------------------------------------------------------------------


class GrpcWebError(Exception):
    def __init__(self, status: int, message: str, details: status_pb2.Status | None):
        self.status, self.message, self.details = status, message, details
        super().__init__(f"grpc-status {status}: {message}")

    def field_violations(self) -> dict[str, str]:
        found = {}
        for detail in self.details.details if self.details else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                found.update({v.field: v.description for v in bad.field_violations})
        return found


def _frame(message: Message) -> bytes:
    body = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(body)) + body


def _trailers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode().split("\r\n"):
        if ":" in line:
            key, _, value = line.partition(":")
            out[key.strip().lower()] = value.strip()
    return out


def _raise_for(headers: dict[str, str]) -> None:
    status = int(headers.get("grpc-status", "0"))
    if status == 0:
        return
    details = None
    if raw := headers.get("grpc-status-details-bin"):
        details = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    raise GrpcWebError(status, unquote(headers.get("grpc-message", "")), details)


@dataclass
class GrpcWeb:
    base_url: str
    origin: str | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=httpx.Timeout(30.0, read=60.0)))

    def _headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "accept": "application/grpc-web+proto",
        }
        if self.origin:
            headers["origin"] = self.origin
        return headers

    def stream(self, method: str, request: Message, reply_type: type[Message]) -> Iterator[Message]:
        with self.client.stream(
            "POST", self.base_url + SERVICE + method, content=_frame(request), headers=self._headers()
        ) as response:
            assert response.status_code == 200, response.status_code
            _raise_for(dict(response.headers))  # a trailers-only answer carries its status in the headers
            buffer = b""
            for chunk in response.iter_bytes():
                buffer += chunk
                while len(buffer) >= 5:
                    flag, length = buffer[0], struct.unpack(">I", buffer[1:5])[0]
                    if len(buffer) < 5 + length:
                        break
                    payload, buffer = buffer[5 : 5 + length], buffer[5 + length :]
                    if flag & 0x80:
                        _raise_for(_trailers(payload))
                        return
                    yield reply_type.FromString(payload)
            raise AssertionError("the stream ended without grpc-web trailers (cut by the gateway?)")

    def unary(self, method: str, request: Message, reply_type: type[Message]) -> Message:
        replies = list(self.stream(method, request, reply_type))
        assert len(replies) == 1
        return replies[0]


# --- the suite -----------------------------------------------------------------------------


@dataclass
class RunningSuite:
    process: subprocess.Popen
    gateway_url: str
    output: list[str]
    ports: dict[str, int]


def start_suite(
    data_dir, *, tokens_per_second: float, first_token_latency: float = 0.2, extra_env: dict[str, str] | None = None
) -> RunningSuite:
    """`debate-engine up` with Envoy and the page on free ports, sim models paced as asked."""
    ports = {name: free_port() for name in ("orchestrator", "judge", "accounting", "gateway")}
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "GATEWAY_PORT": str(ports["gateway"]),  # the page's file server picks its own port
        "SIM_TOKENS_PER_SECOND": str(tokens_per_second),
        "SIM_FIRST_TOKEN_LATENCY": str(first_token_latency),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [
            str(BIN / "debate-engine"),
            "up",
            "--data-dir",
            str(data_dir),
            "--orchestrator-port",
            str(ports["orchestrator"]),
            "--judge-port",
            str(ports["judge"]),
            "--accounting-port",
            str(ports["accounting"]),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    up = threading.Event()

    def drain() -> None:  # read everything, so the launcher never blocks on a full pipe
        for line in process.stdout:
            output.append(line)
            if "suite is up" in line:
                up.set()
        up.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 120
    while not up.wait(0.2):
        if time.monotonic() > deadline:
            break
    if process.poll() is not None or not any("suite is up" in line for line in output):
        process.kill()
        raise AssertionError("the suite did not come up:\n" + "".join(output[-40:]))
    return RunningSuite(process, f"http://127.0.0.1:{ports['gateway']}", output, ports)


def stop_suite(suite: RunningSuite) -> None:
    suite.process.terminate()
    try:
        suite.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        suite.process.kill()
        suite.process.wait()


def debate_config(*, rounds: int, max_tokens: int, debaters: int = 2) -> common_pb2.DebateConfig:
    names = ["Ada", "Grace", "Linus", "Rosalind"]
    return common_pb2.DebateConfig(
        topic="Trains should replace short-haul flights",
        participants=[
            common_pb2.Participant(
                name=names[i],
                model="sim/debater",
                persona=f"debater number {i + 1}",
                stance="for" if i % 2 == 0 else "against",
            )
            for i in range(debaters)
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=rounds, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=max_tokens,
        seed=7,
    )


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    # About 4 tokens a second: a turn of up to 60 tokens streams for 10-15 s, so three rounds
    # run well past 20 s.
    running = start_suite(tmp_path_factory.mktemp("gateway-suite"), tokens_per_second=4)
    yield running
    stop_suite(running)


# --- the tests -----------------------------------------------------------------------------


def test_a_debate_streams_through_envoy_for_longer_than_20_seconds_uncut(suite):
    web = GrpcWeb(suite.gateway_url, origin="http://page.example")
    created = web.unary(
        "CreateDebate",
        orchestrator_pb2.CreateDebateRequest(
            config=debate_config(rounds=3, max_tokens=60), request_id=str(uuid.uuid4())
        ),
        orchestrator_pb2.CreateDebateResponse,
    )
    debate_id = created.debate.debate_id
    web.unary(
        "StartDebate", orchestrator_pb2.StartDebateRequest(debate_id=debate_id), orchestrator_pb2.StartDebateResponse
    )

    began = time.monotonic()
    sequences, kinds, token_times = [], [], []
    for reply in web.stream(
        "StreamDebateEvents",
        orchestrator_pb2.StreamDebateEventsRequest(debate_id=debate_id),
        orchestrator_pb2.StreamDebateEventsResponse,
    ):
        kind = reply.event.WhichOneof("payload")
        if kind == "heartbeat":  # not logged: it repeats the last sequence
            continue
        sequences.append(reply.event.sequence)
        kinds.append(kind)
        if kind == "token_delta":
            token_times.append(time.monotonic() - began)
        if kind == "debate_failed":
            failed = reply.event.debate_failed
            pytest.fail(f"the debate failed: {failed.reason}: {failed.message}")
        if kind == "debate_completed":
            break
    lasted = time.monotonic() - began

    assert kinds[-1] == "debate_completed", kinds[-5:]
    assert sequences == list(range(1, len(sequences) + 1)), "the log arrived with gaps or repeats"
    assert kinds.count("round_assessed") == 3 and "verdict_rendered" in kinds
    # The point of the test: one grpc-web stream stayed open past 20 s (Envoy's default route
    # timeout is 15 s). If the sim pacing ever made the debate shorter, this test proves nothing.
    assert lasted > 20, f"the debate took only {lasted:.1f}s; slow the sim models down further"
    assert token_times[-1] > 20


def test_cors_preflight_exposes_the_grpc_status_headers(suite):
    reply = httpx.options(
        suite.gateway_url + SERVICE + "StreamDebateEvents",
        headers={
            "origin": "http://page.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,x-user-agent,authorization",
        },
    )
    assert reply.status_code in (200, 204)
    assert reply.headers["access-control-allow-origin"] == "http://page.example"
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-grpc-web", "x-user-agent", "authorization"} <= allowed


def test_field_violations_reach_a_grpc_web_client(suite):
    web = GrpcWeb(suite.gateway_url, origin="http://page.example")
    config = debate_config(rounds=1, max_tokens=20, debaters=1)
    config.topic = ""
    with pytest.raises(GrpcWebError) as caught:
        web.unary(
            "CreateDebate",
            orchestrator_pb2.CreateDebateRequest(config=config, request_id=str(uuid.uuid4())),
            orchestrator_pb2.CreateDebateResponse,
        )
    assert caught.value.status == 3  # INVALID_ARGUMENT
    violations = caught.value.field_violations()
    assert "config.topic" in violations
    assert any(re.fullmatch(r"config\.participants(\[\d+\])?", f) for f in violations), violations


def test_the_page_is_served_on_the_same_origin_and_internal_services_are_not_routed(suite):
    page = httpx.get(suite.gateway_url + "/")
    assert page.status_code == 200 and "Debate Engine" in page.text
    assert httpx.get(suite.gateway_url + "/app.js").status_code == 200
    for method in ("/debate.judge.v1.JudgeService/AssessRound", "/debate.accounting.v1.AccountingService/RecordUsage"):
        reply = httpx.post(
            suite.gateway_url + method,
            content=b"\x00\x00\x00\x00\x00",
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
        # Not a gRPC answer from the service: the gateway's static route (404) or no route at all.
        assert reply.headers.get("grpc-status") is None, (method, reply.headers)
        assert reply.status_code == 404


def test_the_judge_and_accounting_are_routed_only_when_the_settings_say_so(tmp_path):
    from services.gateway import envoy_config, render_envoy_yaml

    def prefixes(config: dict) -> set[str]:
        manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return {r["match"]["prefix"] for r in manager["route_config"]["virtual_hosts"][0]["routes"]}

    closed = envoy_config(listen_host="127.0.0.1", listen_port=8080, orchestrator="127.0.0.1:50051")
    assert prefixes(closed) == {
        "/debate.orchestrator.v1.OrchestratorService/",
        "/debate.orchestrator.v1.TournamentService/",
    }
    opened = envoy_config(
        listen_host="127.0.0.1",
        listen_port=8080,
        orchestrator="127.0.0.1:50051",
        internal={"judge": "127.0.0.1:50052", "accounting": "127.0.0.1:50053"},
    )
    assert prefixes(opened) == {
        "/debate.orchestrator.v1.OrchestratorService/",
        "/debate.orchestrator.v1.TournamentService/",
        "/debate.judge.v1.JudgeService/",
        "/debate.accounting.v1.AccountingService/",
    }
    path = tmp_path / "envoy.yaml"
    path.write_text(render_envoy_yaml(opened))
    validate = subprocess.run(
        [str(BIN / "envoy"), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "--log-level", "error"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
