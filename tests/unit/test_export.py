"""Export (issue 19 part 5) as plain Python: the model built from a `Debate` message, and its
Markdown, JSON and HTML. The debate here is written by hand, with exact amounts that are not
round numbers; tests/integration/test_export.py exports one played by the real services.

Quotes, votes, verdict versions and an early stop are fields other features add to the protos;
until they merge, these tests put them into the model itself (`with_extras`), which is what the
renderers read."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import jsonschema
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.orchestrator.export import CONTENT_TYPES, json_schema, json_schema_text, render
from services.orchestrator.export.markdown import inline, render_markdown
from services.orchestrator.export.model import (
    SCHEMA_ID,
    EarlyStop,
    ExportDocument,
    Money,
    Quote,
    Verdict,
    VoteCount,
    Votes,
    build_document,
    segments,
)
from tests.helpers import ROOT

SCHEMA_FILE = ROOT / "docs" / "schemas" / "debate-export.v1.json"
SCRIPT = "<script>alert('owned')</script>"


def usage(prompt: int, completion: int) -> c.TokenUsage:
    return c.TokenUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def usd(amount: str) -> c.Money:
    return c.Money(currency_code="USD", amount=amount)


def line(key: str, prompt: int, completion: int, amount: str, calls: int, source: str = "") -> c.CostLine:
    return c.CostLine(key=key, usage=usage(prompt, completion), cost=usd(amount), calls=calls, price_source=source)


def scores(name: str, *values: float, total: float) -> c.DebaterScore:
    names = ("argument_strength", "evidence", "rebuttal", "clarity")
    return c.DebaterScore(
        debater=name,
        criteria=[c.CriterionScore(criterion=n, score=v) for n, v in zip(names, values, strict=True)],
        weighted_total=total,
        rationale=f"{name} argued.",
    )


def debate() -> pb.Debate:
    """A completed two-round debate between Ada (for) and Milo | the pipe (against)."""
    config = c.DebateConfig(
        topic="Cities should ban *cars* | from centres",
        participants=[
            c.Participant(name="Ada", model="fake/a", persona="an urban economist", stance="for"),
            c.Participant(name="Milo | the pipe", model="fake/b", persona="a shopkeeper <b>bold</b>", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"]),
        format=c.DebateFormat(round_limit=2, turn_order=c.TURN_ORDER_SEQUENTIAL),
        max_tokens_per_turn=120,
        budget=usd("0.50"),
        seed=7,
    )
    texts = {
        (1, "Ada"): "Cars choke old streets.\n\nFewer cars, more trade.",
        (1, "Milo | the pipe"): f"Shops need deliveries. {SCRIPT}",
        (2, "Ada"): 'As the study says, <quote source="doc-1">footfall rose 12%</quote>; and '
        "<quote>trade doubled overnight</quote>.",
        (2, "Milo | the pipe"): "A ban is a blunt tool.",
    }
    rounds = []
    for number in (1, 2):
        turns = [
            c.Turn(
                round_number=number,
                participant=name,
                model=model,
                text=texts[(number, name)],
                usage=usage(100 * number, 30),
                cost=usd(f"0.00{number}23456789"),
                finish_reason=c.FINISH_REASON_STOP if name == "Ada" else c.FINISH_REASON_LENGTH,
                attempt=1,
            )
            for name, model in (("Ada", "fake/a"), ("Milo | the pipe", "fake/b"))
        ]
        assessment = c.RoundAssessment(
            round_number=number,
            scores=[scores("Ada", 7, 6, 5, 8, total=6.5), scores("Milo | the pipe", 5, 4, 6, 7, total=5.5)],
            leader="Ada",
            rationale="Ada leads <i>clearly</i>.",
            judge_models=["sim/judge"],
            ordering_agreement=1.0,
            judge_agreement=1.0,
        )
        rounds.append(pb.Round(round_number=number, turns=turns, assessment=assessment))
    out = pb.Debate(
        debate_id="0f0e0d0c-0000-4000-8000-000000000001",
        config=config,
        state=pb.DEBATE_STATE_COMPLETED,
        rounds=rounds,
        verdict=c.Verdict(
            winner="Ada",
            final_scores=[c.FinalScore(debater="Ada", score=6.4), c.FinalScore(debater="Milo | the pipe", score=5.6)],
            confidence=0.8,
            summary="Ada's data carried it.",
            judge_models=["sim/judge"],
            ordering_agreement=1.0,
            judge_agreement=1.0,
        ),
        cost=c.DebateCost(
            debate_id="0f0e0d0c-0000-4000-8000-000000000001",
            total=usd("0.013579135780"),
            usage=usage(1800, 400),
            by_participant=[
                line("Ada", 300, 60, "0.00246913578", 2),
                line("Milo | the pipe", 300, 60, "0.00246913578", 2),
                line("judge", 1200, 280, "0.00864086422", 6),
            ],
            by_role=[line("debater", 600, 120, "0.00493827156", 4), line("judge", 1200, 280, "0.00864086422", 6)],
            by_round=[
                line("0", 400, 100, "0.002", 2),
                line("1", 700, 150, "0.005", 4),
                line("2", 700, 150, "0.006579135780", 4),
            ],
            by_model=[
                line("fake/a", 300, 60, "0.00246913578", 2, "declared-fake"),
                line("fake/b", 300, 60, "0.00246913578", 2, "declared-fake"),
                line("sim/judge", 1200, 280, "0.00864086422", 6, "project-prices-1"),
            ],
            budget=c.BudgetStatus(cap=usd("0.50"), spent=usd("0.013579135780"), remaining=usd("0.486420864220")),
        ),
        end_reason="",
        last_sequence=120,
    )
    out.create_time.FromSeconds(1_800_000_000)
    out.update_time.FromSeconds(1_800_000_090)
    return out


def with_extras(doc: ExportDocument) -> ExportDocument:
    """The document with what other features add: quotes in round 2's first turn, a second verdict
    version, votes and an early stop."""
    text = doc.rounds[1].turns[0].text
    spans = [
        (m.start(), m.end(), m.group(2), m.group(1) or "")
        for m in re.finditer(r'<quote(?: source="([^"]*)")?>(.*?)</quote>', text)
    ]
    quotes = [
        Quote(
            text=spans[0][2],
            source_id="doc-1",
            status="verified",
            start=spans[0][0],
            end=spans[0][1],
            score=100,
            best_match=spans[0][2],
        ),
        Quote(
            text=spans[1][2],
            source_id="",
            status="unverified",
            start=spans[1][0],
            end=spans[1][1],
            score=20,
            best_match="",
        ),
        # A partial quote whose span is out of the text: listed with the turn, not marked in it.
        Quote(
            text="footfal rose",
            source_id="doc-1",
            status="partial",
            start=500,
            end=520,
            score=91,
            best_match="footfall rose",
        ),
    ]
    turn = doc.rounds[1].turns[0].model_copy(update={"quotes": quotes})
    round_2 = doc.rounds[1].model_copy(update={"turns": [turn, *doc.rounds[1].turns[1:]]})
    first = doc.verdicts[0].model_copy(update={"current": False, "reason": "debate_end"})
    second = first.model_copy(
        update={
            "version": 2,
            "current": True,
            "reason": "rejudge",
            "winner": "",
            "tie": True,
            "summary": "On re-judging: a tie.",
        }
    )
    return doc.model_copy(
        update={
            "rounds": [doc.rounds[0], round_2],
            "verdicts": [first, second],
            "votes": Votes(total=4, counts=[VoteCount(choice="Ada", votes=3), VoteCount(choice="tie", votes=1)]),
            "stop": EarlyStop(
                rule="judge_decided",
                after_round=2,
                rounds_not_played=1,
                cost_avoided=Money(currency_code="USD", amount="0.0061"),
                reason="margin 1.0",
            ),
        }
    )


# ==== the model ===================================================================================


def test_the_model_keeps_every_figure_of_the_debate_exactly():
    doc = build_document(debate())
    assert doc.state == "completed" and doc.settings.turn_order == "sequential"
    assert doc.created_at == "2027-01-15T08:00:00Z"
    assert doc.cost.total == Money(currency_code="USD", amount="0.013579135780")  # not 0.01357913578
    assert [line.cost.amount for line in doc.cost.by_round] == ["0.002", "0.005", "0.006579135780"]
    assert doc.cost.budget is not None and doc.cost.budget.reserved.amount == "0"
    assert doc.rounds[0].turns[1].finish_reason == "length"
    assert [v.version for v in doc.verdicts] == [1] and doc.verdicts[0].current
    assert doc.votes is None and doc.stop is None and doc.rounds[0].turns[0].quotes == []
    assert doc.settings.budget == Money(currency_code="USD", amount="0.50")


def test_a_debate_not_yet_judged_has_no_verdict_and_unscored_rounds():
    running = debate()
    running.state = pb.DEBATE_STATE_RUNNING
    running.ClearField("verdict")
    running.rounds[1].ClearField("assessment")
    doc = build_document(running)
    assert doc.verdicts == [] and doc.rounds[1].assessment is None
    md = render_markdown(doc)
    assert "## Verdict" not in md and "**Running**" in md
    assert "| 2 |" not in md.split("## Round scores")[1].split("## Cost")[0]  # round 2 not in the scores table


def test_segments_replace_each_quote_span_and_skip_a_span_that_does_not_fit():
    doc = with_extras(build_document(debate()))
    parts = segments(doc.rounds[1].turns[0])
    assert [q.status if q else None for _, q in parts] == [None, "verified", None, "unverified", None]
    assert "".join(text for text, _ in parts) == "As the study says, footfall rose 12%; and trade doubled overnight."


# ==== Markdown ====================================================================================


def test_the_markdown_has_its_sections_in_reading_order_and_the_exact_cost_figures():
    md = render(debate(), "md").content.decode()
    headings = [h for h in md.splitlines() if h.startswith("#")]
    assert headings[0] == r"# Cities should ban \*cars\* \| from centres"
    assert [h for h in headings if h.startswith("## ")] == [
        "## Participants",
        "## Verdict",
        "## Transcript",
        "## Round scores",
        "## Cost",
    ]
    assert "### Round 1" in headings and "### Round 2" in headings
    assert "**Ada wins**, with confidence 0.80." in md
    assert "**Total: 0.013579135780 USD**" in md
    # Every line of the breakdown, with its exact amount, in its table.
    for amount in ("0.00246913578", "0.00864086422", "0.00493827156", "0.006579135780"):
        assert f"| {amount} |" in md
    assert "| `sim/judge` | 6 | 1,200 | 280 | 0.00864086422 | project-prices-1 |" in md
    assert "Budget 0.50 USD: spent 0.013579135780 USD, reserved 0 USD, remaining 0.486420864220 USD." in md
    assert "| 1 | 6.50 | 5.50 | Ada |" in md  # the round scores at a glance
    assert "cut at the turn's token limit" in md


def test_markdown_escapes_names_and_keeps_html_out_of_turns():
    md = render(debate(), "md").content.decode()
    assert r"| **Milo \| the pipe** | against | `fake/b` | a shopkeeper \<b\>bold\</b\> |" in md
    assert SCRIPT not in md and "<script" not in md and "&lt;script>" in md
    assert "<i>" not in md  # the judge's rationale too
    # A turn is a block quote, its paragraphs kept.
    assert "> Cars choke old streets.\n>\n> Fewer cars, more trade." in md
    for text in ("1. first", "# not a heading", "- not an item", "a | b"):
        assert not re.match(r"[#\-]|\d+\.", inline(text)) and "|" not in inline(text).replace(r"\|", "")


def test_markdown_marks_quotes_and_shows_votes_verdict_versions_and_an_early_stop():
    md = render_markdown(with_extras(build_document(debate())))
    assert "> As the study says, “footfall rose 12%” ✅; and “trade doubled overnight” ❌." in md
    assert "- ✅ verified: “footfall rose 12%” (doc-1)" in md
    assert "- ❌ unverified: “trade doubled overnight”" in md
    assert "- 〜 partial: “footfal rose” (doc-1); the source says “footfall rose” (91/100)" in md
    sections = [h for h in md.splitlines() if h.startswith("## ")]
    assert sections == [
        "## Participants",
        "## Verdicts",
        "## Audience votes",
        "## Stopped early",
        "## Transcript",
        "## Round scores",
        "## Cost",
    ]
    versions = md.split("## Verdicts")[1].split("## Audience votes")[0]
    assert versions.index("### Version 2 · re-judged (current)") < versions.index("### Version 1 · at the end")
    assert "**A tie**" in versions and "**Ada wins**" in versions
    assert "| Ada | 3 | 75% |" in md and "| Tie | 1 | 25% |" in md
    assert (
        "The rule **judge decided** ended the debate after round 2: 1 round not played, about 0.0061 USD not spent."
        in md
    )


def quotes_with_their_own_marks(doc: ExportDocument) -> ExportDocument:
    """with_extras's document whose debater put quote marks inside its <quote> tags (curly, straight)."""
    turn = doc.rounds[1].turns[0]
    marked = ["\u201cfootfall rose 12%\u201d", ' "trade doubled overnight" ', "\u201efootfal rose\u201c"]
    quotes = [q.model_copy(update={"text": text}) for q, text in zip(turn.quotes, marked, strict=True)]
    round_2 = doc.rounds[1].model_copy(update={"turns": [turn.model_copy(update={"quotes": quotes})]})
    return doc.model_copy(update={"rounds": [doc.rounds[0], round_2, *doc.rounds[2:]]})


