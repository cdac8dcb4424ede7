"""Issue 14's final check: the ledger tells the truth about what the provider billed.

The three real services run in this process (tests/reliability/inprocess.py); every model is
served by one fake OpenAI-compatible provider (tests/support/fake_openai.py) behind the endpoint
`fake`, with a declared price whose every rate differs, so a token counted under the wrong
heading, or not at all, changes the cost. The fake counts with our tokenizer, so what the
engine estimates for a call cut short is exactly what the fake bills for it.

Each model's calls are scripted on its own queue (the model as the server receives it: "a" for
`fake/a`), so a debater's quirks come in its own order however the simultaneous calls interleave.
A judge's ballots are asked at once, so which ballot meets which of the judge's quirks is left to
chance; none of them changes how many calls the judge makes.

1. A 3-round, 3-debater debate (simultaneous and sequential) with a real-provider judge meets every
   quirk of kinds 1-4: reasoning counted outside completion (the 17/57 example), cache reads and
   writes in Anthropic's, OpenAI's and DeepSeek's fields, reasoning streamed for longer than the
   first-token timeout, content as typed blocks, a stall during reasoning, a 429 with Retry-After
   and a 500 before a 200, an answer later than the first-token timeout before and after the 200,
   a connection dropped during reasoning, missing usage, a judge answer with trailing commas that
   is repaired. It completes; GetDebateCost equals the provider's bill, to the last digit and
   token; every attempt the provider billed and did not finish has its TurnFailed; no reasoning
   is ever speech.
2. A non-retryable quirk (a malformed chunk, a connection dropped after the answer began) ends a
   debate FAILED with the provider's reason and a TurnFailed, the ledger still equal to the bill,
   while another tenant's debate beside it completes.
3. A judge that always answers with trailing commas ends a quirky debate JUDGE_OUTPUT_INVALID,
   the ledger equal to the bill.
Every RPC the tests make (CreateDebate, StartDebate, StreamDebateEvents, GetDebate, GetDebateCost)
must answer OK, and no TurnFailed, DebateFailed or end reason says INTERNAL.

Judge calls under way when a debate ends for another reason (a round's assessment runs beside
the next round) are let finish and recorded before the debate's final cost.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc as accg
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.common.money import format_amount
from services.common.pricing import PriceBook, rates_per_million
from services.common.usage import Usage
from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import Behavior, Billed, FakeOpenAIServer

S = pb.DebateState
TIMEOUT = 30
ENDPOINT = "fake"
# USD per million tokens, every rate its own, so a token under the wrong heading shows in the cost.
PRICE = {
    "input_per_million": "3",
    "output_per_million": "15",
    "cached_input_per_million": "0.3",
    "cache_creation_input_per_million": "3.75",
    "reasoning_per_million": "12",
}
PRICES = PriceBook(declared={ENDPOINT: rates_per_million(PRICE)})
KEYS = {"alice": "key-alice-123", "bob": "key-bob-4567"}
FIRST_TOKEN_TIMEOUT = STALL_TIMEOUT = 1.0
LATE = 1.5  # seconds: later than both timeouts
# Reasoning text: billed, never speech. Its marker word must never reach a turn or a prompt.
MARKER = "xylophone"
REASONING = f"Privately weighing the {MARKER} gambit before any answer is given"
CRITERIA = ("argument_strength", "evidence", "rebuttal", "clarity")
# Outcomes of a request the provider billed but did not finish (see fake_openai.Billed).
CUT = ("stalled", "closed", "bad_chunk", "disconnected")


def judge_answer(debaters: int, *, verdict: bool = False, trailing_commas: bool = False) -> str:
    """A judge's answer for debaters shown as A, B, ...: valid, or with a trailing comma closing
    every object (refused: not JSON)."""
    answer: dict = {
        "debaters": {
            chr(ord("A") + i): {
                "scores": {name: 5 + (i + j) % 4 for j, name in enumerate(CRITERIA)},
                "rationale": f"Debater {chr(ord('A') + i)} argued with care.",
            }
            for i in range(debaters)
        }
    }
    if verdict:
        answer["summary"] = "A close debate, decided on rebuttal."
    text = json.dumps(answer)
    return text.replace("}", ",}") if trailing_commas else text


ROUND, VERDICT = judge_answer(3), judge_answer(3, verdict=True)
TRAILING_COMMAS = judge_answer(3, trailing_commas=True)


def thinking(**fields) -> Behavior:
    return Behavior(reasoning_text=REASONING, **fields)


# --------------------------------------------------------------------------- the suite


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer(tokenizer=True, count_model_prefix=f"{ENDPOINT}/") as server:
        yield server


@pytest.fixture(scope="module")
def suite(tmp_path_factory, fake):
    endpoints = {ENDPOINT: {"api_base": fake.base_url, "price": PRICE}}
    llm = {
        "llm_endpoints": endpoints,
        "llm_allowed_models": ["sim/*", f"{ENDPOINT}/*"],
        "llm_first_token_timeout": FIRST_TOKEN_TIMEOUT,
        "llm_stall_timeout": STALL_TIMEOUT,
        "llm_retries": 2,
        "llm_backoff_base": 0.01,
        "llm_backoff_max": 1.0,
        "sim_first_token_latency": 0.0,
        "sim_tokens_per_second": 0.0,
    }
    running = InProcessSuite(
        tmp_path_factory.mktemp("ledger-truth"),
        overrides={
            "accounting": {"llm_endpoints": endpoints},
            "judge": {**llm, "judge_max_repairs": 2},
            "orchestrator": {
                **llm,
                "max_turn_attempts": 3,
                "api_keys": ",".join(f"{key}={name}" for name, key in KEYS.items()),
            },
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def provider(fake):
    fake.reset()
    yield fake
    fake.reset()


class Tenant:
    """One tenant's synchronous calls to the orchestrator, and the suite's to accounting."""

    def __init__(self, suite: InProcessSuite, name: str):
        self.suite = suite
        self.metadata = (("authorization", f"Bearer {KEYS[name]}"),)

    def __enter__(self) -> Tenant:
        self.channel = grpc.insecure_channel(self.suite.addresses["orchestrator"])
        self.accounting_channel = grpc.insecure_channel(self.suite.addresses["accounting"])
        self.stub = pbg.OrchestratorServiceStub(self.channel)
        self.accounting = accg.AccountingServiceStub(self.accounting_channel)
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()
        self.accounting_channel.close()

    def start(self, cfg: c.DebateConfig) -> str:
        debate_id = self.stub.CreateDebate(
            pb.CreateDebateRequest(config=cfg), metadata=self.metadata, timeout=TIMEOUT
        ).debate.debate_id
        self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=self.metadata, timeout=TIMEOUT)
        return debate_id

    def events(self, debate_id: str) -> list[pb.DebateEvent]:
        """Every event of the debate, from its first to its end (the stream closes at the end)."""
        stream = self.stub.StreamDebateEvents(
            pb.StreamDebateEventsRequest(debate_id=debate_id), metadata=self.metadata, timeout=120
        )
        return [r.event for r in stream if r.event.WhichOneof("payload") != "heartbeat"]

    def debate(self, debate_id: str) -> pb.Debate:
        return self.stub.GetDebate(
            pb.GetDebateRequest(debate_id=debate_id), metadata=self.metadata, timeout=TIMEOUT
        ).debate

    def cost(self, debate_id: str) -> c.DebateCost:
        """Accounting's GetDebateCost (called as the suite's services call it)."""
        return self.accounting.GetDebateCost(acc.GetDebateCostRequest(debate_id=debate_id), timeout=TIMEOUT).cost


def config(models: Iterable[str], judge: str, *, rounds: int = 3, order=c.TURN_ORDER_SIMULTANEOUS) -> c.DebateConfig:
    names = ("Ada", "Milo", "Zoe", "Ines")
    return c.DebateConfig(
        topic="Should cities ban cars from their centres?",
        participants=[
            c.Participant(name=names[i], model=model, persona="a citizen", stance=("for", "against")[i % 2])
            for i, model in enumerate(models)
        ],
        judge=c.JudgeConfig(models=[judge]),
        format=c.DebateFormat(round_limit=rounds, turn_order=order),
        max_tokens_per_turn=64,
    )


def of_kind(events: list[pb.DebateEvent], kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("payload") == kind]


# --------------------------------------------------------------------------- the bill and the ledger


def bill_of(fake: FakeOpenAIServer, models: Iterable[str]) -> list[Billed]:
    """The provider's bill for the models (as the server received them), in the order the calls came."""
    wanted = set(models)
    return sorted((b for b in fake.billed if b.model in wanted), key=lambda b: b.request)


