"""The export's one model of a debate (ExportDocument) and its building from the `Debate` message.

Every format is rendered from this model, never from the protobuf directly: the JSON is this model
as it is (its JSON Schema, generated from these classes, is published as
docs/schemas/debate-export.v1.json), and the Markdown and the HTML show its parts. The model is
plain data: names are the protos' own, enums are lower-case words ("completed", "verified"), and
money is an exact decimal string, never a float.

The parts the debate features add are each read by one small function below: Turn.quotes
(`quotes`: checked quotes, each verified, partial or unverified), Turn.human (`human_turn`: a human
seat's turn, e.g. skipped at a timeout), Debate.verdicts (`verdicts`: verdict versions, oldest
first), Debate.votes (`votes`: the audience's votes) and Debate.stop (`early_stop`: an early stop).
"""

from __future__ import annotations

from typing import Final, Literal

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_ID: Final = "urn:debate-engine:schema:debate-export:v1"
SCHEMA_VERSION: Final = 1
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"

QuoteStatus = Literal["verified", "partial", "unverified"]


class Part(BaseModel):
    # Every field is written, defaults included, so the schema can say each is required.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class Money(Part):
    """An exact amount: `amount` is a plain decimal string ("0.000105"), as the ledger summed it."""

    currency_code: str = Field(description="ISO 4217 code, USD")
    amount: str = Field(pattern=AMOUNT_PATTERN, description="exact decimal, never rounded")


class Tokens(Part):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_creation_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = Field(False, description="some of it counted by our tokenizer, not reported by the provider")


class Participant(Part):
    name: str
    model: str
    persona: str
    stance: str
    human: bool = Field(False, description="a seat played by a person (the model 'human')")


class Quote(Part):
    """A marked quote of a turn, checked against the debate's sources."""

    text: str = Field(description="the quoted words as the debater wrote them")
    source_id: str = Field(description="the source the debater named; empty when none")
    status: QuoteStatus
    start: int = Field(description="span of the marked quote in the turn's text, Unicode code points")
    end: int
    score: float = Field(description="0 to 100: similarity of the best match")
    best_match: str = Field(description="the closest passage of the sources; empty when none came close")


class HumanTurn(Part):
    skipped: bool
    skip_reason: str = Field(description='"TIMEOUT", "FORFEITED" or empty')


class Turn(Part):
    participant: str
    model: str
    text: str
    finish_reason: str = Field(description="stop, length, cancelled, error or unspecified")
    attempt: int
    simulated: bool
    usage: Tokens
    cost: Money
    quotes: list[Quote] = []
    human: HumanTurn | None = None


class CriterionScore(Part):
    criterion: str
    score: float = Field(description="0 to 10")


class DebaterScore(Part):
    debater: str
    criteria: list[CriterionScore]
    weighted_total: float = Field(description="0 to 10")
    rationale: str


class Assessment(Part):
    """The judge's scores of one round."""

    leader: str = Field(description="empty when tie is true")
    tie: bool
    rationale: str
    scores: list[DebaterScore]
    judge_models: list[str]
    ordering_agreement: float = Field(description="0 to 1")
    judge_agreement: float = Field(description="0 to 1")
    simulated: bool


class Round(Part):
    number: int
    turns: list[Turn]
    assessment: Assessment | None = Field(description="null until the judge has scored the round")


class FinalScore(Part):
    debater: str
    score: float = Field(description="0 to 10")


class Verdict(Part):
    version: int = Field(description="1 for the first verdict; later versions re-judge or follow up")
    current: bool = Field(description="true for the verdict the debate stands by (the latest)")
    reason: str = Field(description="why this version was made: debate_end, rejudge, continuation; empty if unknown")
    winner: str = Field(description="empty when tie is true")
    tie: bool
    confidence: float = Field(description="0 to 1")
    summary: str
    final_scores: list[FinalScore]
    judge_models: list[str]
    ordering_agreement: float
    judge_agreement: float
    simulated: bool


class VoteCount(Part):
    choice: str = Field(description="a debater's name, or 'tie'")
    votes: int


class Votes(Part):
    """The audience's votes: one per voter, for a debater or a tie."""

    total: int
    counts: list[VoteCount]


class EarlyStop(Part):
    rule: str = Field(description="the stopping rule that ended the debate, e.g. judge_decided or consensus")
    after_round: int
    rounds_not_played: int
    cost_avoided: Money | None = Field(description="an estimate; null when none was made")
    reason: str


class CostLine(Part):
    key: str = Field(description="the participant, role, round ('0' is the verdict) or model the line sums")
    calls: int
    usage: Tokens
    cost: Money
    price_source: str = Field(description="where the price came from, on model lines")


class Budget(Part):
    cap: Money
    spent: Money
    reserved: Money
    remaining: Money


class Cost(Part):
    """What the debate cost: every figure is the exact sum of the ledger's rows."""

    total: Money
    usage: Tokens
    by_participant: list[CostLine]
    by_role: list[CostLine]
    by_round: list[CostLine]
    by_model: list[CostLine]
    budget: Budget | None = Field(description="null when the debate has no spending cap")


