"""`make bench`'s table: every module's rows, missing and failing modules shown, not hidden."""

from __future__ import annotations

import sys
import types

import pytest

from tests.benchmarks import run_all


@pytest.fixture
def fake_modules(monkeypatch):
    good = types.ModuleType("fake_bench_good")
    good.run = lambda quick: [
        {"metric": "overhead per debater", "target": "< 10 ms", "value": 0.42, "unit": "ms", "floor": 0.1},
        {"metric": "streams", "target": "10+", "value": 5000, "unit": "subscribers"},
    ]
    bad = types.ModuleType("fake_bench_bad")

    def broken(quick):
        raise RuntimeError("service did not start")

    bad.run = broken
    monkeypatch.setitem(sys.modules, "fake_bench_good", good)
    monkeypatch.setitem(sys.modules, "fake_bench_bad", bad)
    monkeypatch.setattr(run_all, "_module_exists", lambda module: module != "fake_bench_missing")
    monkeypatch.setattr(
        run_all,
        "modules",
        lambda: [("good", "fake_bench_good"), ("missing", "fake_bench_missing"), ("bad", "fake_bench_bad")],
    )


def test_table_has_rows_missing_and_failed_modules(fake_modules, capsys):
    outcomes = run_all.run_all(quick=True, progress=None)
    assert [o.status for o in outcomes] == ["ok", "missing", "failed"]
    text = run_all.table(outcomes)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["benchmark", "metric"]
    row = next(line for line in lines if "overhead per debater" in line)
    assert "< 10 ms" in row and "0.42 ms" in row and "0.1 ms" in row
    assert "5,000 subscribers" in text
    assert "MISSING: fake_bench_missing" in text
    assert "FAILED: RuntimeError: service did not start" in text


def test_main_exits_1_when_a_module_failed_and_writes_json(fake_modules, tmp_path, capsys):
    target = tmp_path / "bench.json"
    assert run_all.main(["--quick", "--json", str(target)]) == 1
    out = capsys.readouterr().out
    assert "missing: fake_bench_missing" in out and "failed: fake_bench_bad" in out
    assert '"overhead per debater"' in target.read_text()
    assert run_all.main(["--quick", "--only", "good"]) == 0


def test_the_known_benchmarks_are_all_listed():
    names = [m for _, m in run_all.modules()]
    for module in ("bench_orchestrator", "bench_relay", "bench_judge", "bench_accounting"):
        assert f"tests.benchmarks.{module}" in names
