"""Export (issue 19 part 5) through the API and the CLI, from a debate played by the three real
services (in this process, tests/reliability/inprocess.py). The debaters are served by a local
OpenAI-compatible provider (tests/support/fake_openai.py) at a declared price whose rates are not
round, so every amount of the cost table has many digits to lose; the judge is sim/judge.

ExportDebate in Markdown, JSON and HTML: the Markdown has its sections and the ledger's exact
figures, the JSON validates against the published schema and carries the same figures as
GetDebate, the HTML escapes a turn's `<script>`. Another tenant gets NOT_FOUND, a missing or
unknown format INVALID_ARGUMENT with a field violation; `debate-engine export` writes each format
to standard output or to a file, and exits 1 with the server's answer when the debate is hidden.
"""

from __future__ import annotations

import json
from decimal import Decimal

import grpc
import jsonschema
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services import cli
from services.common.grpc_errors import error_details
from tests.helpers import ROOT
from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import Behavior, FakeOpenAIServer

ENDPOINT = "fake"
PRICE = {"input_per_million": "3.17", "output_per_million": "15.29"}
ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef"
SCRIPT = "<script>alert('owned')</script>"
SCHEMA = json.loads((ROOT / "docs" / "schemas" / "debate-export.v1.json").read_text(encoding="utf-8"))
TIMEOUT = 30


