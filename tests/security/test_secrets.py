"""Canary key: a provider key in the environment never reaches a log, an error, an event or a file.

A local OpenAI-compatible server that is as indiscreet as a provider can be answers every
call with an error that echoes the caller's whole key: in a 401 JSON body, in a 500 body, in
a non-JSON 502 page, in a response header, and in an error event in the middle of a stream.
Then:
- the LLM layer, in this process, is called through it: the typed error (message, repr,
  metadata, partial text, the gRPC status it becomes) and every log record (raw records at
  DEBUG, before any masking filter) must be free of the key;
- the suite, started as processes by `services.supervisor.Suite` with its output captured, with
  API keys on (a caller's key in API_KEYS, the suite's own key in SERVICE_API_KEY, both canaries
  too), runs debates whose debaters and judges call it: no output line, event, RPC answer or
  error, and no byte of any file in the data dir (SQLite, WAL and all) may contain any of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import traceback
from pathlib import Path

import grpc
import pytest

from tests.helpers import free_port

CANARY_OPENAI = f"sk-canary-{secrets.token_hex(16)}"
CANARY_LOCAL = f"sk-canary-local-{secrets.token_hex(16)}"
CANARY_USER = f"sk-canary-user-{secrets.token_hex(16)}"  # a caller's API key (API_KEYS)
CANARY_SERVICE = f"sk-canary-service-{secrets.token_hex(16)}"  # the suite's own key (SERVICE_API_KEY)
CANARIES = (CANARY_OPENAI, CANARY_LOCAL, CANARY_USER, CANARY_SERVICE)


def _leaks(text: str | bytes) -> list[str]:
    """The canaries (or their random cores) found in `text`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    found = []
    for canary in CANARIES:
        core = canary.rsplit("-", 1)[1]
        if canary in text or core[:16] in text or core[-16:] in text:
            found.append(canary[:12] + "...")
    return found


class KeyEchoServer:
    """An OpenAI-compatible endpoint whose every answer is an error echoing the bearer key.

    The model name picks the failure: `...-401`, `...-500`, `...-502` (HTML), `...-midstream`
    (a 200 stream that sends one chunk and then an error event); anything else answers 401.
    """

    def __init__(self):
        self.port = 0
        self.calls: list[str] = []
        self._server: asyncio.base_events.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> KeyEchoServer:  # noqa: PYI034
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                key = headers.get("authorization", "").removeprefix("Bearer ").strip() or "(none)"
                try:
                    model = str(json.loads(body or b"{}").get("model", ""))
                except ValueError:
                    model = ""
                self.calls.append(model)
                writer.write(self._answer(model, key))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _response(status: str, body: bytes, content_type: str, key: str) -> bytes:
        head = (
            f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            f"x-request-key: {key}\r\nconnection: keep-alive\r\n\r\n"
        )
        return head.encode() + body

    def _answer(self, model: str, key: str) -> bytes:
        if model.endswith("-500"):
            body = json.dumps(
                {
                    "error": {
                        "message": f"internal error while using key {key}",
                        "type": "server_error",
                        "code": None,
                        "param": key,
                    }
                }
            ).encode()
            return self._response("500 Internal Server Error", body, "application/json", key)
        if model.endswith("-502"):
            body = f"<html><body>Bad gateway for {key}</body></html>".encode()
            return self._response("502 Bad Gateway", body, "text/html", key)
        if model.endswith("-midstream"):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}],
            }
            error = {"error": {"message": f"stream aborted; key {key} revoked", "type": "server_error"}}
            body = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(error)}\n\n".encode()
            head = (
                f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}\r\n"
                f"x-request-key: {key}\r\n\r\n"
            )
            return head.encode() + body
        body = json.dumps(
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}. You can find your API key at "
                    "https://platform.example/account/api-keys.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
        )
        return self._response("401 Unauthorized", body.encode(), "application/json", key)


MODES = ("401", "500", "502", "midstream")


@pytest.fixture
async def echo_server():
    async with KeyEchoServer() as server:
        yield server


# --- the LLM layer, in this process --------------------------------------------------------


def _llm_settings(base_url: str, transport: str = "lean"):
    from services.common.llm import Endpoint, LLMSettings

    return LLMSettings(
        llm_allowed_models=["sim/*", "openai/*", "local/*"],
        llm_openai_api_base=base_url,
        llm_endpoints={"local": Endpoint(api_base=base_url, api_key_env="LOCAL_API_KEY", transport=transport)},
        llm_retries=1,
        llm_backoff_base=0.01,
        llm_backoff_max=0.05,
        llm_first_token_timeout=10,
        llm_connect_timeout=5,
    )


