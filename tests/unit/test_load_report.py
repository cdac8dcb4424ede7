"""ghz's report arithmetic and formats, checked against ghz's own cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
import pytest

from services.loadtest.cli import go_duration
from services.loadtest.formats import format_csv, format_nano_unit, format_summary, to_json
from services.loadtest.report import (
    CallRecorder,
    MessageStats,
    RunOptions,
    build_report,
    histogram,
    latency_distribution,
    rfc3339nano,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "load" / "ghz_report.schema.json").read_text())
S = 1_000_000_000


@pytest.mark.parametrize(
    "seconds, expected",
    [  # runner/reporter_test.go TestReport_latencies
        ([15, 20, 35, 40, 50], [15, 20, 35, 40, 50, 50, 50]),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], [3, 7, 8, 15, 16, 20, 20]),
        ([3, 6, 7, 8, 8, 9, 10, 13, 15, 16, 20], [6, 7, 9, 15, 16, 20, 20]),
        (
            [2.1, 3.2, 4.5, 6.3, 7.4, 8.5, 9.6, 10.7, 13.8, 15.9, 16.11, 18.17, 20.11, 22.34],
            [3.2, 6.3, 9.6, 16.11, 20.11, 22.34, 22.34],
        ),
    ],
)
def test_latency_distribution_matches_ghz(seconds, expected):
    got = latency_distribution([round(s * S) for s in seconds])
    assert got == [
        {"percentage": p, "latency": round(e * S)} for p, e in zip([10, 25, 50, 75, 90, 95, 99], expected, strict=False)
    ]


def test_histogram_has_eleven_marks_from_fastest_to_slowest():
    lats = [10, 10, 15, 25, 35, 45, 55, 65, 75, 85, 95, 105, 110]  # ms
    buckets = histogram([v * 1_000_000 for v in lats])
    assert len(buckets) == 11
    assert buckets[0]["mark"] == 0.01 and buckets[-1]["mark"] == 0.11
    # A latency counts in the first bucket whose mark is >= it: 10,10 | 15 | 25 | ... | 105,110.
    assert [b["count"] for b in buckets] == [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    assert sum(b["frequency"] for b in buckets) == pytest.approx(1.0)


def test_histogram_of_equal_latencies_puts_all_in_the_first_bucket():
    buckets = histogram([5_000_000] * 4)
    assert [b["count"] for b in buckets] == [4] + [0] * 10
    assert buckets[0]["frequency"] == 1  # Go writes 1, not 1.0


def test_format_nano_unit_matches_ghz():
    assert format_nano_unit(9999) == "9999 ns"
    assert format_nano_unit(1_330_000) == "1.33 ms"
    assert format_nano_unit(1_500_000_000) == "1.50 s"


def test_times_are_written_as_go_does():
    text = rfc3339nano(1_700_000_000_123_450_000)
    assert text.endswith(("Z", ":00", ":30", ":45")) and ".12345" in text and ".123450" not in text


def _recorder() -> CallRecorder:
    rec = CallRecorder()
    for i in range(8):
        rec.add((i + 1) * 1_000_000, 1_700_000_000_000_000_000 + i)
    rec.add(50_000_000, 1_700_000_000_000_000_009, "Unavailable", "rpc error: code = Unavailable desc = down")
    return rec


def test_report_is_valid_against_the_schema_and_keeps_go_field_order():
    report = build_report(
        RunOptions(call="a.B.C", host="h:1", insecure=True, total=9, concurrency=2, data={"x": 1}),
        _recorder(),
        100_000_000,
        "normal",
    )
    jsonschema.validate(report, SCHEMA)
    assert list(report)[:4] == ["date", "endReason", "options", "count"]
    assert report["count"] == 9
    assert report["statusCodeDistribution"] == {"OK": 8, "Unavailable": 1}
    assert report["slowest"] == 8_000_000  # errors are out of the latency statistics
    assert report["average"] == (36 + 50) * 1_000_000 // 9
    assert report["rps"] == 90
    assert report["details"][8] == {
        "timestamp": rfc3339nano(1_700_000_000_000_000_009),
        "latency": 50_000_000,
        "error": "rpc error: code = Unavailable desc = down",
        "status": "Unavailable",
    }
    options = report["options"]
    assert options["insecure"] is True and options["timeout"] == 20 * S and options["CPUs"] == 1
    assert "rps" not in options and "name" not in options  # omitempty
    assert json.loads(to_json(report)) == report


def test_an_empty_run_has_nulls_where_go_has_nil_slices():
    report = build_report(RunOptions(), CallRecorder(), 1_000, "cancel")
    jsonschema.validate(report, SCHEMA)
    assert report["details"] is None and report["histogram"] is None and report["latencyDistribution"] is None
    assert report["errorDistribution"] == {} and report["count"] == 0


def test_skip_first_leaves_calls_out():
    rec = CallRecorder(skip_first=2)
    for i in range(5):
        rec.add(1_000_000, i)
    assert rec.count == 3 and len(rec.latencies) == 3


def test_messages_section_is_added_for_streams():
    stats = MessageStats()
    stats.add_call([2_000_000, 1_000_000, 1_000_000])
    stats.add_call([])
    report = build_report(RunOptions(), _recorder(), S, "normal", stats)
    jsonschema.validate(report, SCHEMA)
    assert report["messages"]["count"] == 3
    assert report["messages"]["firstMessage"]["fastest"] == 2_000_000
    assert report["messages"]["average"] == 4_000_000 // 3


def test_summary_and_csv_follow_ghz_templates():
    report = build_report(RunOptions(), _recorder(), 100_000_000, "normal")
    summary = format_summary(report)
    assert summary.startswith("\nSummary:\n  Count:\t9\n  Total:\t100.00 ms\n")
    assert "Requests/sec:\t90.00" in summary
    assert "\n  10 % in 1.00 ms " in summary
    assert "  [OK]            8 responses   \n" in summary
    assert "Error distribution:\n  [1]   rpc error: code = Unavailable desc = down   \n" in summary
    csv = format_csv(report)
    assert csv.splitlines()[1:3] == ["duration (ms),status,error", "1.00,OK,"]


def test_go_durations():
    assert go_duration("10s") == 10
    assert go_duration("1m30s") == 90
    assert go_duration("250ms") == 0.25
    assert go_duration("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        go_duration("ten seconds")


@pytest.mark.parametrize(
    "value, text",
    [
        (0.0, "0"),
        (1.0, "1"),
        (0.5, "0.5"),
        (8.5e-05, "0.000085"),
        (1e-06, "0.000001"),
        (1.5e-07, "1.5e-7"),
        (1e21, "1e+21"),
        (1e16, "10000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_floats_are_written_as_go_encoding_json_does(value, text):
    from services.loadtest.formats import go_float_text

    assert go_float_text(value) == text


def test_json_escapes_html_characters_as_go_does():
    text = to_json({"rps": 8.5e-05, "errorDistribution": {"rpc error: code = Internal desc = a<b & c>d": 1}})
    assert (
        text
        == '{"rps":0.000085,"errorDistribution":{"rpc error: code = Internal desc = a\\u003cb \\u0026 c\\u003ed":1}}'
    )
    assert json.loads(text)["errorDistribution"] == {"rpc error: code = Internal desc = a<b & c>d": 1}