def priced(billed: list[Billed]) -> tuple[Decimal, Usage]:
    """The bill's cost at the declared price, and its tokens."""
    total, usage = Decimal(0), Usage()
    for b in billed:
        total += PRICES.cost(f"{ENDPOINT}/{b.model}", b.usage()).total
        usage = usage + b.usage()
    return total, usage


def ledger(suite: InProcessSuite, debate_id: str) -> list[dict]:
    """Accounting's ledger rows of the debate (read from its SQLite file)."""
    path = next(p for p in suite.root.rglob("ledger.sqlite3"))
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute("SELECT * FROM usage WHERE debate_id=? ORDER BY record_time_ns", (debate_id,))
        return [dict(row) for row in rows]
    finally:
        db.close()


def explain(suite: InProcessSuite, debate_id: str, billed: list[Billed]) -> str:
    """Per model, the provider's bills beside the ledger's rows: where a mismatch is."""
    lines = []
    rows = ledger(suite, debate_id)
    for model in sorted({b.model for b in billed} | {r["model"].split("/", 1)[1] for r in rows}):
        bills = [
            (b.outcome, b.prompt_tokens, b.completion_tokens, b.reasoning_tokens, b.cached_prompt_tokens)
            for b in billed
            if b.model == model
        ]
        got = [
            (r["request_id"].split("/", 2)[2], r["prompt_tokens"], r["completion_tokens"], r["reasoning_tokens"])
            for r in rows
            if r["model"] == f"{ENDPOINT}/{model}"
        ]
        lines.append(f"{model}: billed {bills}\n  ledger {got}")
    return "\n".join(lines)


