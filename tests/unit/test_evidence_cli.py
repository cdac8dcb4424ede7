"""Evidence in the terminal client: `--source`/`--hide-sources-from-judge` into the config, and
each quote's mark under a finished turn in the live view."""

from __future__ import annotations

import argparse
import io

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.evidence import add_source_flags, apply_sources, parse_source
from services.client.style import Style
from services.client.view import DebateView
from services.common.quotes import SourceIndex

DOC = "Air quality improved on every measured street, with nitrogen dioxide falling by a third."
PLAIN = Style(color=False, unicode=True, width=100, live=False)


def test_source_flags_put_the_files_in_the_config(tmp_path) -> None:
    path = tmp_path / "study.txt"
    path.write_text(DOC, encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_source_flags(parser)
    args = parser.parse_args(["--source", f"doc-1={path}", "--hide-sources-from-judge"])
    config = c.DebateConfig()
    apply_sources(args, config)
    assert [(s.id, s.title, s.text) for s in config.sources] == [("doc-1", "study.txt", DOC)]
    assert config.evidence.hide_sources_from_judge
    with pytest.raises(argparse.ArgumentTypeError):
        parse_source(f"no-equals-{path}")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_source(f"doc=/{tmp_path}/missing.txt")


def test_the_view_marks_each_quote_under_its_turn() -> None:
    text = (
        'Look: <quote source="doc-1">AIR QUALITY improved on every measured street</quote>. '
        'And <quote source="doc-1">Air quality improved on most measured streets, with nitrogen dioxide</quote>. '
        'Also <quote source="doc-1">nine in ten experts agree with me</quote>.'
    )
    turn = c.Turn(round_number=1, participant="Ada", model="sim/debater", text=text, attempt=1)
    turn.quotes.extend(SourceIndex([("doc-1", DOC)]).check_turn(text))
    out = io.StringIO()
    view = DebateView(out, PLAIN, participants=[c.Participant(name="Ada", model="sim/debater", stance="for")])
    view.handle(pb.DebateEvent(sequence=1, turn_started=pb.TurnStarted(round_number=1, participant="Ada", attempt=1)))
    view.handle(pb.DebateEvent(sequence=2, turn_completed=pb.TurnCompleted(turn=turn)))
    view.close()
    lines = out.getvalue().splitlines()
    assert '  ✓ verified [doc-1] "AIR QUALITY improved on every measured street"' in lines
    partial = next(line for line in lines if "≈ partial" in line)
    assert '"Air quality improved on most measured streets, with nitrogen dioxide"' in partial
    assert '(the document: "Air quality improved on every measured street, with nitrogen dioxide")' in partial
    assert '  ✗ unverified [doc-1] "nine in ten experts agree with me"' in lines
