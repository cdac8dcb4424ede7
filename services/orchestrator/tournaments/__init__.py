"""Tournaments: a round robin of side-swapped matches between models, played as ordinary debates
through the debate engine (its validation, scheduler, limits, budgets and restarts), rated by
Bradley-Terry.

- records.py   the tables (schema version "tournaments") behind the orchestrator's store;
- plan.py      a tournament's config checked and its matches and debate configs laid out;
- results.py   a debate's verdict as a leg's result, two legs as a match's result;
- ratings.py   Bradley-Terry ratings (choix), ties as half a win each, bootstrap intervals;
- runner.py    `Tournaments`, the domain API the servicer calls, and each tournament's task.

- servicer.py  the gRPC transport (TournamentService), thin over runner.py; no other module
  here imports grpc.
"""