def assert_ledger_equals_bill(suite: InProcessSuite, tenant: Tenant, debate_id: str, billed: list[Billed]) -> None:
    """GetDebateCost's total is the bill priced at the declared rates, exactly, and so are its tokens."""
    cost = tenant.cost(debate_id)
    total, usage = priced(billed)
    why = explain(suite, debate_id, billed)
    assert cost.total.currency_code == "USD" and cost.total.amount == format_amount(total), why
    got = cost.usage
    assert (
        got.prompt_tokens,
        got.completion_tokens,
        got.cached_prompt_tokens,
        got.cache_creation_prompt_tokens,
        got.reasoning_tokens,
    ) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_prompt_tokens,
        usage.cache_creation_prompt_tokens,
        usage.reasoning_tokens,
    ), why
    assert got.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # one ledger row per call the provider billed anything for (errors and unanswered calls bill nothing)
    rows = ledger(suite, debate_id)
    assert len(rows) == len([b for b in billed if b.outcome not in ("error", "unanswered")]), why


def assert_failed_turns_match_the_bill(
    events: list[pb.DebateEvent], billed: list[Billed], participants: dict[str, str]
) -> None:
    """Each debater's TurnFailed events are, in order, its calls the provider billed and did not
    finish (`participants`: name -> model as the server receives it); its TurnCompleted are its
    finished calls."""
    failed, completed = of_kind(events, "turn_failed"), of_kind(events, "turn_completed")
    for name, model in participants.items():
        outcomes = [b.outcome for b in billed if b.model == model and b.outcome not in ("error", "unanswered")]
        mine = sorted((f.round_number, f.attempt) for f in failed if f.participant == name)
        done = sorted((t.turn.round_number, t.turn.attempt) for t in completed if t.turn.participant == name)
        assert len(mine) == len([o for o in outcomes if o in CUT]), (name, outcomes, mine)
        assert len(done) == outcomes.count("complete"), (name, outcomes, done)
        # attempts in the order the provider saw the calls: a failed attempt, then the next one
        attempts = sorted([(key, "failed") for key in mine] + [(key, "complete") for key in done])
        assert [kind for _, kind in attempts] == ["failed" if o in CUT else "complete" for o in outcomes], name