def _llm_cases():
    for mode in MODES:
        yield pytest.param("openai/gpt-canary", "lean", mode, id=f"openai-lean-{mode}")
        yield pytest.param("local/canary", "lean", mode, id=f"endpoint-lean-{mode}")
        yield pytest.param("local/canary", "litellm", mode, id=f"endpoint-litellm-{mode}")


@pytest.mark.parametrize("model_prefix,transport,mode", list(_llm_cases()))
async def test_llm_layer_errors_and_logs_never_carry_the_key(
    echo_server, monkeypatch, caplog, model_prefix, transport, mode
):
    from services.common.grpc_errors import status_for
    from services.common.llm import (
        ChatMessage,
        CompletionRequest,
        LLMError,
        build_llm_client,
        collect,
    )

    monkeypatch.setenv("OPENAI_API_KEY", CANARY_OPENAI)
    monkeypatch.setenv("LOCAL_API_KEY", CANARY_LOCAL)
    caplog.set_level(logging.DEBUG)
    # As configure_logging does in every service: third-party HTTP clients log WARNING and up
    # (httpcore's DEBUG records carry raw response headers, which a provider may fill with anything).
    for noisy in ("httpx", "httpcore", "LiteLLM", "litellm", "openai"):
        monkeypatch.setattr(logging.getLogger(noisy), "level", logging.WARNING)
    client = build_llm_client(_llm_settings(echo_server.base_url, transport))
    request = CompletionRequest(model=f"{model_prefix}-{mode}", messages=[ChatMessage(role="user", content="Hi")])
    try:
        try:
            await asyncio.wait_for(collect(client, request), timeout=60)
        except LLMError as error:  # the layer's typed errors only
            caught: Exception = error
        else:
            pytest.fail("an erroring provider produced a completion")
    finally:
        await client.aclose()
    assert echo_server.calls, "the provider was never called"
    # What a log line with this error's traceback shows (chained exceptions included, unless suppressed).
    traceback_text = "".join(traceback.format_exception(caught))
    seen = [
        str(caught),
        repr(caught),
        str(getattr(caught, "metadata", "")),
        str(getattr(caught, "partial_text", "")),
        traceback_text,
    ]
    if hasattr(caught, "code") and isinstance(getattr(caught, "metadata", None), dict):
        seen.append(status_for(caught).SerializeToString().decode("utf-8", "replace"))
    for text in seen:
        assert not _leaks(text), f"the key leaked into the error: {text[:300]!r}"
    for record in caplog.records:
        line = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        assert not _leaks(line), f"the key leaked into a log record of {record.name}: {line[:300]!r}"


# --- the suite, as processes ----------------------------------------------------------------

TERMINAL = {"debate_completed", "debate_failed"}
ZERO_PRICE = {"input_per_million": "0", "output_per_million": "0"}