def test_a_quote_with_its_own_marks_gets_one_pair_of_marks_in_markdown():
    md = render_markdown(quotes_with_their_own_marks(with_extras(build_document(debate()))))
    assert "> As the study says, “footfall rose 12%” ✅; and “trade doubled overnight” ❌." in md
    assert "- ✅ verified: “footfall rose 12%” (doc-1)" in md
    assert "- ❌ unverified: “trade doubled overnight”" in md
    assert "- 〜 partial: “footfal rose” (doc-1)" in md
    assert "““" not in md and "””" not in md and '“"' not in md


# ==== JSON ========================================================================================


def test_the_published_schema_is_the_models_and_a_valid_draft_2020_12_schema():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema_text(), (
        "docs/schemas/debate-export.v1.json drifted: run python scripts/gen_export_schema.py"
    )
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == SCHEMA_ID and schema["version"] == 1
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("extras", [False, True], ids=["plain", "quotes-votes-versions-stop"])
def test_the_json_validates_against_the_published_schema_and_round_trips_the_figures(extras):
    doc = build_document(debate())
    if extras:
        doc = with_extras(doc)
    text = doc.model_dump_json(by_alias=True, indent=2) if extras else render(debate(), "json").content.decode()
    data = json.loads(text)
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))).validate(data)
    assert data["$schema"] == SCHEMA_ID
    assert ExportDocument.model_validate(data) == doc  # nothing lost on the way
    proto = debate().cost
    assert data["cost"]["total"] == {"currency_code": "USD", "amount": "0.013579135780"}
    parts = [Decimal(line["cost"]["amount"]) for line in data["cost"]["by_participant"]]
    assert sum(parts) == Decimal(proto.total.amount)
    assert [line["cost"]["amount"] for line in data["cost"]["by_model"]] == [x.cost.amount for x in proto.by_model]
    assert data["rounds"][0]["turns"][1]["text"].endswith(SCRIPT)  # JSON keeps the text as it is