def assert_no_reasoning_is_speech(fake: FakeOpenAIServer, debate: pb.Debate, events: list[pb.DebateEvent]) -> None:
    """Reasoning is billed, never speech: not in a stored turn, a streamed delta, or any prompt."""
    texts = [t.text for r in debate.rounds for t in r.turns]
    texts += [d.text for d in of_kind(events, "token_delta")]
    assert texts and not [t for t in texts if MARKER in t]
    prompts = [json.dumps(r.body.get("messages")) for r in fake.requests]
    assert prompts and not [p for p in prompts if MARKER in p]


def assert_nothing_internal(debate: pb.Debate, events: list[pb.DebateEvent]) -> None:
    reasons = [f.reason for f in of_kind(events, "turn_failed")] + [f.reason for f in of_kind(events, "debate_failed")]
    assert "INTERNAL" not in reasons and "INTERNAL" not in debate.end_reason, (reasons, debate.end_reason)
    assert "internal error" not in debate.end_reason


def assert_gap_free(events: list[pb.DebateEvent]) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


# --------------------------------------------------------------------------- 1. every quirk, a complete debate


def script_every_quirk(fake: FakeOpenAIServer, a: str, b: str, c_: str, judge: str) -> None:
    """Each model's calls in the order it makes them (a debater: its attempts, round by round)."""
    fake.script_model(
        a,
        thinking(reasoning_chunks=4, stall_after=0),  # r1: a stall during reasoning: billed, a new attempt
        Behavior(chunks=17, reasoning_tokens=57, usage_convention="reasoning_outside"),  # the 17/57 example
        Behavior(status=429, retry_after=0.2),  # r2: retried in the router, not billed
        Behavior(status=500),
        thinking(content_blocks=True, reasoning_chunks=3),  # content and thinking as typed blocks
        thinking(usage=False, reasoning_chunks=3),  # r3: no usage: our tokenizer's count, as the fake's
    )
    fake.script_model(
        b,
        thinking(reasoning_chunks=10, reasoning_delay=LATE / 10),  # r1: reasoning longer than the first-token wait
        Behavior(first_token_delay=LATE),  # r2: 200, then nothing: billed, a new attempt
        Behavior(cached_tokens=20, cache_creation_tokens=10, usage_convention="anthropic_cache"),
        thinking(reasoning_chunks=4, cached_tokens=16, usage_convention="deepseek"),  # r3
    )
    fake.script_model(
        c_,
        thinking(reasoning_chunks=3, close_after=0),  # r1: dropped during reasoning: billed, a new attempt
        thinking(reasoning_chunks=3, cached_tokens=16, cache_creation_tokens=8),  # OpenAI's cache fields
        Behavior(answer_delay=LATE),  # r2: no answer within the wait: never billed, retried in the router
        # reasoning larger than completion, beside it, and no total: read outside it, flagged estimated
        Behavior(chunks=8, reasoning_tokens=40, usage_convention="reasoning_outside", total_tokens=False),
        thinking(reasoning_chunks=3, reasoning_field="reasoning"),  # r3: OpenRouter's field
    )
    # The judge: 3 rounds x 3 orderings + 1 repair, then the verdict's 3 orderings. Its ballots run
    # at once, so which ballot meets which behaviour is chance; how many calls it makes is not.
    rounds = [
        Behavior(text=TRAILING_COMMAS),  # refused, then repaired
        Behavior(status=429, retry_after=0.2),
        Behavior(status=500),
        Behavior(text=ROUND, reasoning_tokens=57, usage_convention="reasoning_outside"),
        Behavior(text=ROUND, cached_tokens=40, cache_creation_tokens=20, usage_convention="anthropic_cache"),
        thinking(text=ROUND, reasoning_chunks=5, cached_tokens=30, usage_convention="deepseek"),
        thinking(text=ROUND, content_blocks=True, reasoning_chunks=4),
        thinking(text=ROUND, reasoning_chunks=10, reasoning_delay=LATE / 10),
        Behavior(text=ROUND, usage=False),
        thinking(text=ROUND, reasoning_chunks=3, reasoning_field="reasoning"),
        Behavior(text=ROUND, cached_tokens=24, cache_creation_tokens=12),
        Behavior(text=ROUND),
    ]
    verdict = [
        Behavior(text=VERDICT, usage=False),
        Behavior(text=VERDICT, cached_tokens=50, usage_convention="anthropic_cache"),
        thinking(text=VERDICT, reasoning_chunks=3, usage_convention="deepseek"),
    ]
    fake.script_model(judge, *rounds, *verdict)


