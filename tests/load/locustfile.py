"""Locust load test of the gRPC suite: the test plan's section 7, ported from HTTP to gRPC.

Users (pick some by class name on the command line, or all by default):

- `DebateUser`: the orchestrator flow of the test plan: CreateDebate, StartDebate, then
  GetDebateStatus polls until the debate ends, then GetDebate; plus the plan's weighted
  status and get calls on the user's last debate.
- `WatcherUser`: subscribes to StreamDebateEvents of a debate a DebateUser started (or of
  its own) and follows it to the end; one locust request per stream, with the number of
  events as the response length, and one "first event" request for the time to the first.
- `JudgeUser`: EvaluateRound of a two-debater round with the simulated judge.
- `AccountingUser`: CalculateCost (weight 3), RecordUsage with a unique request_id each
  time (weight 1) and CountTokens (weight 1).

Every call is reported to locust's request event: request_type "grpc", name = the method,
response_time in ms, the exception when the call failed (any non-OK status).

Run against `debate-engine up` (addresses default to its ports on 127.0.0.1):

    .venv/bin/locust -f tests/load/locustfile.py --headless -u 20 -r 10 -t 30s \\
        --html reports/locust.html --csv reports/locust
    .venv/bin/locust -f tests/load/locustfile.py --headless -u 10 -r 5 -t 20s JudgeUser AccountingUser

Addresses: --orchestrator-addr/--judge-addr/--accounting-addr (or the environment variables
LOCUST_ORCHESTRATOR_ADDR, LOCUST_JUDGE_ADDR, LOCUST_ACCOUNTING_ADDR); --host sets the
orchestrator's. --api-key (LOCUST_API_KEY) is sent as `authorization: Bearer <key>` when the
suite requires keys. --debate-model/--judge-model pick the models (default the simulated
ones) and --rounds the rounds of each debate.
"""

from __future__ import annotations

import collections
import itertools
import os
import random
import time
import uuid

# gRPC must run on gevent's hub, as locust's users do, before any channel exists.
from grpc.experimental import gevent as grpc_gevent

grpc_gevent.init_gevent()

import grpc
from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from debate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from locust import User, between, events, task

from services.client.follow import events_of

DEFAULT_ADDRS = {
    "orchestrator": "127.0.0.1:50051",
    "judge": "127.0.0.1:50052",
    "accounting": "127.0.0.1:50053",
}
TERMINAL_STATES = {
    orchestrator_pb2.DEBATE_STATE_COMPLETED,
    orchestrator_pb2.DEBATE_STATE_FAILED,
    orchestrator_pb2.DEBATE_STATE_CANCELLED,
    orchestrator_pb2.DEBATE_STATE_BUDGET_EXCEEDED,
}
# Debates started by DebateUsers of this process, for WatcherUsers to follow.
RECENT_DEBATES: collections.deque[str] = collections.deque(maxlen=50)
_run_id = uuid.uuid4().hex[:8]
_counter = itertools.count()


@events.init_command_line_parser.add_listener
def _add_options(parser):
    for service in ("orchestrator", "judge", "accounting"):
        parser.add_argument(
            f"--{service}-addr",
            type=str,
            env_var=f"LOCUST_{service.upper()}_ADDR",
            default=DEFAULT_ADDRS[service],
            help=f"host:port of the {service} service",
        )
    parser.add_argument(
        "--api-key",
        type=str,
        env_var="LOCUST_API_KEY",
        default="",
        help="sent as 'authorization: Bearer <key>' when the suite requires keys",
    )
    parser.add_argument("--debate-model", type=str, env_var="LOCUST_DEBATE_MODEL", default="sim/debater")
    parser.add_argument("--judge-model", type=str, env_var="LOCUST_JUDGE_MODEL", default="sim/judge")
    parser.add_argument("--rounds", type=int, env_var="LOCUST_ROUNDS", default=2, help="rounds of each debate")
    parser.add_argument(
        "--call-timeout",
        type=float,
        env_var="LOCUST_CALL_TIMEOUT",
        default=30.0,
        help="deadline of a unary call, seconds",
    )
    parser.add_argument(
        "--stream-timeout",
        type=float,
        env_var="LOCUST_STREAM_TIMEOUT",
        default=120.0,
        help="deadline of a watcher's stream, seconds",
    )