def test_the_schema_refuses_a_float_amount_an_unknown_status_and_an_unknown_field():
    validator = jsonschema.Draft202012Validator(json_schema())
    good = json.loads(with_extras(build_document(debate())).model_dump_json(by_alias=True))
    validator.validate(good)
    bad_amount = json.loads(json.dumps(good))
    bad_amount["cost"]["total"]["amount"] = 0.01
    bad_status = json.loads(json.dumps(good))
    bad_status["rounds"][1]["turns"][0]["quotes"][0]["status"] = "probably"
    extra = json.loads(json.dumps(good))
    extra["cost"]["tip"] = "1"
    for document in (bad_amount, bad_status, extra):
        assert not validator.is_valid(document)


# ==== HTML ========================================================================================


def test_the_html_is_one_file_with_its_text_escaped():
    rendered = render(debate(), "html")
    assert rendered.content_type == CONTENT_TYPES["html"] and rendered.file_name.endswith(".html")
    html = rendered.content.decode()
    assert SCRIPT not in html and "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "<i>clearly</i>" not in html
    assert "<script" not in html.lower()
    # Nothing to fetch: no external reference of any kind, and a policy that forbids fetching.
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", html)
    assert "default-src 'none'" in html
    assert '<td class="num" data-testid="cost-amount">0.00864086422</td>' in html
    assert "Total: 0.013579135780 USD" in html