@pytest.mark.parametrize(
    "order", [c.TURN_ORDER_SIMULTANEOUS, c.TURN_ORDER_SEQUENTIAL], ids=["simultaneous", "sequential"]
)
def test_a_debate_through_every_quirk_completes_and_its_ledger_is_the_bill(suite, provider, order):
    tag = "sim" if order == c.TURN_ORDER_SIMULTANEOUS else "seq"
    a, b, c_, judge = (f"{tag}-{name}" for name in ("a", "b", "c", "judge"))
    script_every_quirk(provider, a, b, c_, judge)
    with Tenant(suite, "alice") as alice:
        debate_id = alice.start(config([f"{ENDPOINT}/{m}" for m in (a, b, c_)], f"{ENDPOINT}/{judge}", order=order))
        events = alice.events(debate_id)
        debate = alice.debate(debate_id)
        assert debate.state == S.DEBATE_STATE_COMPLETED, (debate.end_reason, explain(suite, debate_id, provider.billed))
        assert all(provider.scripted(m) == 0 for m in (a, b, c_, judge))  # every scripted quirk was met
        billed = bill_of(provider, (a, b, c_, judge))
        assert_ledger_equals_bill(suite, alice, debate_id, billed)
        assert debate.cost.total.amount == alice.cost(debate_id).total.amount  # what the debate shows
    outcomes = Counter(x.outcome for x in billed)
    # what the provider saw: 2 + 1 + 1 unbilled refusals, 1 unanswered call, 3 calls cut, 9 turns
    # and 13 judge answers (one refused) complete
    assert outcomes == {"complete": 9 + 13, "error": 4, "unanswered": 1, "stalled": 1, "disconnected": 1, "closed": 1}
    assert_gap_free(events)
    assert_nothing_internal(debate, events)
    assert_failed_turns_match_the_bill(events, billed, {"Ada": a, "Milo": b, "Zoe": c_})
    failed = of_kind(events, "turn_failed")
    assert sorted((f.participant, f.round_number, f.attempt, f.reason, f.will_retry) for f in failed) == [
        ("Ada", 1, 1, "PROVIDER_STALLED", True),
        ("Milo", 2, 1, "PROVIDER_TIMEOUT", True),
        ("Zoe", 1, 1, "PROVIDER_ERROR", True),
    ]
    assert_no_reasoning_is_speech(provider, debate, events)
    # the judge's refused answer and its repair are each a row of their own
    rows = ledger(suite, debate_id)
    judge_rows = [r for r in rows if r["participant"] == "judge"]
    assert len(judge_rows) == 13 and Counter(r["attempt"] for r in judge_rows) == {1: 12, 2: 1}
    estimated = Counter(r["participant"] for r in rows if r["estimated"])
    # cut calls, calls with no usage, and usage nothing could reconcile
    assert estimated == {"Ada": 2, "Milo": 1, "Zoe": 2, "judge": 2}


# --------------------------------------------------------------------------- 2. a non-retryable quirk


NON_RETRYABLE = {
    # content a number, after three words: the provider's malformed chunk
    "bad_chunk": (
        Behavior(chunks=12, bad_chunk="content_number", bad_chunk_after=3),
        "PROVIDER_BAD_CHUNK",
        "bad_chunk",
    ),
    # the connection dropped after the answer began: speech went out, so no new attempt
    "closed_after_text": (thinking(chunks=12, reasoning_chunks=3, close_after=3), "PROVIDER_ERROR", "closed"),
}