class Settings(Part):
    round_limit: int
    turn_order: str = Field(description="simultaneous or sequential")
    judge_models: list[str]
    orderings: int = Field(description="orderings of the debaters each judge model sees; 0: the service default")
    max_tokens_per_turn: int
    budget: Money | None = Field(description="the spending cap; null when none")
    seed: int


class ExportDocument(Part):
    """A debate as exported: what it is, who took part, what was said, how it was judged, what it cost."""

    model_config = ConfigDict(populate_by_name=True)

    schema_id: Literal["urn:debate-engine:schema:debate-export:v1"] = Field(SCHEMA_ID, alias="$schema")
    export_version: Literal[1] = SCHEMA_VERSION
    debate_id: str
    topic: str = Field(description="the motion")
    state: str = Field(description="created, queued, running, completed, failed, cancelled or budget_exceeded")
    end_reason: str
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")
    settings: Settings
    participants: list[Participant]
    rounds: list[Round]
    verdicts: list[Verdict] = Field(description="oldest first; empty until the first verdict")
    votes: Votes | None = Field(description="null when no vote was cast")
    stop: EarlyStop | None = Field(description="null unless a stopping rule ended the debate early")
    cost: Cost


# ==== building from the Debate message ==========================================================


def _label(message: Message, name: str) -> str:
    """An enum field's value as a lower-case word: FINISH_REASON_STOP -> "stop"."""
    enum = message.DESCRIPTOR.fields_by_name[name].enum_type
    value = getattr(message, name)
    enum_value = enum.values_by_number.get(value) if enum is not None else None
    if enum is None or enum_value is None:
        return str(value)
    prefix = "_".join(enum.values[0].name.split("_")[:-1]) + "_"  # FOO_UNSPECIFIED -> FOO_
    return enum_value.name.removeprefix(prefix).lower()


def money(value: common.Money | None) -> Money:
    """The wire's Money as it is: its exact amount ("" is zero), USD when no currency is given."""
    if value is None:
        return Money(currency_code="USD", amount="0")
    return Money(currency_code=value.currency_code or "USD", amount=value.amount or "0")


def _optional_money(value: common.Money) -> Money | None:
    """An optional amount: None when unset or empty."""
    return money(value) if value.amount else None


def tokens(usage: common.TokenUsage) -> Tokens:
    return Tokens(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        cache_creation_prompt_tokens=usage.cache_creation_prompt_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
    )


def quotes(turn: common.Turn) -> list[Quote]:
    """Turn.quotes (evidence): the turn's checked quotes, in order."""
    return [
        Quote(
            text=q.text,
            source_id=q.source_id,
            status=_quote_status(_label(q, "status")),
            start=q.start,
            end=q.end,
            score=q.score,
            best_match=q.best_match,
        )
        for q in turn.quotes
    ]


def _quote_status(label: str) -> QuoteStatus:
    return "verified" if label == "verified" else "partial" if label == "partial" else "unverified"


def human_turn(turn: common.Turn) -> HumanTurn | None:
    """Turn.human (a human seat): how a person's turn was taken; None for a model's turn."""
    if not turn.HasField("human"):
        return None
    return HumanTurn(skipped=turn.human.skipped, skip_reason=turn.human.skip_reason)


def verdict(value: common.Verdict, version: int, current: bool, reason: str = "") -> Verdict:
    return Verdict(
        version=version,
        current=current,
        reason=reason,
        winner=value.winner,
        tie=value.tie,
        confidence=value.confidence,
        summary=value.summary,
        final_scores=[FinalScore(debater=s.debater, score=s.score) for s in value.final_scores],
        judge_models=list(value.judge_models),
        ordering_agreement=value.ordering_agreement,
        judge_agreement=value.judge_agreement,
        simulated=value.simulated,
    )


def verdicts(debate: pb.Debate) -> list[Verdict]:
    """Debate.verdicts (VerdictVersion: version, verdict, reason), oldest first, the last current.
    A debate without versions has its one `verdict`, when rendered."""
    versions = list(debate.verdicts)
    if not versions:
        return [verdict(debate.verdict, 1, True)] if debate.HasField("verdict") else []
    return [
        verdict(
            entry.verdict,
            entry.version or index + 1,
            index == len(versions) - 1,
            _label(entry, "reason") if entry.reason else "",
        )
        for index, entry in enumerate(versions)
    ]


def votes(debate: pb.Debate) -> Votes | None:
    """Debate.votes (VoteTally: counts of a `winner` or a `tie`, and `voters`); None when nobody
    voted."""
    tally = debate.votes
    if not debate.HasField("votes") or not tally.voters:
        return None
    counts = [VoteCount(choice="tie" if c.tie else c.winner, votes=c.votes) for c in tally.counts]
    return Votes(total=tally.voters, counts=counts)


def early_stop(debate: pb.Debate) -> EarlyStop | None:
    """Debate.stop (DebateStop): which rule ended the debate, after which round, and what it
    saved (an estimate); None when no rule stopped it."""
    if not debate.HasField("stop"):
        return None
    stop = debate.stop
    return EarlyStop(
        rule=_label(stop, "rule"),
        after_round=stop.after_round,
        rounds_not_played=stop.rounds_not_played,
        cost_avoided=_optional_money(stop.estimated_cost_avoided),
        reason=stop.reason,
    )


