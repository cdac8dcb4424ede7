"""JWTs checked by the gateway (Envoy's jwt_authn), tenants taken from a claim.

An RSA key and its JWKS file are made at test time (nothing is fetched); the suite comes up
through the launcher's `Suite` with GATEWAY_JWT_* settings, so Envoy checks every gRPC call's
bearer JWT and sends its `tenant` claim to the orchestrator as `x-debate-tenant`, which the
orchestrator trusts (TRUSTED_TENANT_HEADER, set by the launcher on the orchestrator only).

Checked through the grpc-web port: no token, a forged signature, an expired token, a wrong
issuer or audience are refused; tenant A's debate is invisible to tenant B (Get, Stream,
Cancel answer NOT_FOUND, List shows nothing); a caller cannot pick its tenant by sending the
header itself; and the orchestrator dialled directly without the header refuses the call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from debate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from google.protobuf.message import Message

from services.gateway import GatewayConfig
from services.launcher import SuiteConfig
from services.supervisor import ProcessSpec, Suite
from tests.e2e.test_gateway import (
    SERVICE,
    GrpcWeb,
    GrpcWebError,
    _frame,
    _trailers,
    debate_config,
)
from tests.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ISSUER = "https://issuer.debate.test"
AUDIENCE = "debate-engine"
KID = "test-key-1"
UNAUTHENTICATED, NOT_FOUND, PERMISSION_DENIED = 16, 5, 7


# --- tokens ---------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def jwks_for(key: rsa.RSAPrivateKey, kid: str = KID) -> dict:
    numbers = key.public_key().public_numbers()
    return {
        "keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": _uint(numbers.n), "e": _uint(numbers.e)}]
    }


def sign(key: rsa.RSAPrivateKey, claims: dict, kid: str = KID) -> str:
    """An RS256 JWT (the cryptography package is all it needs)."""
    head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{_b64(signature)}"


def claims(tenant: str | None, *, lifetime: float = 600, issuer: str = ISSUER, audience: str = AUDIENCE) -> dict:
    now = int(time.time())
    out = {"iss": issuer, "aud": audience, "sub": f"user-of-{tenant}", "iat": now, "exp": int(now + lifetime)}
    if tenant is not None:
        out["tenant"] = tenant
    return out


# --- the suite in a thread of its own (the tests stay synchronous) ---------------------------


@contextlib.contextmanager
def suite_in_thread(specs: list[ProcessSpec], output: list[str], timeout: float = 60.0) -> Iterator[Suite]:
    """The launcher's Suite on an event loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="suite-loop", daemon=True)
    thread.start()
    suite = Suite(specs, output=output.append, startup_timeout=timeout, stop_timeout=10)
    try:
        asyncio.run_coroutine_threadsafe(suite.start(), loop).result(timeout + 10)
        yield suite
    finally:
        try:
            asyncio.run_coroutine_threadsafe(suite.stop(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


# --- grpc-web with a bearer token -------------------------------------------------------------


@dataclass
class TokenGrpcWeb(GrpcWeb):
    token: str | None = None
    extra: dict[str, str] | None = None

    def _headers(self) -> dict[str, str]:
        headers = super()._headers()
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        headers.update(self.extra or {})
        return headers


def refused_status(web: TokenGrpcWeb, method: str, request: Message, reply_type: type[Message]) -> int:
    """The gRPC status a call ends with through the gateway (HTTP 401 and 403 count as
    UNAUTHENTICATED and PERMISSION_DENIED, as gRPC maps them)."""
    response = web.client.post(web.base_url + SERVICE + method, content=_frame(request), headers=web._headers())
    if response.status_code in (401, 403):
        return {401: UNAUTHENTICATED, 403: PERMISSION_DENIED}[response.status_code]
    assert response.status_code == 200, (response.status_code, response.text[:200])
    if "grpc-status" in response.headers:
        return int(response.headers["grpc-status"])
    body = response.content
    while len(body) >= 5:  # messages, then the trailers frame
        flag, length = body[0], struct.unpack(">I", body[1:5])[0]
        payload, body = body[5 : 5 + length], body[5 + length :]
        if flag & 0x80:
            return int(_trailers(payload).get("grpc-status", "0"))
    raise AssertionError("no grpc-status in the answer")


@pytest.fixture(scope="module")
def keys():
    return {
        "good": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rogue": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory, keys):
    folder: Path = tmp_path_factory.mktemp("gateway-jwt")
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps(jwks_for(keys["good"])))
    config = SuiteConfig(
        orchestrator_port=free_port(),
        judge_port=free_port(),
        accounting_port=free_port(),
        data_dir=str(folder / "data"),
        log_level="WARNING",
        extra_env={"SIM_TOKENS_PER_SECOND": "400", "SIM_FIRST_TOKEN_LATENCY": "0.01"},
        gateway=GatewayConfig(
            port=free_port(),
            web_dir=str(folder / "no-page"),
            jwt_issuer=ISSUER,
            jwt_audiences=AUDIENCE,
            jwks_file=str(jwks),
        ),
    )
    specs = config.process_specs()
    assert next(s for s in specs if s.name == "orchestrator").env["TRUSTED_TENANT_HEADER"] == "x-debate-tenant"
    # Never on the judge or accounting (the launcher turns it off there, whatever the environment says).
    assert all(s.env.get("TRUSTED_TENANT_HEADER", "") == "" for s in specs if s.name in ("judge", "accounting"))
    output: list[str] = []
    with suite_in_thread(specs, output):
        yield config, f"http://127.0.0.1:{config.gateway.port}"


def _web(url: str, token: str | None, **extra: str) -> TokenGrpcWeb:
    return TokenGrpcWeb(url, origin="http://page.example", token=token, extra=extra or None)


def _create(web: TokenGrpcWeb) -> str:
    created = web.unary(
        "CreateDebate",
        orchestrator_pb2.CreateDebateRequest(
            config=debate_config(rounds=1, max_tokens=20), request_id=str(uuid.uuid4())
        ),
        orchestrator_pb2.CreateDebateResponse,
    )
    return created.debate.debate_id


# --- the tests ---------------------------------------------------------------------------------


def test_calls_without_a_good_token_are_refused_at_the_gateway(suite, keys):
    _, url = suite
    request = orchestrator_pb2.ListDebatesRequest()
    reply = orchestrator_pb2.ListDebatesResponse
    bad_tokens = {
        "none": None,
        "not a JWT": "not-a-jwt",
        "forged signature": sign(keys["rogue"], claims("alice")),  # same kid, another key
        "expired": sign(keys["good"], claims("alice", lifetime=-3600)),
        "wrong issuer": sign(keys["good"], claims("alice", issuer="https://elsewhere.test")),
        "wrong audience": sign(keys["good"], claims("alice", audience="another-api")),
    }
    for what, token in bad_tokens.items():
        status = refused_status(_web(url, token), "ListDebates", request, reply)
        # jwt_authn answers 401 to a missing or bad token, 403 to a good one for another audience.
        expected = PERMISSION_DENIED if what == "wrong audience" else UNAUTHENTICATED
        assert status == expected, (what, status)
    # The same call with a good token goes through.
    assert refused_status(_web(url, sign(keys["good"], claims("alice"))), "ListDebates", request, reply) == 0


def test_a_second_tenant_cannot_get_stream_list_or_cancel_the_first_tenants_debate(suite, keys):
    _, url = suite
    alice = _web(url, sign(keys["good"], claims("alice")))
    bob = _web(url, sign(keys["good"], claims("bob")))
    debate_id = _create(alice)
    assert (
        alice.unary(
            "GetDebate", orchestrator_pb2.GetDebateRequest(debate_id=debate_id), orchestrator_pb2.GetDebateResponse
        ).debate.debate_id
        == debate_id
    )

    for method, request, reply in (
        ("GetDebate", orchestrator_pb2.GetDebateRequest(debate_id=debate_id), orchestrator_pb2.GetDebateResponse),
        (
            "CancelDebate",
            orchestrator_pb2.CancelDebateRequest(debate_id=debate_id),
            orchestrator_pb2.CancelDebateResponse,
        ),
    ):
        with pytest.raises(GrpcWebError) as caught:
            bob.unary(method, request, reply)
        assert caught.value.status == NOT_FOUND, method
    with pytest.raises(GrpcWebError) as caught:
        list(
            bob.stream(
                "StreamDebateEvents",
                orchestrator_pb2.StreamDebateEventsRequest(debate_id=debate_id),
                orchestrator_pb2.StreamDebateEventsResponse,
            )
        )
    assert caught.value.status == NOT_FOUND
    listed = bob.unary("ListDebates", orchestrator_pb2.ListDebatesRequest(), orchestrator_pb2.ListDebatesResponse)
    assert debate_id not in str(listed)

    # A caller cannot name its tenant itself: the gateway drops the header before jwt_authn
    # sets it from the token, so bob's token with "x-debate-tenant: alice" is still bob ...
    spoofing = _web(url, bob.token, **{"x-debate-tenant": "alice"})
    with pytest.raises(GrpcWebError) as caught:
        spoofing.unary(
            "GetDebate", orchestrator_pb2.GetDebateRequest(debate_id=debate_id), orchestrator_pb2.GetDebateResponse
        )
    assert caught.value.status == NOT_FOUND
    # ... and a valid token without a tenant claim is refused, header or not.
    unnamed = _web(url, sign(keys["good"], claims(None)), **{"x-debate-tenant": "alice"})
    assert (
        refused_status(
            unnamed,
            "GetDebate",
            orchestrator_pb2.GetDebateRequest(debate_id=debate_id),
            orchestrator_pb2.GetDebateResponse,
        )
        == UNAUTHENTICATED
    )

    # Alice's debate was untouched by all of that: she runs it to the end.
    alice.unary(
        "StartDebate", orchestrator_pb2.StartDebateRequest(debate_id=debate_id), orchestrator_pb2.StartDebateResponse
    )
    kinds = []
    for event in alice.stream(
        "StreamDebateEvents",
        orchestrator_pb2.StreamDebateEventsRequest(debate_id=debate_id),
        orchestrator_pb2.StreamDebateEventsResponse,
    ):
        kinds.append(event.event.WhichOneof("payload"))
        if kinds[-1] in ("debate_completed", "debate_failed"):
            break
    assert kinds[-1] == "debate_completed", kinds[-5:]
    # And the owner's cancel does what bob's could not (on a second debate, not yet ended).
    second = _create(alice)
    with pytest.raises(GrpcWebError) as caught:
        bob.unary(
            "CancelDebate",
            orchestrator_pb2.CancelDebateRequest(debate_id=second),
            orchestrator_pb2.CancelDebateResponse,
        )
    assert caught.value.status == NOT_FOUND
    summary = alice.unary(
        "CancelDebate", orchestrator_pb2.CancelDebateRequest(debate_id=second), orchestrator_pb2.CancelDebateResponse
    )
    assert summary.debate.debate_id == second


def test_cors_preflight_allows_the_authorization_header(suite):
    _, url = suite
    reply = httpx.options(
        url + SERVICE + "CreateDebate",
        headers={
            "origin": "http://page.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web",
        },
    )
    assert reply.status_code in (200, 204)  # a preflight carries no token and is not refused
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert "authorization" in allowed


def test_the_orchestrator_dialled_directly_refuses_a_call_without_the_gateways_header(suite):
    config, _ = suite
    with grpc.insecure_channel(config.orchestrator_address) as channel, pytest.raises(grpc.RpcError) as caught:
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel).ListDebates(
            orchestrator_pb2.ListDebatesRequest(), timeout=10
        )
    # Never the tenant "default": the trust boundary is the gateway (or mTLS), see docs/reliability.md.
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