@pytest.mark.parametrize("quirk", NON_RETRYABLE, ids=list(NON_RETRYABLE))
def test_a_non_retryable_quirk_fails_its_debate_alone_and_its_ledger_is_the_bill(suite, provider, quirk):
    behavior, reason, outcome = NON_RETRYABLE[quirk]
    a, b, c_, judge = (f"nr-{quirk}-{name}" for name in ("a", "b", "c", "judge"))
    healthy = (f"bob-{quirk}-a", f"bob-{quirk}-b")
    # Sequential, and the fault on round 1's last speaker: nothing else of the debate is under way.
    provider.script_model(a, thinking(reasoning_chunks=3, stall_after=0), Behavior(cached_tokens=12))
    provider.script_model(b, Behavior(chunks=17, reasoning_tokens=57, usage_convention="reasoning_outside"))
    provider.script_model(c_, Behavior(status=429, retry_after=0.1), behavior)
    for model in healthy:  # slow enough to be under way all through alice's debate
        provider.model_default(model, thinking(reasoning_chunks=2, content_blocks=True, chunk_delay=0.04))
    results: dict[str, object] = {}

    def bobs_debate() -> None:
        with Tenant(suite, "bob") as bob:
            debate_id = bob.start(config([f"{ENDPOINT}/{m}" for m in healthy], "sim/judge", rounds=2))
            results["bob"] = (debate_id, bob.events(debate_id), bob.debate(debate_id))

    beside = threading.Thread(target=bobs_debate, name="bob")
    with Tenant(suite, "alice") as alice:
        beside.start()
        models = [f"{ENDPOINT}/{m}" for m in (a, b, c_)]
        debate_id = alice.start(config(models, f"{ENDPOINT}/{judge}", order=c.TURN_ORDER_SEQUENTIAL))
        events = alice.events(debate_id)
        debate = alice.debate(debate_id)
        beside.join(120)
        assert debate.state == S.DEBATE_STATE_FAILED and debate.end_reason.startswith(f"{reason}: "), debate.end_reason
        billed = bill_of(provider, (a, b, c_, judge))
        assert_ledger_equals_bill(suite, alice, debate_id, billed)
    assert [x.outcome for x in billed if x.model == c_] == ["error", outcome]
    assert not [x for x in billed if x.model == judge]  # the debate ended before any judging
    assert_gap_free(events)
    assert_nothing_internal(debate, events)
    assert_failed_turns_match_the_bill(events, billed, {"Ada": a, "Milo": b, "Zoe": c_})
    failed = of_kind(events, "turn_failed")
    assert [(f.participant, f.round_number, f.attempt, f.reason, f.will_retry) for f in failed] == [
        ("Ada", 1, 1, "PROVIDER_STALLED", True),
        ("Zoe", 1, 1, reason, False),
    ]
    (ending,) = of_kind(events, "debate_failed")
    assert ending.reason == reason
    assert_no_reasoning_is_speech(provider, debate, events)
    # bob's debate, beside it, completed as if nothing happened
    assert not beside.is_alive() and "bob" in results
    bob_id, bob_events, bob_debate = results["bob"]  # type: ignore[misc]
    assert bob_debate.state == S.DEBATE_STATE_COMPLETED, bob_debate.end_reason
    started, ended = bob_debate.create_time.ToNanoseconds(), bob_debate.update_time.ToNanoseconds()
    assert started < debate.update_time.ToNanoseconds() < ended  # it ran through alice's failure
    bob_rows = [r for r in ledger(suite, bob_id) if r["participant"] != "judge"]
    assert sorted((r["prompt_tokens"], r["completion_tokens"], r["reasoning_tokens"]) for r in bob_rows) == sorted(
        (x.prompt_tokens, x.completion_tokens, x.reasoning_tokens) for x in bill_of(provider, healthy)
    )
    assert_gap_free(bob_events)
    assert of_kind(bob_events, "turn_failed") == [] and of_kind(bob_events, "debate_completed")


# --------------------------------------------------------------------------- 3. a judge that never answers validly


