"""The judge's Prometheus metrics (made by the composition root when METRICS_PORT is set).

| metric | type | labels |
| --- | --- | --- |
| judge_outputs_invalid_total | counter | gen_ai_request_model: answers refused as invalid structured output |
| judge_repairs_total | counter | gen_ai_request_model: repair requests sent after a refused answer |
| judge_ballots_failed_total | counter | gen_ai_request_model: ballots with no valid answer within the repairs |
| judge_ordering_agreement | histogram | kind (round, verdict): agreement of one model's orderings, 0 to 1 |
| judge_panel_agreement | histogram | kind (round, verdict): agreement of the panel's models, 0 to 1 |

The model label is a judge model that the pre-spend rules passed (allowed and priced).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.common.metrics import LLMMetrics, ServiceMetrics

AGREEMENT_BUCKETS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class JudgeMetrics:
    def __init__(self, metrics: ServiceMetrics):
        registry = metrics.registry
        self.llm = LLMMetrics(registry)
        self.outputs_invalid = Counter(
            "judge_outputs_invalid_total",
            "Judge answers refused as invalid structured output (each is billed, and repaired while repairs remain).",
            ("gen_ai_request_model",),
            registry=registry,
        )
        self.repairs = Counter(
            "judge_repairs_total",
            "Repair requests sent to a judge model after it gave an invalid answer.",
            ("gen_ai_request_model",),
            registry=registry,
        )
        self.ballots_failed = Counter(
            "judge_ballots_failed_total",
            "Ballots (one model, one ordering) that gave no valid answer within MAX_REPAIRS repairs.",
            ("gen_ai_request_model",),
            registry=registry,
        )
        self.ordering_agreement = Histogram(
            "judge_ordering_agreement",
            "Agreement (0 to 1) of the rankings one judge model gave under different orderings of the debaters.",
            ("kind",),
            buckets=AGREEMENT_BUCKETS,
            registry=registry,
        )
        self.panel_agreement = Histogram(
            "judge_panel_agreement",
            "Agreement (0 to 1) of the rankings of the panel's judge models.",
            ("kind",),
            buckets=AGREEMENT_BUCKETS,
            registry=registry,
        )

    def agreement(self, kind: str, ordering: float, panel: float) -> None:
        """`kind`: "round" or "verdict"."""
        self.ordering_agreement.labels(kind).observe(ordering)
        self.panel_agreement.labels(kind).observe(panel)
