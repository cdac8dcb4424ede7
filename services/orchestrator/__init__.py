"""The orchestrator: the public API (debate.orchestrator.v1) and the engine behind it.

    server.py     composition root: settings, store, event hub, scheduler, clients, engine, servicer
    servicer.py   gRPC transport only (protobuf in and out; events sent as pre-serialised frames)
    transport.py  the wire framing of StreamDebateEvents and the servicer's registration
    config.py     validation and normalisation of a DebateConfig (one field violation per problem)
    scheduler.py  running limit and bounded FIFO queue
    engine.py     the domain API: create, read and list debates (per tenant); composes the three below
    lifecycle.py  start or queue, play round by round, resume after a crash, cancel, shutdown, endings
    turns.py      a debater's turn: reserve, stream, store, record usage; calls cut short
    judging.py    round assessments and the verdict, stored, recorded, then announced
    stopping.py   stopping rules: a debate ended early (judge decided, consensus), durably
    run.py        one running debate's state, shared by the three
    context.py    the sliding window each debater sees
    events.py     the event hub: coalescing, commits, subscribers
    debate_log.py one debate's log as subscribers read it (event bodies, batches)
    store.py      the store of debates, turns, attempts, assessments, verdicts and events; SQLite (WAL)
    store_postgres.py  the same store in PostgreSQL (DATABASE_URL)
    schema.py     their schema, version by version, in both dialects
    peers.py      the judge and accounting services as two small protocols (what the engine sees)
    clients.py    their gRPC implementations (deadlines, retries, errors mapped to domain errors)
    export/       a debate as one document (Markdown, JSON with a published schema, HTML): ExportDebate

In-process stand-ins for the judge, accounting and the models are test support
(tests/support/orchestrator_fakes.py).

What a crash (SIGKILL) can lose: only what no subscriber has seen and no ledger row depends
on, i.e. the token deltas of in-flight turns since the last tick (at most `coalesce_ms`) and
any event appended in that tick. Those attempts are void after the restart: their
reservations are released, a TurnFailed(ORCHESTRATOR_RESTARTED, will_retry) is logged, and
the turns run again as the next attempt under a new idempotency key. Completed turns are
never generated again, and their usage is recorded exactly once (RecordUsage is idempotent by
the turn's key and is re-sent after a restart if it was not confirmed).
"""