def test_a_judge_always_answering_trailing_commas_ends_a_quirky_debate_and_its_ledger_is_the_bill(suite, provider):
    a, b, c_, judge = (f"tc-{name}" for name in ("a", "b", "c", "judge"))
    provider.model_default(judge, Behavior(text=TRAILING_COMMAS))
    # Round 1's assessment fails while round 2 is spoken (it runs beside it); round 2's turns take a
    # while, so the failure is seen when they end and nothing is under way when the debate ends.
    slow = {"chunk_delay": 0.05}
    provider.script_model(
        a,
        thinking(reasoning_chunks=3, stall_after=0),
        thinking(reasoning_chunks=3, cached_tokens=10, cache_creation_tokens=6, usage_convention="anthropic_cache"),
        Behavior(usage=False, **slow),
    )
    provider.script_model(
        b, Behavior(chunks=17, reasoning_tokens=57, usage_convention="reasoning_outside"), Behavior(**slow)
    )
    provider.script_model(
        c_,
        Behavior(status=500),
        thinking(content_blocks=True, reasoning_chunks=2),
        thinking(reasoning_chunks=2, usage_convention="deepseek", cached_tokens=8, **slow),
    )
    with Tenant(suite, "alice") as alice:
        debate_id = alice.start(config([f"{ENDPOINT}/{m}" for m in (a, b, c_)], f"{ENDPOINT}/{judge}"))
        events = alice.events(debate_id)
        debate = alice.debate(debate_id)
        assert debate.state == S.DEBATE_STATE_FAILED, debate.end_reason
        assert debate.end_reason.startswith("JUDGE_OUTPUT_INVALID"), debate.end_reason
        billed = bill_of(provider, (a, b, c_, judge))
        assert_ledger_equals_bill(suite, alice, debate_id, billed)
    judge_bills = [x for x in billed if x.model == judge]
    # 3 ballots, each refused; the first to give up (3 answers) stops the others after their call
    assert len(judge_bills) >= 3 + 2 and all(x.outcome == "complete" for x in judge_bills)
    assert [r.round_number for r in of_kind(events, "round_started")] == [1, 2]
    assert of_kind(events, "round_assessed") == []
    assert_gap_free(events)
    assert_nothing_internal(debate, events)
    assert_failed_turns_match_the_bill(events, billed, {"Ada": a, "Milo": b, "Zoe": c_})
    assert_no_reasoning_is_speech(provider, debate, events)
    (ending,) = of_kind(events, "debate_failed")
    assert ending.reason == "JUDGE_OUTPUT_INVALID"


# --------------------------------------------------------------------------- judging under way at the end


def test_judge_calls_under_way_when_a_debate_fails_are_in_its_ledger(suite, provider):
    a, b, c_, judge = (f"gap-{name}" for name in ("a", "b", "c", "judge"))
    # Round 1's assessment: every ballot reasons for 2 s before it answers. Round 2's first speaker
    # sends a malformed chunk after 0.5 s of reasoning, while those judge calls stream.
    provider.model_default(judge, thinking(text=ROUND, reasoning_chunks=20, reasoning_delay=0.1))
    provider.script_model(a, Behavior(), thinking(reasoning_chunks=5, reasoning_delay=0.1, bad_chunk="content_number"))
    with Tenant(suite, "alice") as alice:
        models = [f"{ENDPOINT}/{m}" for m in (a, b, c_)]
        debate_id = alice.start(config(models, f"{ENDPOINT}/{judge}", order=c.TURN_ORDER_SEQUENTIAL))
        events = alice.events(debate_id)
        debate = alice.debate(debate_id)
        assert debate.end_reason.startswith("PROVIDER_BAD_CHUNK: "), debate.end_reason
        assert_nothing_internal(debate, events)
        billed = bill_of(provider, (a, b, c_, judge))
        # The round's assessment was let finish, not cut: its 3 calls complete and are recorded.
        assert [x.outcome for x in billed if x.model == judge] == ["complete"] * 3
        assert_ledger_equals_bill(suite, alice, debate_id, billed)
        assert [e.assessment.round_number for e in of_kind(events, "round_assessed")] == [1]