def _config(debater_model: str, judge_model: str):
    from debate.common.v1 import common_pb2

    return common_pb2.DebateConfig(
        topic="Should the canary sing?",
        participants=[
            common_pb2.Participant(name="Ada", model=debater_model, persona="a bird", stance="for"),
            common_pb2.Participant(name="Milo", model=debater_model, persona="a cat", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=[judge_model]),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=16,
    )


USER = (("authorization", f"Bearer {CANARY_USER}"),)


async def _run_debate(stub, config, seen: list[str]) -> str:
    from debate.orchestrator.v1 import orchestrator_pb2

    try:
        created = await stub.CreateDebate(
            orchestrator_pb2.CreateDebateRequest(config=config), timeout=30, metadata=USER
        )
    except grpc.aio.AioRpcError as error:
        seen.append(f"{error.code()} {error.details()} {error.trailing_metadata()}")
        return ""
    debate_id = created.debate.debate_id
    seen.append(str(created))
    try:
        started = await stub.StartDebate(
            orchestrator_pb2.StartDebateRequest(debate_id=debate_id), timeout=30, metadata=USER
        )
        seen.append(str(started))
    except grpc.aio.AioRpcError as error:
        seen.append(f"{error.code()} {error.details()} {error.trailing_metadata()}")
        return debate_id
    try:
        async for reply in stub.StreamDebateEvents(
            orchestrator_pb2.StreamDebateEventsRequest(debate_id=debate_id), timeout=90, metadata=USER
        ):
            seen.append(str(reply))
            seen.append(reply.SerializeToString().decode("utf-8", "replace"))
            if reply.event.WhichOneof("payload") in TERMINAL:
                break
    except grpc.aio.AioRpcError as error:
        seen.append(f"{error.code()} {error.details()} {error.trailing_metadata()}")
    return debate_id


@pytest.mark.e2e
async def test_suite_processes_never_reveal_the_key(echo_server, tmp_path):
    from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
    from debate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    from services.gateway import GatewayConfig
    from services.launcher import SuiteConfig
    from services.supervisor import Suite

    data_dir = tmp_path / "data"
    config = SuiteConfig(
        orchestrator_port=free_port(),
        judge_port=free_port(),
        accounting_port=free_port(),
        data_dir=str(data_dir),
        log_level="DEBUG",
        gateway=GatewayConfig(enabled=False),
        extra_env={
            "OPENAI_API_KEY": CANARY_OPENAI,
            "LOCAL_API_KEY": CANARY_LOCAL,
            "API_KEYS": f"{CANARY_USER}=alice,{CANARY_SERVICE}=suite",
            "SERVICE_API_KEY": CANARY_SERVICE,
            "LLM_OPENAI_API_BASE": echo_server.base_url,
            # Priced as declared: a debate naming a model with no known price is refused when it is
            # created (issue 14), and the canary models are in no price list. `openai` as an endpoint
            # keeps OPENAI_API_KEY on the same lean reader (the layer test above covers openai/* itself).
            "LLM_ENDPOINTS": json.dumps(
                {
                    name: {"api_base": echo_server.base_url, "api_key_env": variable, "price": ZERO_PRICE}
                    for name, variable in (("local", "LOCAL_API_KEY"), ("openai", "OPENAI_API_KEY"))
                }
            ),
            "LLM_ALLOWED_MODELS": "sim/*,openai/*,local/*",
            "JUDGE_ALLOWED_MODELS": "sim/*,openai/*,local/*",
            "LLM_RETRIES": "1",
            "LLM_BACKOFF_BASE": "0.01",
            "LLM_BACKOFF_MAX": "0.05",
            "MAX_TURN_ATTEMPTS": "2",
            "JUDGE_ATTEMPTS": "1",
            "SIM_TOKENS_PER_SECOND": "2000",
            "SIM_FIRST_TOKEN_LATENCY": "0",
        },
    )
    output: list[str] = []
    seen: list[str] = []
    debates = []
    async with Suite(config.process_specs(), output=output.append, startup_timeout=60) as _suite:
        async with grpc.aio.insecure_channel(config.orchestrator_address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            for debater, judge in [
                ("openai/gpt-canary-401", "sim/judge"),
                ("local/canary-500", "sim/judge"),
                ("openai/gpt-canary-midstream", "sim/judge"),
                ("sim/debater", "openai/gpt-canary-401"),
                ("sim/debater", "local/canary-502"),
            ]:
                debates.append(await _run_debate(stub, _config(debater, judge), seen))
            for debate_id in filter(None, debates):
                reply = await stub.GetDebate(
                    orchestrator_pb2.GetDebateRequest(debate_id=debate_id), timeout=30, metadata=USER
                )
                seen.append(str(reply))
            seen.append(
                str(
                    await stub.ListDebates(orchestrator_pb2.ListDebatesRequest(page_size=50), timeout=30, metadata=USER)
                )
            )
            # A wrong key and a near miss of the right one: refused, and neither is echoed anywhere.
            for wrong in (CANARY_USER[:-1] + "x", CANARY_SERVICE + "0"):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ListDebates(
                        orchestrator_pb2.ListDebatesRequest(),
                        timeout=30,
                        metadata=(("authorization", f"Bearer {wrong}"),),
                    )
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                seen.append(f"{refused.value.details()} {refused.value.trailing_metadata()}")
        async with grpc.aio.insecure_channel(config.address(config.accounting_port)) as channel:
            accounting = accounting_pb2_grpc.AccountingServiceStub(channel)
            for debate_id in filter(None, debates):
                cost = await accounting.GetDebateCost(
                    accounting_pb2.GetDebateCostRequest(debate_id=debate_id),
                    timeout=30,
                    metadata=(("authorization", f"Bearer {CANARY_SERVICE}"),),
                )
                seen.append(str(cost))
    assert echo_server.calls, "no model call reached the provider"
    assert all(debates), "a debate could not be created"
    assert any("turn_failed" in text or "debate_failed" in text for text in seen), "no failure was reported"
    print(
        f"provider calls: {sorted(set(echo_server.calls))}; answers and events checked: {len(seen)}; "
        f"log lines checked: {len(output)}"
    )
    for text in seen:
        assert not _leaks(text), f"the key leaked into an answer or event: {text[:400]!r}"
    for line in output:
        assert not _leaks(line), f"the key leaked into a log line: {line[:400]!r}"
    files = [p for p in Path(data_dir).rglob("*") if p.is_file()]
    assert files, "the services stored nothing"
    for path in files:
        assert not _leaks(path.read_bytes()), f"the key is stored in {path}"