def _option(environment, name: str, default):
    options = environment.parsed_options
    return getattr(options, name, default) if options is not None else default


def _address(environment, service: str) -> str:
    if service == "orchestrator":
        host = getattr(environment, "host", None) or ""
        if host:
            return host.split("://", 1)[-1].rstrip("/")
    return _option(environment, f"{service}_addr", DEFAULT_ADDRS[service])


class GrpcUser(User):
    """A user with one channel to `service`; `self.call()` reports each call to locust."""

    abstract = True
    service = ""

    def on_start(self) -> None:
        env = self.environment
        self.address = _address(env, self.service)
        self.channel = grpc.insecure_channel(self.address)
        key = _option(env, "api_key", "")
        self.metadata = (("authorization", f"Bearer {key}"),) if key else None
        self.timeout = _option(env, "call_timeout", 30.0)

    def on_stop(self) -> None:
        channel = getattr(self, "channel", None)
        if channel is not None:
            channel.close()

    def _fire(
        self, name: str, start: float, length: int, exception: BaseException | None, request_type: str = "grpc"
    ) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exception,
            context={"service": self.service},
        )

    def call(self, name: str, method, request):
        """A unary call, timed and reported; returns the response or None on failure."""
        start = time.perf_counter()
        try:
            response = method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            self._fire(name, start, 0, error)
            return None
        self._fire(name, start, response.ByteSize(), None)
        return response


def _debate_config(environment) -> common_pb2.DebateConfig:
    model = _option(environment, "debate_model", "sim/debater")
    return common_pb2.DebateConfig(
        topic="Performance test debate: should cities ban cars from their centres?",
        participants=[
            common_pb2.Participant(name="Ada", model=model, persona="An urban planner", stance="for"),
            common_pb2.Participant(name="Brook", model=model, persona="A small-business owner", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=[_option(environment, "judge_model", "sim/judge")]),
        format=common_pb2.DebateFormat(
            round_limit=_option(environment, "rounds", 2), turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS
        ),
        max_tokens_per_turn=200,
    )


class DebateUser(GrpcUser):
    """The test plan's DebateUser: create, start, status, get."""

    service = "orchestrator"
    wait_time = between(1, 3)

    def on_start(self) -> None:
        super().on_start()
        self.stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)
        self.debate_id: str | None = None

    @task(4)
    def run_debate(self) -> None:
        """The whole flow: create, start, poll the status until the end, get."""
        created = self.call(
            "CreateDebate",
            self.stub.CreateDebate,
            orchestrator_pb2.CreateDebateRequest(
                config=_debate_config(self.environment), request_id=f"locust-{_run_id}-{next(_counter)}"
            ),
        )
        if created is None:
            return
        self.debate_id = created.debate.debate_id
        started = self.call(
            "StartDebate", self.stub.StartDebate, orchestrator_pb2.StartDebateRequest(debate_id=self.debate_id)
        )
        if started is None:
            return
        RECENT_DEBATES.append(self.debate_id)
        deadline = time.monotonic() + _option(self.environment, "stream_timeout", 120.0)
        while time.monotonic() < deadline:
            self.wait()
            status = self.call(
                "GetDebateStatus",
                self.stub.GetDebateStatus,
                orchestrator_pb2.GetDebateStatusRequest(debate_id=self.debate_id),
            )
            if status is None or status.debate.state in TERMINAL_STATES:
                break
        self.call("GetDebate", self.stub.GetDebate, orchestrator_pb2.GetDebateRequest(debate_id=self.debate_id))

    @task(3)
    def check_status(self) -> None:
        if self.debate_id:
            self.call(
                "GetDebateStatus",
                self.stub.GetDebateStatus,
                orchestrator_pb2.GetDebateStatusRequest(debate_id=self.debate_id),
            )

    @task(1)
    def get_debate(self) -> None:
        if self.debate_id:
            self.call("GetDebate", self.stub.GetDebate, orchestrator_pb2.GetDebateRequest(debate_id=self.debate_id))


