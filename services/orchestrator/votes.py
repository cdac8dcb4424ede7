"""Human votes on a debate (issue 18 part 4): who may vote, on what, and how votes are counted.

- Who: any caller of the tenant that owns the debate (another tenant's debate does not exist
  for it: NOT_FOUND, from `Engine.get_row`). Authentication names a tenant, not a person (an
  API key or the gateway's header maps to a tenant; services/common/auth.py), so the voter is
  the `voter` the request names, a name unique within the tenant that its callers are trusted
  to give honestly (a page keeps one per browser). Votes are counted per (debate, voter).
- On what: a RUNNING or COMPLETED debate (VOTABLE), for one participant by name or for a tie.
  Any other state answers FAILED_PRECONDITION: nobody watched a debate that has not started,
  and one that failed or was cancelled has no verdict to weigh the votes against.
- Once: one vote per voter per debate; a repeated vote replaces the earlier one (the store's
  primary key (debate_id, voter)). The vote is committed before the call answers.

A bad request (voter or choice) answers INVALID_ARGUMENT with one field violation per problem
and stores nothing.

A tally counts the votes of each choice; its majority is the choice with more than half of
the votes (a strict majority), or none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.errors import FailedPrecondition, Violations
from services.orchestrator.events import EventHub
from services.orchestrator.run import S
from services.orchestrator.store import DebateRow, Store

VOTABLE = (S.DEBATE_STATE_RUNNING, S.DEBATE_STATE_COMPLETED)
VOTER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")

Choice = tuple[str, bool]  # (winner, tie): (participant name, False) or ("", True)
TIE: Choice = ("", True)


@dataclass(frozen=True, slots=True)
class Tally:
    """The votes of a debate: `counts` (choice -> votes) for each participant in config order,
    zeros included, then the tie; `voters`, the number of votes; `majority`, the choice with
    more than half of them, or None."""

    counts: tuple[tuple[Choice, int], ...]
    voters: int
    majority: Choice | None

    def to_proto(self) -> pb.VoteTally:
        tally = pb.VoteTally(voters=self.voters, has_majority=self.majority is not None)
        for (winner, tie), votes in self.counts:
            tally.counts.add(winner=winner, tie=tie, votes=votes)
        if self.majority is not None:
            tally.majority_winner, tally.majority_tie = self.majority
        return tally


def tally(participants: Sequence[str], counts: Mapping[Choice, int]) -> Tally:
    """The tally of `counts` ((winner, tie) -> votes) for a debate of `participants`."""
    choices: list[Choice] = [(name, False) for name in participants] + [TIE]
    lines = tuple((choice, counts.get(choice, 0)) for choice in choices)
    voters = sum(counts.values())
    majority = next((choice for choice, n in counts.items() if 2 * n > voters), None)
    return Tally(lines, voters, majority)


def check_vote(row: DebateRow, voter: str, winner: str, tie: bool) -> None:
    """Raises InvalidArgument (a violation per problem) for a voter or choice that is not valid
    for the debate, then FailedPrecondition when the debate is not in a state that takes votes."""
    v = Violations()
    if not VOTER_PATTERN.match(voter):
        v.add("voter", "must be 1 to 128 characters: letters, digits and ._@:- (starting with a letter or digit)")
    names = [p.name for p in row.config.participants]
    if tie and winner:
        v.add("winner", "must be empty when tie is set")
    elif not tie and not winner:
        v.add("winner", "name a participant, or set tie")
    elif not tie and winner not in names:
        v.add("winner", f"is not a participant of this debate (one of: {', '.join(names)})")
    v.raise_if_any()
    if row.state not in VOTABLE:
        raise FailedPrecondition(
            f"debate {row.debate_id!r} is {pb.DebateState.Name(row.state)}: votes are taken on a RUNNING or "
            "COMPLETED debate",
            reason="DEBATE_NOT_VOTABLE",
            metadata={"state": pb.DebateState.Name(row.state)},
        )


class Votes:
    """Casts and counts the votes of debates, in the store the debates are in."""

    def __init__(self, store: Store, hub: EventHub):
        self.store = store
        self.hub = hub

    def cast(self, row: DebateRow, voter: str, winner: str, tie: bool) -> tuple[Tally, bool]:
        """Stores `voter`'s vote on the (caller's) debate `row`, committed, replacing the voter's
        earlier one: the debate's tally after it, and whether a vote was replaced. Raises
        InvalidArgument or FailedPrecondition (check_vote) and then stores nothing."""
        check_vote(row, voter, winner, tie)
        replaced = self.store.put_vote(row.debate_id, voter, "" if tie else winner, tie, time.time_ns())
        self.hub.commit()
        return self.tally(row), replaced

    def tally(self, row: DebateRow) -> Tally:
        """The debate's votes, counted."""
        return tally([p.name for p in row.config.participants], self.store.vote_counts(row.debate_id))
