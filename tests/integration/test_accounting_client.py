"""The orchestrator's accounting client (services/orchestrator/clients.py) against the real
accounting service on port 0, on each ledger backend: usage records made together go as one
BatchRecordUsage call, and each caller gets its own outcome, exactly as from a call of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as pb
from debate.accounting.v1 import accounting_pb2_grpc
from debate.common.v1 import common_pb2

from services.accounting.server import build_service
from services.accounting.settings import AccountingSettings
from services.accounting.store import UsageRow
from services.common import errors
from services.orchestrator.clients import GrpcAccounting, _domain_error
from services.orchestrator.settings import OrchestratorSettings

SONNET = "claude-3-5-sonnet-20241022"


def record(request_id: str, *, tokens=(1000, 500), model=SONNET, **extra) -> pb.RecordUsageRequest:
    return pb.RecordUsageRequest(
        request_id=request_id,
        debate_id="d1",
        participant="pro",
        role=common_pb2.ROLE_DEBATER,
        round_number=1,
        model=model,
        attempt=1,
        usage=common_pb2.TokenUsage(prompt_tokens=tokens[0], completion_tokens=tokens[1]),
        **extra,
    )


@pytest.fixture
async def service(ledger_backend):
    svc = await build_service(AccountingSettings(port=0, **ledger_backend.settings()))
    await svc.start()
    yield svc
    await svc.stop(grace=0)


@pytest.fixture
def ledger(service):
    """The service's domain object (its commit count), in this process."""
    return service.bindings[0].servicer.accounting


@pytest.fixture
async def client(service):
    accounting = GrpcAccounting(OrchestratorSettings(accounting_service_addr=service.address, rpc_timeout_seconds=5))
    yield accounting
    await accounting.close()


async def test_records_made_together_go_as_one_call_each_caller_with_its_own_reply(client, ledger, ledger_backend):
    commits = ledger.usage_commits
    replies = await asyncio.gather(*(client.record_usage(record(f"u{i}", tokens=(1000 + i, 0))) for i in range(12)))
    assert client.batches_sent == 1 and ledger.usage_commits == commits + 1
    assert [r.record.request_id for r in replies] == [f"u{i}" for i in range(12)]
    assert [r.record.usage.prompt_tokens for r in replies] == [1000 + i for i in range(12)]
    assert not any(r.duplicate for r in replies) and ledger_backend.count() == 12
    # One at a time, each is a batch of one.
    for i in range(3):
        alone = await client.record_usage(record(f"v{i}"))
        assert alone.record.request_id == f"v{i}"
    assert client.batches_sent == 4 and ledger_backend.count() == 15


async def test_each_caller_gets_the_error_a_call_of_its_own_would_raise(client, service, ledger_backend):
    bad = record("bad", tokens=(-5, 10))
    unpriced = record("unpriced", model="gpt-99-imaginary")
    outcomes = await asyncio.gather(
        client.record_usage(record("good")),
        client.record_usage(bad),
        client.record_usage(unpriced),
        client.record_usage(record("good")),  # the same key twice: one row, the second a duplicate
        return_exceptions=True,
    )
    assert client.batches_sent == 1
    good, bad_error, unpriced_error, again = outcomes
    assert isinstance(good, pb.RecordUsageResponse) and isinstance(again, pb.RecordUsageResponse)
    assert (good.duplicate, again.duplicate, good.record) == (False, True, again.record)
    # The same type, reason and message as RecordUsage alone, mapped by the client as before.
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = accounting_pb2_grpc.AccountingServiceStub(channel)
        for request, error in ((bad, bad_error), (unpriced, unpriced_error)):
            with pytest.raises(grpc.aio.AioRpcError) as alone:
                await stub.RecordUsage(request, timeout=5)
            expected = _domain_error("accounting", alone.value)
            assert (type(error), error.reason, error.message) == (type(expected), expected.reason, expected.message)
    assert isinstance(bad_error, errors.FailedPrecondition) and "usage.prompt_tokens" in bad_error.message
    assert isinstance(unpriced_error, errors.NotFound) and unpriced_error.reason == "MODEL_NOT_PRICED"
    assert ledger_backend.count() == 1


class SlowCommits:
    """The service's store, with each write held on the ledger thread until `release` is set (so
    the RPC's deadline passes while the rows are still being written; they are written after)."""

    def __init__(self, store):
        self.store = store
        self.release = threading.Event()
        self.written = threading.Event()

    def record(self, row: UsageRow):
        self.release.wait(10)
        try:
            return self.store.record(row)
        finally:
            self.written.set()

    def record_many(self, rows: Sequence[UsageRow]):
        self.release.wait(10)
        try:
            return self.store.record_many(rows)
        finally:
            self.written.set()

    def __getattr__(self, name):
        return getattr(self.store, name)


async def test_a_failed_batch_call_reaches_every_caller_and_a_retry_records_nothing_twice(
    service, ledger, ledger_backend
):
    slow = SlowCommits(ledger.store)
    ledger.store = slow
    client = GrpcAccounting(OrchestratorSettings(accounting_service_addr=service.address, rpc_timeout_seconds=0.5))
    try:
        requests = [record(f"u{i}") for i in range(4)]
        outcomes = await asyncio.gather(*(client.record_usage(r) for r in requests), return_exceptions=True)
        assert client.batches_sent == 1
        assert all(isinstance(o, errors.DeadlineExceeded) for o in outcomes), outcomes
        assert len({id(o) for o in outcomes}) == 4  # each caller its own error
        slow.release.set()  # the rows are written after all: the answer was lost, not the records
        assert await asyncio.to_thread(slow.written.wait, 10)
        await asyncio.sleep(0.2)
        retried = await asyncio.gather(*(client.record_usage(r) for r in requests))
        assert [r.duplicate for r in retried] == [True] * 4
        assert ledger_backend.count() == 4
    finally:
        slow.release.set()
        await client.close()


async def test_a_cancelled_caller_leaves_the_others_answered(client, ledger_backend):
    tasks = [asyncio.ensure_future(client.record_usage(record(f"u{i}"))) for i in range(3)]
    await asyncio.sleep(0)  # each is waiting for its answer; the batch is not sent yet
    tasks[1].cancel()  # its item is left out of the batch
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [d.record.request_id for d in (done[0], done[2])] == ["u0", "u2"]
    assert ledger_backend.count() == 2 and client.batches_sent == 1


async def test_closing_the_client_answers_every_waiting_caller(client, service, ledger):
    slow = SlowCommits(ledger.store)
    ledger.store = slow
    try:
        waiting = [asyncio.ensure_future(client.record_usage(record(f"u{i}"))) for i in range(3)]
        await asyncio.sleep(0.2)  # the batch is in flight, held by the ledger
        await client.close()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, errors.DomainError) for o in outcomes), outcomes
    finally:
        slow.release.set()