def _as(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer(tokenizer=True, count_model_prefix=f"{ENDPOINT}/") as server:
        server.model_default("a", Behavior(text=f"Cars choke the old streets | {SCRIPT} and *trade* suffers."))
        server.model_default("b", Behavior(text="Shops need deliveries; a ban is a blunt tool.\n\nLook at the data."))
        yield server


@pytest.fixture(scope="module")
def suite(tmp_path_factory, fake):
    endpoints = {ENDPOINT: {"api_base": fake.base_url, "price": PRICE}}
    llm = {
        "llm_endpoints": endpoints,
        "llm_allowed_models": ["sim/*", f"{ENDPOINT}/*"],
        "sim_first_token_latency": 0.0,
        "sim_tokens_per_second": 0.0,
    }
    running = InProcessSuite(
        tmp_path_factory.mktemp("export"),
        overrides={
            "accounting": {"llm_endpoints": endpoints},
            "judge": llm,
            "orchestrator": {**llm, "api_keys": f"{ALICE}=alice,{BOB}=bob"},
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def stub(suite):
    with grpc.insecure_channel(suite.addresses["orchestrator"]) as channel:
        yield pbg.OrchestratorServiceStub(channel)


@pytest.fixture(scope="module")
def played(stub) -> pb.Debate:
    """Alice's completed two-round debate, as GetDebate returns it."""
    config = c.DebateConfig(
        topic="Cities should ban private cars | from their centres",
        participants=[
            c.Participant(name="Ada", model=f"{ENDPOINT}/a", persona="an urban economist", stance="for"),
            c.Participant(name="Milo", model=f"{ENDPOINT}/b", persona="a shopkeeper", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"]),
        format=c.DebateFormat(round_limit=2, turn_order=c.TURN_ORDER_SEQUENTIAL),
        max_tokens_per_turn=60,
        budget=c.Money(currency_code="USD", amount="1"),
    )
    alice = _as(ALICE)
    created = stub.CreateDebate(pb.CreateDebateRequest(config=config), metadata=alice, timeout=TIMEOUT).debate
    stub.StartDebate(pb.StartDebateRequest(debate_id=created.debate_id), metadata=alice, timeout=TIMEOUT)
    stream = stub.StreamDebateEvents(
        pb.StreamDebateEventsRequest(debate_id=created.debate_id), metadata=alice, timeout=120
    )
    last = [r.event.WhichOneof("payload") for r in stream][-1]
    assert last == "debate_completed"
    debate = stub.GetDebate(pb.GetDebateRequest(debate_id=created.debate_id), metadata=alice, timeout=TIMEOUT).debate
    assert Decimal(debate.cost.total.amount) > 0 and len(debate.cost.total.amount.split(".")[1]) > 6
    return debate


def export(stub, debate_id: str, fmt: int, key: str = ALICE) -> pb.ExportDebateResponse:
    return stub.ExportDebate(
        pb.ExportDebateRequest(debate_id=debate_id, format=fmt), metadata=_as(key), timeout=TIMEOUT
    )


def test_the_markdown_has_every_section_and_the_ledgers_exact_figures(stub, played):
    reply = export(stub, played.debate_id, pb.EXPORT_FORMAT_MARKDOWN)
    assert reply.content_type == "text/markdown; charset=utf-8"
    assert reply.file_name == f"debate-{played.debate_id}.md"
    md = reply.content.decode("utf-8")
    assert md.startswith("# Cities should ban private cars \\| from their centres\n")
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections == ["## Participants", "## Verdict", "## Transcript", "## Round scores", "## Cost"]
    assert "### Round 1" in md and "### Round 2" in md
    cost = played.cost
    assert f"**Total: {cost.total.amount} USD**" in md
    for line in [*cost.by_participant, *cost.by_role, *cost.by_round, *cost.by_model]:
        assert f" | {line.cost.amount} |" in md, line.key
    for turn in (t for r in played.rounds for t in r.turns):
        assert f"{turn.usage.total_tokens:,} tokens · {turn.cost.amount} USD" in md
    verdict = played.verdict
    assert ("**A tie**" if verdict.tie else f"**{verdict.winner} wins**") in md
    assert SCRIPT not in md and "&lt;script>" in md


def test_the_json_validates_against_the_published_schema_and_carries_getdebates_figures(stub, played):
    reply = export(stub, played.debate_id, pb.EXPORT_FORMAT_JSON)
    assert reply.content_type == "application/json"
    data = json.loads(reply.content)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    assert data["debate_id"] == played.debate_id and data["state"] == "completed"
    cost = played.cost
    assert data["cost"]["total"] == {"currency_code": "USD", "amount": cost.total.amount}
    for key in ("by_participant", "by_role", "by_round", "by_model"):
        want = [(x.key, x.cost.amount, x.usage.total_tokens, x.calls) for x in getattr(cost, key)]
        got = [(x["key"], x["cost"]["amount"], x["usage"]["total_tokens"], x["calls"]) for x in data["cost"][key]]
        assert got == want, key
    assert sum(Decimal(x["cost"]["amount"]) for x in data["cost"]["by_round"]) == Decimal(cost.total.amount)
    turns = [(t.participant, t.text, t.cost.amount) for r in played.rounds for t in r.turns]
    assert [(t["participant"], t["text"], t["cost"]["amount"]) for r in data["rounds"] for t in r["turns"]] == turns
    assert [r["assessment"]["leader"] for r in data["rounds"]] == [r.assessment.leader for r in played.rounds]
    assert [v["winner"] for v in data["verdicts"]] == [played.verdict.winner]


def test_the_html_is_one_escaped_file(stub, played):
    reply = export(stub, played.debate_id, pb.EXPORT_FORMAT_HTML)
    assert reply.content_type == "text/html; charset=utf-8" and reply.file_name.endswith(".html")
    html = reply.content.decode("utf-8")
    assert html.startswith("<!doctype html>")
    assert SCRIPT not in html and "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in html
    assert "<script" not in html.lower() and "default-src 'none'" in html
    assert f"Total: {played.cost.total.amount} USD" in html


def test_another_tenant_gets_not_found_like_a_missing_debate(stub, played):
    for debate_id in (played.debate_id, "00000000-0000-4000-8000-000000000000", ""):
        with pytest.raises(grpc.RpcError) as refused:
            export(stub, debate_id, pb.EXPORT_FORMAT_JSON, key=BOB if debate_id == played.debate_id else ALICE)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Cities" not in (refused.value.details() or "")


@pytest.mark.parametrize("fmt", [pb.EXPORT_FORMAT_UNSPECIFIED, 99])
def test_a_missing_or_unknown_format_is_invalid_argument_naming_the_field(stub, played, fmt):
    before = stub.GetDebate(pb.GetDebateRequest(debate_id=played.debate_id), metadata=_as(ALICE), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as refused:
        export(stub, played.debate_id, fmt)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = error_details(refused.value)
    assert [field for field, _ in violations] == ["format"]
    after = stub.GetDebate(pb.GetDebateRequest(debate_id=played.debate_id), metadata=_as(ALICE), timeout=TIMEOUT)
    assert after == before  # nothing changed


def test_the_cli_writes_each_format_to_standard_output_or_a_file(suite, stub, played, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("DEBATE_ENGINE_API_KEY", ALICE)
    target = suite.addresses["orchestrator"]
    for fmt, code in (
        ("md", pb.EXPORT_FORMAT_MARKDOWN),
        ("json", pb.EXPORT_FORMAT_JSON),
        ("html", pb.EXPORT_FORMAT_HTML),
    ):
        assert cli.main(["export", played.debate_id, "--format", fmt, "--target", target]) == 0
        out = capfd.readouterr().out
        assert out.encode("utf-8") == export(stub, played.debate_id, code).content, fmt
        path = tmp_path / f"debate.{fmt}"
        assert cli.main(["export", played.debate_id, "--format", fmt, "-o", str(path), "--target", target]) == 0
        assert path.read_bytes() == export(stub, played.debate_id, code).content
        assert f"wrote {path}" in capfd.readouterr().out
    assert not list(tmp_path.glob(".*partial"))


def test_the_cli_says_not_found_for_another_tenants_debate(suite, played, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("DEBATE_ENGINE_API_KEY", BOB)
    path = tmp_path / "stolen.md"
    code = cli.main(["export", played.debate_id, "-o", str(path), "--target", suite.addresses["orchestrator"]])
    assert code == 1
    captured = capfd.readouterr()
    assert "NOT_FOUND" in captured.err and not path.exists() and captured.out == ""


def test_the_cli_says_when_it_cannot_write_the_file(suite, played, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("DEBATE_ENGINE_API_KEY", ALICE)
    path = tmp_path / "no-such-folder" / "debate.md"
    code = cli.main(["export", played.debate_id, "-o", str(path), "--target", suite.addresses["orchestrator"]])
    assert code == 1
    assert f"cannot write {path}" in capfd.readouterr().err and not path.exists()


@pytest.fixture(scope="module")
def featured(stub) -> pb.Debate:
    """Alice's completed debate with the parts other features add: sources its simulated debaters
    quote (checked quotes on its turns), two voters' votes, and a second verdict (a re-judging)."""
    source = (
        "Footfall in the pedestrianised centre rose by twelve percent in the first year. "
        "Retail turnover recovered within eighteen months, and delivery windows kept shops supplied."
    )
    config = c.DebateConfig(
        topic="Cities should ban private cars from their centres",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="an urban economist", stance="for"),
            c.Participant(name="Milo", model="sim/debater", persona="a shopkeeper", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"]),
        format=c.DebateFormat(round_limit=2, turn_order=c.TURN_ORDER_SEQUENTIAL),
        max_tokens_per_turn=120,
        sources=[c.SourceDocument(id="doc-1", title="A year without cars", text=source)],
    )
    alice = _as(ALICE)
    created = stub.CreateDebate(pb.CreateDebateRequest(config=config), metadata=alice, timeout=TIMEOUT).debate
    stub.StartDebate(pb.StartDebateRequest(debate_id=created.debate_id), metadata=alice, timeout=TIMEOUT)
    stream = stub.StreamDebateEvents(
        pb.StreamDebateEventsRequest(debate_id=created.debate_id), metadata=alice, timeout=120
    )
    assert [r.event.WhichOneof("payload") for r in stream][-1] == "debate_completed"
    for voter, winner in (("v1", "Ada"), ("v2", "Milo"), ("v3", "Ada")):
        stub.CastVote(
            pb.CastVoteRequest(debate_id=created.debate_id, voter=voter, winner=winner), metadata=alice, timeout=TIMEOUT
        )
    stub.RejudgeDebate(
        pb.RejudgeDebateRequest(
            debate_id=created.debate_id, judge=c.JudgeConfig(models=["sim/judge"], orderings=2), request_id="again"
        ),
        metadata=alice,
        timeout=120,
    )
    debate = stub.GetDebate(pb.GetDebateRequest(debate_id=created.debate_id), metadata=alice, timeout=TIMEOUT).debate
    assert len(debate.verdicts) == 2 and debate.votes.voters == 3
    assert any(t.quotes for r in debate.rounds for t in r.turns), "the simulated debaters quoted nothing"
    return debate


def test_a_debate_with_quotes_votes_and_two_verdicts_exports_them_all(stub, featured):
    """Issue 19's check: the three formats from a debate with quotes, votes and two verdicts."""
    quotes = [(q.text, c.QuoteStatus.Name(q.status)) for r in featured.rounds for t in r.turns for q in t.quotes]
    document = json.loads(export(stub, featured.debate_id, pb.EXPORT_FORMAT_JSON).content)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    exported = [
        (q["text"], "QUOTE_STATUS_" + q["status"].upper())
        for r in document["rounds"]
        for t in r["turns"]
        for q in t["quotes"]
    ]
    assert exported == quotes
    assert [(v["version"], v["reason"], v["current"]) for v in document["verdicts"]] == [
        (1, "debate_end", False),
        (2, "rejudge", True),
    ]
    assert document["votes"]["total"] == 3
    assert {v["choice"]: v["votes"] for v in document["votes"]["counts"]} == {"Ada": 2, "Milo": 1, "tie": 0}

    md = export(stub, featured.debate_id, pb.EXPORT_FORMAT_MARKDOWN).content.decode("utf-8")
    marks = {"QUOTE_STATUS_VERIFIED": "✅", "QUOTE_STATUS_PARTIAL": "〜", "QUOTE_STATUS_UNVERIFIED": "❌"}
    for _, status in quotes:
        assert marks[status] in md
    assert "## Verdicts" in md and "### Version 2" in md and "### Version 1" in md
    assert md.index("### Version 2") < md.index("### Version 1")  # the latest first

    html = export(stub, featured.debate_id, pb.EXPORT_FORMAT_HTML).content.decode("utf-8")
    assert html.count("<html") == 1
    assert all(q.text.split()[0] in html for r in featured.rounds for t in r.turns for q in t.quotes)