def turn(value: common.Turn) -> Turn:
    return Turn(
        participant=value.participant,
        model=value.model,
        text=value.text,
        finish_reason=_label(value, "finish_reason"),
        attempt=value.attempt,
        simulated=value.simulated,
        usage=tokens(value.usage),
        cost=money(value.cost),
        quotes=quotes(value),
        human=human_turn(value),
    )


def assessment(value: common.RoundAssessment) -> Assessment:
    return Assessment(
        leader=value.leader,
        tie=value.tie,
        rationale=value.rationale,
        scores=[
            DebaterScore(
                debater=s.debater,
                criteria=[CriterionScore(criterion=c.criterion, score=c.score) for c in s.criteria],
                weighted_total=s.weighted_total,
                rationale=s.rationale,
            )
            for s in value.scores
        ],
        judge_models=list(value.judge_models),
        ordering_agreement=value.ordering_agreement,
        judge_agreement=value.judge_agreement,
        simulated=value.simulated,
    )


def round_(value: pb.Round) -> Round:
    return Round(
        number=value.round_number,
        turns=[turn(t) for t in value.turns],
        assessment=assessment(value.assessment) if value.HasField("assessment") else None,
    )


def cost_line(value: common.CostLine) -> CostLine:
    return CostLine(
        key=value.key,
        calls=value.calls,
        usage=tokens(value.usage),
        cost=money(value.cost),
        price_source=value.price_source,
    )


def cost(value: common.DebateCost) -> Cost:
    budget = None
    if value.HasField("budget") and value.budget.cap.amount:
        b = value.budget
        budget = Budget(
            cap=money(b.cap), spent=money(b.spent), reserved=money(b.reserved), remaining=money(b.remaining)
        )
    return Cost(
        total=money(value.total),
        usage=tokens(value.usage),
        by_participant=[cost_line(line) for line in value.by_participant],
        by_role=[cost_line(line) for line in value.by_role],
        by_round=[cost_line(line) for line in value.by_round],
        by_model=[cost_line(line) for line in value.by_model],
        budget=budget,
    )


def _rfc3339(message: Message, name: str) -> str:
    if not message.HasField(name):
        return ""
    return str(getattr(message, name).ToJsonString())


def settings(config: common.DebateConfig) -> Settings:
    return Settings(
        round_limit=config.format.round_limit,
        turn_order="sequential" if config.format.turn_order == common.TURN_ORDER_SEQUENTIAL else "simultaneous",
        judge_models=list(config.judge.models),
        orderings=config.judge.orderings,
        max_tokens_per_turn=config.max_tokens_per_turn,
        budget=_optional_money(config.budget),
        seed=config.seed,
    )


def build_document(debate: pb.Debate) -> ExportDocument:
    """The export model of a debate as GetDebate returns it, in any state."""
    config = debate.config
    return ExportDocument(
        debate_id=debate.debate_id,
        topic=config.topic,
        state=_label(debate, "state"),
        end_reason=debate.end_reason,
        created_at=_rfc3339(debate, "create_time"),
        updated_at=_rfc3339(debate, "update_time"),
        settings=settings(config),
        participants=[
            Participant(name=p.name, model=p.model, persona=p.persona, stance=p.stance, human=p.model == "human")
            for p in config.participants
        ],
        rounds=[round_(r) for r in debate.rounds],
        verdicts=verdicts(debate),
        votes=votes(debate),
        stop=early_stop(debate),
        cost=cost(debate.cost),
    )


# ==== reading a turn's text with its quotes ======================================================


# Quote marks a debater may put inside its <quote> tag; the exports set their own around a quote.
_QUOTE_MARKS = "\"'\u201c\u201d\u201e\u201f\u2018\u2019\u201a\u201b\u00ab\u00bb\u2039\u203a"


def unquoted(words: str) -> str:
    """A quote's words without the quote marks (straight, curly, guillemets) and spaces around
    them, since an export sets its own marks: '“footfall rose”' -> 'footfall rose'. Words that are
    only marks are kept as written."""
    return words.strip().strip(_QUOTE_MARKS).strip() or words


def segments(value: Turn) -> list[tuple[str, Quote | None]]:
    """The turn's text cut at its quotes: (plain text, None) and (the quote's words without their
    own quote marks, `unquoted`, the quote) in order, each quote replacing its marked span (marks
    included). A quote whose span does not fit
    the text, or overlaps the one before, stays out of the text (it is still listed with the turn)."""
    out: list[tuple[str, Quote | None]] = []
    at = 0
    for quote in sorted(value.quotes, key=lambda q: q.start):
        if not at <= quote.start < quote.end <= len(value.text):
            continue
        if quote.start > at:
            out.append((value.text[at : quote.start], None))
        out.append((unquoted(quote.text), quote))
        at = quote.end
    if at < len(value.text) or not out:
        out.append((value.text[at:], None))
    return out