def test_the_html_marks_quotes_and_shows_votes_versions_and_the_stop():
    from services.orchestrator.export.html import render_html

    html = render_html(with_extras(build_document(debate())))
    assert '<q class="quote verified" data-status="verified" title="verified · doc-1">footfall rose 12%</q>' in html
    assert (
        '<q class="quote unverified"' in html
        and '<span class="mark unverified" aria-label="unverified">✗</span>' in html
    )
    assert html.count('data-testid="verdict"') == 2 and 'data-version="2"' in html
    assert 'data-testid="votes"' in html and 'data-testid="early-stop"' in html


def test_a_quote_with_its_own_marks_gets_one_pair_of_marks_in_html():
    from services.orchestrator.export.html import render_html

    html = render_html(quotes_with_their_own_marks(with_extras(build_document(debate()))))
    # <q> gets its marks from the style sheet (quotes: "“" "”"): the words go in bare
    assert '<q class="quote verified" data-status="verified" title="verified · doc-1">footfall rose 12%</q>' in html
    assert '">trade doubled overnight</q>' in html
    assert "verified: “footfall rose 12%”" in html and "partial: “footfal rose”" in html
    assert "““" not in html and "””" not in html and "“&#34;" not in html


def test_an_unknown_format_is_refused():
    with pytest.raises(KeyError):
        render(debate(), "pdf")


