"""Topics, personas, stances and names reach the store and the models cleaned.

Control, zero-width and bidirectional characters are invisible to a person reading a debate
but visible to a model. Debates are created with such characters hidden in every user-written
field; the stored config (GetDebate) and every request the debaters' model received (the
local OpenAI-compatible fake records them) must be free of them, and the visible words must
arrive intact.
"""

from __future__ import annotations

import time
import unicodedata

import grpc
import pytest
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import FakeOpenAIServer

INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u202e",
    "\u202d",
    "\u2066",
    "\u2067",
    "\u2069",
    "\u061c",
    "\u200e",
    "\u200f",
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\u00ad",
    "\U000e0041",
]
REMOVED = {"Cc", "Cf", "Cs", "Co", "Cn"}


def _invisible_in(text: str) -> list[str]:
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in REMOVED and c not in "\n\t"]


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def stub(tmp_path_factory, fake):
    env = pytest.MonkeyPatch()
    env.setenv("OPENAI_API_KEY", "sk-hygiene-tests-not-a-real-key")
    running = InProcessSuite(
        tmp_path_factory.mktemp("hygiene"),
        overrides={
            "orchestrator": {
                "llm_openai_api_base": fake.base_url,
                "llm_allowed_models": ["sim/*", "openai/gpt-4o-mini"],
                "sim_tokens_per_second": 3000.0,
                "sim_first_token_latency": 0.0,
            }
        },
    )
    try:
        running.start()
        with grpc.insecure_channel(running.addresses["orchestrator"]) as channel:
            yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    finally:
        running.stop()
        env.undo()


def _hide(words: list[str], invisible: list[str]) -> str:
    """The words with invisible characters inside and between them."""
    out = []
    for i, word in enumerate(words):
        mark = invisible[i % len(invisible)]
        out.append(word[:1] + mark + word[1:] + invisible[(i + 1) % len(invisible)])
    return " ".join(out)


WORDS = st.lists(
    st.sampled_from(["cities", "cars", "streets", "people", "trade", "buses", "quiet", "air"]), min_size=2, max_size=6
)


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(topic=WORDS, persona=WORDS, stance=WORDS, invisible=st.lists(st.sampled_from(INVISIBLE), min_size=1, max_size=4))
def test_hidden_characters_never_reach_the_store_or_a_model(stub, fake, topic, persona, stance, invisible):
    fake.reset()
    config = common_pb2.DebateConfig(
        topic=_hide(topic, invisible),
        participants=[
            common_pb2.Participant(
                name="A\u200bda",
                model="openai/gpt-4o-mini",
                persona=_hide(persona, invisible),
                stance=_hide(stance, invisible),
            ),
            common_pb2.Participant(
                name="Mi\u202elo", model="openai/gpt-4o-mini", persona="a shopkeeper", stance="against"
            ),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SEQUENTIAL),
        max_tokens_per_turn=16,
    )
    try:
        created = stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=30)
    except grpc.RpcError as error:
        # Refusing such input outright is also fine, as long as it is a clear INVALID_ARGUMENT.
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        return
    stored = created.debate.config
    for text in (stored.topic, *(f"{p.name} {p.persona} {p.stance}" for p in stored.participants)):
        assert not _invisible_in(text), f"stored with hidden characters: {text!r}"
    for word in topic:
        assert word in stored.topic
    debate_id = created.debate.debate_id
    stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
    deadline = time.monotonic() + 60
    while len(fake.requests) < 2:  # both debaters have asked their model (sequential: Ada, then Milo)
        state = stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10).debate.state
        assert state in (pb.DEBATE_STATE_QUEUED, pb.DEBATE_STATE_RUNNING), pb.DebateState.Name(state)
        assert time.monotonic() < deadline, "the debaters' model was not called"
        time.sleep(0.05)
    try:
        stub.CancelDebate(pb.CancelDebateRequest(debate_id=debate_id, reason="seen enough"), timeout=10)
    except grpc.RpcError as error:  # it may have ended already
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
    for request in fake.requests:
        for message in request.body.get("messages", []):
            content = str(message.get("content") or "")
            assert not _invisible_in(content), f"a model received hidden characters: {content[:300]!r}"
    system = " ".join(
        str(m.get("content")) for r in fake.requests for m in r.body["messages"] if m.get("role") == "system"
    )
    for word in persona:
        assert word in system, "the persona's words did not reach the model"


def test_a_models_hidden_characters_never_reach_the_next_model(stub, fake):
    """Model output is untrusted too: Ada's reply hides characters; Milo's model must not receive them."""
    from tests.support.fake_openai import Behavior

    fake.reset()
    fake.script(Behavior(text="Streets\u200b for\u202e people\u2066 and\x1b[2J trade \ufeffnow"))
    config = common_pb2.DebateConfig(
        topic="Should streets be for people?",
        participants=[
            common_pb2.Participant(name="Ada", model="openai/gpt-4o-mini", persona="an urbanist", stance="for"),
            common_pb2.Participant(name="Milo", model="openai/gpt-4o-mini", persona="a shopkeeper", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SEQUENTIAL),
        max_tokens_per_turn=16,
    )
    debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=30).debate.debate_id
    stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
    try:
        deadline = time.monotonic() + 60
        while len(fake.requests) < 2:
            assert time.monotonic() < deadline, "Milo's model was not called"
            time.sleep(0.05)
        milo = fake.requests[1].body["messages"]
        seen = " ".join(str(m.get("content") or "") for m in milo)
        assert "people" in seen and "trade" in seen, "Ada's turn is not in Milo's context"
        assert not _invisible_in(seen), f"the next model received hidden characters: {_invisible_in(seen)}"
    finally:
        try:
            stub.CancelDebate(pb.CancelDebateRequest(debate_id=debate_id, reason="seen enough"), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
