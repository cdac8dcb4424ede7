"""Accounting's Prometheus metrics (made by the composition root when METRICS_PORT is set).

| metric | type | labels |
| --- | --- | --- |
| accounting_ledger_writes_total | counter | usage rows written to the ledger |
| accounting_ledger_duplicates_total | counter | records of a request_id already in the ledger (absorbed) |
| accounting_reservations_total | counter | outcome: granted, refused (over the budget), duplicate |
| accounting_cost_usd_total | counter | gen_ai_request_model, role (debater, judge, verdict): the USD priced |

The cost is a float for the dashboard; the ledger keeps the exact decimal amounts. The model label
is a model the price book priced (the ledger refuses any other), as sent by the suite's own
services after their allowlist passed it.
"""

from __future__ import annotations

from prometheus_client import Counter

from services.common.metrics import ServiceMetrics


class AccountingMetrics:
    def __init__(self, metrics: ServiceMetrics):
        registry = metrics.registry
        self.ledger_writes = Counter(
            "accounting_ledger_writes_total", "Usage rows written to the ledger.", registry=registry
        )
        self.ledger_duplicates = Counter(
            "accounting_ledger_duplicates_total",
            "Usage records whose request_id the ledger already had: absorbed, nothing written or charged again.",
            registry=registry,
        )
        self.reservations = Counter(
            "accounting_reservations_total",
            "Budget reservations by outcome: granted, refused (it would pass the debate's cap), duplicate.",
            ("outcome",),
            registry=registry,
        )
        # Each outcome from 0, so the first refusal is an increase (an alert on
        # increase(...{outcome="refused"}[...]) sees it; a series born at 1 would show none).
        for outcome in ("granted", "refused", "duplicate"):
            self.reservations.labels(outcome)
        self.cost_usd = Counter(
            "accounting_cost_usd_total",
            "USD priced for the usage written to the ledger, by model and role (a float; the ledger is exact).",
            ("gen_ai_request_model", "role"),
            registry=registry,
        )
