"""SIGKILL the orchestrator process mid-debate, start it again: the debate completes with no
completed turn generated again, no double charge, the calls the kill interrupted charged as
estimates, and an event log without gap or repeat that a subscriber resumes with after_sequence."""

from __future__ import annotations

import os
import signal
import subprocess

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2 as acc
from debate.accounting.v1 import accounting_pb2_grpc as accg
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.auth import bearer_metadata
from tests.helpers import ROOT
from tests.integration.test_orchestrator_suite import (
    Client,
    debate_config,
    start_suite,
    stop_suite,
    wait_serving,
)

pytestmark = pytest.mark.e2e

PACED = {"SIM_FIRST_TOKEN_LATENCY": "0.02", "SIM_TOKENS_PER_SECOND": "400"}


async def test_sigkill_mid_debate_then_restart_completes_without_regeneration_or_double_charge(tmp_path):
    config, procs = start_suite(str(tmp_path), PACED)
    orchestrator = next(p for p, s in zip(procs, config.process_specs(), strict=False) if s.name == "orchestrator")
    spec = next(s for s in config.process_specs() if s.name == "orchestrator")
    client = Client(config.orchestrator_address)
    try:
        cfg = debate_config(n=2, rounds=3, max_tokens_per_turn=80)
        debate_id, _ = await client.create_and_start(cfg)
        before: list[pb.DebateEvent] = []
        call = client.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id))
        async for response in call:
            event = response.event
            before.append(event)
            if event.WhichOneof("payload") == "token_delta" and event.token_delta.round_number == 2:
                break  # round 1 done, round 2 streaming
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait()
        call.cancel()
        await client.channel.close()

        with open(os.path.join(str(tmp_path), "orchestrator.log"), "ab") as log:  # noqa: ASYNC230
            procs.append(
                subprocess.Popen(
                    spec.argv,
                    cwd=ROOT,
                    env={**os.environ, **spec.env},  # noqa: ASYNC220
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_serving(spec.health_address, spec.health_service)
        client = Client(config.orchestrator_address)
        after = await client.events(debate_id, after=before[-1].sequence)
        seen = [e for e in before + after if e.WhichOneof("payload") != "heartbeat"]

        assert seen[-1].WhichOneof("payload") == "debate_completed"
        assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))  # no gap, no repeat
        replay = await client.events(debate_id)
        assert [e.SerializeToString() for e in replay] == [e.SerializeToString() for e in seen]

        completed_before = {
            (e.turn_completed.turn.round_number, e.turn_completed.turn.participant): e.turn_completed.turn.text
            for e in before
            if e.WhichOneof("payload") == "turn_completed"
        }
        assert completed_before, "the kill came after at least one completed turn"
        restarted = [
            (e.turn_started.round_number, e.turn_started.participant)
            for e in after
            if e.WhichOneof("payload") == "turn_started"
        ]
        assert not set(restarted) & set(completed_before)  # nothing completed is generated again
        voided = [e.turn_failed for e in after if e.WhichOneof("payload") == "turn_failed"]
        assert voided and all(f.reason == "ORCHESTRATOR_RESTARTED" and f.will_retry for f in voided)
        retried = [
            e.turn_started
            for e in after
            if e.WhichOneof("payload") == "turn_started" and e.turn_started.round_number == 2
        ]
        assert retried and all(t.attempt == 2 for t in retried)  # a voided attempt runs again under a new key
        debate = await client.get(debate_id)
        assert debate.state == pb.DEBATE_STATE_COMPLETED
        final = {(t.round_number, t.participant): t.text for r in debate.rounds for t in r.turns}
        assert len(final) == 6 and all(final[k] == text for k, text in completed_before.items())

        async with grpc.aio.insecure_channel(config.address(config.accounting_port)) as channel:
            cost = (
                await accg.AccountingServiceStub(channel).GetDebateCost(
                    acc.GetDebateCostRequest(debate_id=debate_id), metadata=bearer_metadata(config.service_api_key)
                )
            ).cost
        debater_calls = sum(line.calls for line in cost.by_participant if line.key.startswith("debater"))
        # One ledger row per turn, nothing charged twice; and one for each void attempt whose text
        # had reached the log before the kill: its provider had answered and bills it (an estimate).
        streamed = {
            (e.token_delta.round_number, e.token_delta.participant, e.token_delta.attempt)
            for e in replay
            if e.WhichOneof("payload") == "token_delta"
        }
        charged = [f for f in voided if (f.round_number, f.participant, f.attempt) in streamed]
        assert charged, "the kill came while round 2 streamed text that had reached the log"
        assert all("charged as an estimate" in f.message for f in charged)
        assert debater_calls == 6 + len(charged)
        assert cost.total == debate.cost.total
    finally:
        await client.channel.close()
        stop_suite(procs)
