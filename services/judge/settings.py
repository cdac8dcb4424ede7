"""Settings of the judge service (environment: JUDGE_MAX_REPAIRS=3, JUDGE_DEFAULT_MODELS=sim/judge, ...)."""

import json
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.common.debate_rules import ModelRules
from services.common.limits import MAX_JUDGE_ORDERINGS, MAX_JUDGE_PANEL
from services.common.llm import settings as llm_settings
from services.common.settings import SERVICE_TENANT, ServiceSettings
from services.judge.model import JudgePolicy


# The mixin is reached through its module so this module defines exactly one *Settings class
# besides ServiceSettings (tests and tools look the service's settings class up by name).
class JudgeSettings(llm_settings.LLMSettings, ServiceSettings):
    port: int = Field(50052, ge=0, le=65535)
    # An internal service: only the suite's own services (the tenant of their service key) may call it.
    internal_callers: str = Field(SERVICE_TENANT, description="tenants that may call this service (empty: any)")

    judge_default_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["sim/judge"], description="judge panel when a request names no models"
    )
    judge_default_orderings: int = Field(
        0, ge=0, description="orderings per judge model when a request gives none (0: one per debater)"
    )
    judge_max_orderings: int = Field(
        MAX_JUDGE_ORDERINGS, ge=1, description="most orderings per judge model a request may ask for"
    )
    judge_max_panel: int = Field(MAX_JUDGE_PANEL, ge=1, description="most judge models in one panel")
    judge_max_debaters: int = Field(8, ge=2, le=26)
    judge_max_repairs: int = Field(2, ge=0, description="repair prompts after a malformed judge answer")
    judge_max_output_tokens: int = Field(2048, ge=64, description="completion cap of one judge answer")
    judge_temperature: float = Field(0.0, ge=0, le=2)
    judge_tie_margin: float = Field(0.25, ge=0, le=10, description="totals this close (0..10) are a tie")
    judge_decisive_margin: float = Field(
        1.5, gt=0, le=10, description="verdict margin from which confidence no longer grows with the margin"
    )
    judge_verdict_round_weight: float = Field(
        0.5, ge=0, le=1, description="share of a final score taken from the round assessments"
    )
    judge_max_turn_chars: int = Field(12_000, ge=200, description="a longer turn is cut before judging")
    judge_max_transcript_chars: int = Field(200_000, ge=1000, description="cap of a verdict's whole transcript")

    @field_validator("judge_default_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        return value

    def policy(self) -> JudgePolicy:
        return JudgePolicy(
            default_models=tuple(self.judge_default_models),
            model_rules=ModelRules(self.model_allowed),
            default_orderings=self.judge_default_orderings,
            max_orderings=self.judge_max_orderings,
            max_panel=self.judge_max_panel,
            max_debaters=self.judge_max_debaters,
            max_repairs=self.judge_max_repairs,
            max_output_tokens=self.judge_max_output_tokens,
            temperature=self.judge_temperature,
            tie_margin=self.judge_tie_margin,
            decisive_margin=self.judge_decisive_margin,
            verdict_round_weight=self.judge_verdict_round_weight,
            max_turn_chars=self.judge_max_turn_chars,
            max_transcript_chars=self.judge_max_transcript_chars,
        )
