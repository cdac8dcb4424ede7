"""The judge's domain types: what it is asked (cases) and what it answers (assessments, verdicts).

Plain dataclasses, no protobuf and no grpc: the servicer converts, `validation` checks and
cleans, `engine.Judge` decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.debate_rules import ModelRules
from services.common.limits import MAX_JUDGE_ORDERINGS, MAX_JUDGE_PANEL
from services.common.usage import Usage

DEFAULT_CRITERIA: tuple[tuple[str, str], ...] = (
    ("argument_strength", "How sound, relevant and well reasoned the case for the debater's stance is."),
    ("evidence", "Use of concrete facts, figures, examples or sources that support the claims made."),
    ("rebuttal", "How directly and effectively the debater answers the other debaters' arguments."),
    ("clarity", "How clear, well organised and concise the writing is."),
)


@dataclass(frozen=True, slots=True)
class Debater:
    name: str
    stance: str = ""
    persona: str = ""


@dataclass(frozen=True, slots=True)
class QuoteCheck:
    """A marked quote of a turn with the orchestrator's check of it against the sources."""

    text: str
    source_id: str  # the document the debater named ("" when none)
    status: str  # "verified" | "partial" | "unverified" (services.common.quotes.status_name)
    score: float  # 0..100 similarity of the best match
    best_match: str = ""  # the closest passage of the sources, as written there


@dataclass(frozen=True, slots=True)
class Source:
    """A source document of the debate, shown to the judge when the debate allows it."""

    id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Turn:
    debater: str
    text: str
    quotes: tuple[QuoteCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class Round:
    number: int
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    # Raw as asked; after validation, normalised so the weights of a rubric sum to 1.
    weight: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class PanelRequest:
    """A request's judge configuration, as given (unvalidated)."""

    models: tuple[str, ...] = ()
    orderings: int = 0
    criteria: tuple[Criterion, ...] = ()


@dataclass(frozen=True, slots=True)
class Panel:
    """A validated judge configuration: models, the orderings each sees, a normalised rubric."""

    models: tuple[str, ...]
    orderings: tuple[tuple[int, ...], ...]  # permutations of debater indexes
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True, slots=True)
class PriorAssessment:
    """What a verdict uses of an earlier round assessment."""

    round_number: int
    totals: dict[str, float]


@dataclass(frozen=True, slots=True)
class RoundCase:
    debate_id: str
    topic: str
    round_number: int
    debaters: tuple[Debater, ...]
    turns: tuple[Turn, ...]
    panel: PanelRequest | Panel
    request_id: str = ""
    seed: int | None = None
    sources: tuple[Source, ...] = ()  # empty when the judge does not see them
    assess_consensus: bool = False  # also ask whether the stated positions converged


@dataclass(frozen=True, slots=True)
class VerdictCase:
    debate_id: str
    topic: str
    debaters: tuple[Debater, ...]
    rounds: tuple[Round, ...]
    assessments: tuple[PriorAssessment, ...]
    panel: PanelRequest | Panel
    request_id: str = ""
    seed: int | None = None
    sources: tuple[Source, ...] = ()  # empty when the judge does not see them


@dataclass(frozen=True, slots=True)
class JudgePolicy:
    """The service's limits and defaults (built from settings by the composition root)."""

    default_models: tuple[str, ...] = ("sim/judge",)
    # Which judge models may be called: allowed, priced, their keys set (debate_rules.py).
    model_rules: ModelRules = field(default_factory=lambda: ModelRules(lambda model: model.startswith("sim/")))
    default_orderings: int = 0  # 0: one ordering per debater (every debater shown first once)
    max_orderings: int = MAX_JUDGE_ORDERINGS
    max_panel: int = MAX_JUDGE_PANEL
    max_debaters: int = 8
    max_rounds: int = 50
    max_criteria: int = 10
    max_repairs: int = 2
    max_output_tokens: int = 2048
    temperature: float | None = 0.0
    # Totals closer than this (0..10 scale) are a tie, in leaders and in agreement.
    tie_margin: float = 0.25
    # A verdict margin at which confidence stops growing with the margin.
    decisive_margin: float = 1.5
    # Share of a verdict's final score taken from the round assessments (rest: verdict calls).
    verdict_round_weight: float = 0.5
    max_turn_chars: int = 12_000
    max_transcript_chars: int = 200_000


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class JudgeCall:
    """One provider call a judge request made: a ballot's first answer or one of its repairs.

    Every call is billed, so every call is one row of the ledger under its own `request_id`,
    `{ballot key}/attempts/{attempt}`. `usage` is this call's alone; it is `estimated` (our
    tokenizer's count) when the call was cut before its end. `attempts` is the number of answers
    its ballot received (kept for older readers, which saw one call per ballot).
    """

    model: str  # the model that answered (a fallback may differ from the one asked for)
    ordering: tuple[str, ...]  # debater names, in the order shown
    usage: Usage
    attempts: int
    request_id: str
    simulated: bool
    attempt: int = 1  # 1 for the ballot's first answer, 2 and more for repairs
    accepted: bool = False  # the answer was valid and its ballot took it
    # An accepted answer's weighted total (0..10) by debater name, for judge audits; else empty.
    totals: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DebaterScore:
    debater: str
    criteria: dict[str, float]  # criterion name -> 0..10, in rubric order
    weighted_total: float
    rationale: str


@dataclass(frozen=True, slots=True)
class RoundAssessment:
    round_number: int
    scores: tuple[DebaterScore, ...]
    leader: str  # "" when tie
    tie: bool
    rationale: str
    judge_models: tuple[str, ...]
    ordering_agreement: float
    judge_agreement: float
    calls: tuple[JudgeCall, ...]  # every provider call, ballot by ballot, repairs included
    simulated: bool
    confidence: float = 0.0  # 0..1, as a verdict's (see Judge.evaluate_round)
    consensus: bool = False  # a majority of ballots read converged positions (only when asked)


@dataclass(frozen=True, slots=True)
class Verdict:
    winner: str  # "" when tie
    tie: bool
    final_scores: dict[str, float]
    confidence: float
    summary: str
    judge_models: tuple[str, ...]
    ordering_agreement: float
    judge_agreement: float
    calls: tuple[JudgeCall, ...]  # every provider call, ballot by ballot, repairs included
    simulated: bool


@dataclass(frozen=True, slots=True)
class Ballot:
    """One (model, ordering)'s valid answer, mapped back from labels to debater names, with
    every call it took (the refused answers first, the accepted one last)."""

    model: str
    ordering_index: int
    scores: dict[str, dict[str, float]]  # debater -> criterion -> 0..10
    rationales: dict[str, str]
    summary: str
    calls: tuple[JudgeCall, ...] = field(compare=False)
    consensus: bool | None = None  # the answer's "consensus", when the prompt asked for it

    @property
    def simulated(self) -> bool:
        return any(c.simulated for c in self.calls)