def test_every_verdict_is_numbered_from_one_and_only_the_last_is_current():
    doc = with_extras(build_document(debate()))
    assert [(v.version, v.current) for v in doc.verdicts] == [(1, False), (2, True)]
    assert isinstance(doc.verdicts[0], Verdict)


# ==== the fields other features add, read from their messages =====================================


def test_the_parts_the_debate_features_add_are_read_from_their_fields():
    """Quotes, a human seat's turn, verdict versions, votes and an early stop, each from its field."""
    future = debate()
    turn = future.rounds[1].turns[0]
    for match, status in zip(re.finditer(r"<quote[^>]*>(.*?)</quote>", turn.text), (1, 3), strict=True):
        turn.quotes.add(text=match.group(1), status=status, start=match.start(), end=match.end(), score=100)
    future.rounds[1].turns[1].human.skipped = True
    future.rounds[1].turns[1].human.skip_reason = "TIMEOUT"
    first = future.verdicts.add(version=1, reason=1)
    first.verdict.CopyFrom(future.verdict)
    second = future.verdicts.add(version=2, reason=2)
    second.verdict.CopyFrom(future.verdict)
    second.verdict.winner, second.verdict.tie = "", True
    future.votes.counts.add(winner="Ada", votes=3)
    future.votes.counts.add(winner="Milo | the pipe", votes=0)
    future.votes.counts.add(tie=True, votes=1)
    future.votes.voters = 4
    future.stop.rule, future.stop.after_round, future.stop.rounds_not_played = 1, 2, 1
    future.stop.estimated_cost_avoided.currency_code, future.stop.estimated_cost_avoided.amount = "USD", "0.0061"
    future.stop.reason = "Ada leads round 2 by 1.00 points"

    doc = build_document(future)
    assert [(q.text, q.status) for q in doc.rounds[1].turns[0].quotes] == [
        ("footfall rose 12%", "verified"),
        ("trade doubled overnight", "unverified"),
    ]
    assert doc.rounds[1].turns[1].human is not None and doc.rounds[1].turns[1].human.skip_reason == "TIMEOUT"
    assert doc.rounds[0].turns[0].human is None
    assert [(v.version, v.reason, v.current, v.winner, v.tie) for v in doc.verdicts] == [
        (1, "debate_end", False, "Ada", False),
        (2, "rejudge", True, "", True),
    ]
    assert doc.votes == Votes(
        total=4,
        counts=[
            VoteCount(choice="Ada", votes=3),
            VoteCount(choice="Milo | the pipe", votes=0),
            VoteCount(choice="tie", votes=1),
        ],
    )
    assert doc.stop == EarlyStop(
        rule="judge_decided",
        after_round=2,
        rounds_not_played=1,
        cost_avoided=Money(currency_code="USD", amount="0.0061"),
        reason="Ada leads round 2 by 1.00 points",
    )
    md = render_markdown(doc)
    assert "> _No turn: timeout._" in md and "“footfall rose 12%” ✅" in md and "| Tie | 1 | 25% |" in md
    jsonschema.Draft202012Validator(json_schema()).validate(json.loads(render(future, "json").content))
    # Without votes, versions or a stop, the same message exports as before.
    bare = build_document(debate())
    assert (bare.votes, bare.stop, [v.version for v in bare.verdicts]) == (None, None, [1])