class WatcherUser(GrpcUser):
    """Follows a debate's event stream to its end."""

    service = "orchestrator"
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        super().on_start()
        self.stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    def _own_debate(self) -> str | None:
        created = self.call(
            "CreateDebate",
            self.stub.CreateDebate,
            orchestrator_pb2.CreateDebateRequest(
                config=_debate_config(self.environment), request_id=f"locust-{_run_id}-{next(_counter)}"
            ),
        )
        if created is None:
            return None
        if (
            self.call(
                "StartDebate",
                self.stub.StartDebate,
                orchestrator_pb2.StartDebateRequest(debate_id=created.debate.debate_id),
            )
            is None
        ):
            return None
        return created.debate.debate_id

    @task
    def watch(self) -> None:
        debate_id = random.choice(RECENT_DEBATES) if RECENT_DEBATES else self._own_debate()
        if debate_id is None:
            return
        timeout = _option(self.environment, "stream_timeout", 120.0)
        start = time.perf_counter()
        events_seen = 0
        try:
            stream = self.stub.StreamDebateEvents(
                orchestrator_pb2.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=0, batch_events=True),
                timeout=timeout,
                metadata=self.metadata,
            )
            for response in stream:
                if events_seen == 0:
                    self._fire("StreamDebateEvents: first event", start, 0, None, request_type="grpc-stream")
                events_seen += len(events_of(response))
        except grpc.RpcError as error:
            self._fire("StreamDebateEvents", start, events_seen, error, request_type="grpc-stream")
            return
        self._fire("StreamDebateEvents", start, events_seen, None, request_type="grpc-stream")


class JudgeUser(GrpcUser):
    service = "judge"
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        super().on_start()
        self.stub = judge_pb2_grpc.JudgeServiceStub(self.channel)

    @task
    def evaluate_round(self) -> None:
        n = next(_counter)
        request = judge_pb2.EvaluateRoundRequest(
            debate_id=f"locust-{_run_id}-{n}",
            topic="Should cities ban cars from their centres?",
            round_number=1,
            debaters=[
                judge_pb2.Debater(name="Ada", stance="for", persona="An urban planner"),
                judge_pb2.Debater(name="Brook", stance="against", persona="A small-business owner"),
            ],
            turns=[
                judge_pb2.DebaterTurn(
                    debater="Ada",
                    text="Car-free centres cut pollution and give streets "
                    "back to people; cities that tried it saw footfall rise.",
                ),
                judge_pb2.DebaterTurn(
                    debater="Brook",
                    text="Deliveries, disabled access and trade suffer; better transit should come before any ban.",
                ),
            ],
            judge=common_pb2.JudgeConfig(models=[_option(self.environment, "judge_model", "sim/judge")]),
            request_id=f"locust-{_run_id}-judge-{n}",
            seed=n,
        )
        self.call("EvaluateRound", self.stub.EvaluateRound, request)


class AccountingUser(GrpcUser):
    service = "accounting"
    wait_time = between(0.1, 0.5)
    models = ("claude-3-5-sonnet-20241022", "openai/gpt-4o-mini", "sim/debater")

    def on_start(self) -> None:
        super().on_start()
        self.stub = accounting_pb2_grpc.AccountingServiceStub(self.channel)

    @task(3)
    def calculate_cost(self) -> None:
        self.call(
            "CalculateCost",
            self.stub.CalculateCost,
            accounting_pb2.CalculateCostRequest(
                model="claude-3-5-sonnet-20241022",
                usage=common_pb2.TokenUsage(prompt_tokens=1000, completion_tokens=500),
            ),
        )

    @task(1)
    def record_usage(self) -> None:
        n = next(_counter)
        debate = f"locust-{_run_id}-{os.getpid()}-{n % 20}"
        self.call(
            "RecordUsage",
            self.stub.RecordUsage,
            accounting_pb2.RecordUsageRequest(
                request_id=f"debates/{debate}/rounds/1/turns/Ada/attempts/{n}",
                debate_id=debate,
                participant="Ada",
                role=common_pb2.ROLE_DEBATER,
                round_number=1,
                model=random.choice(self.models),
                attempt=1,
                usage=common_pb2.TokenUsage(prompt_tokens=800 + n % 100, completion_tokens=200),
            ),
        )

    @task(1)
    def count_tokens(self) -> None:
        self.call(
            "CountTokens",
            self.stub.CountTokens,
            accounting_pb2.CountTokensRequest(
                model="openai/gpt-4o-mini", text="Car-free centres cut pollution and give streets back to people."
            ),
        )
