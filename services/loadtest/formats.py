"""ghz's report as text: JSON as Go's encoding/json writes it, and ghz's summary and CSV
formats (bojand/ghz `printer/printer.go` and `printer/template.go`).
"""

from __future__ import annotations

import io
import json
import math
import re
from decimal import Decimal
from typing import Any

# --- JSON as Go writes it -------------------------------------------------------------------


def go_float_text(value: float) -> str:
    """encoding/json's float64: the shortest digits that read back the same (as Python's
    repr), positional between 1e-6 and 1e21, else exponent form with e-7 rather than e-07."""
    if not math.isfinite(value):
        raise ValueError(f"Go cannot encode {value!r} in JSON")
    if value == 0:
        return "0"
    text = repr(value)
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        if "e" not in text:
            text = f"{value:e}"  # not reached for doubles repr() writes positionally
        mantissa, exponent = text.split("e")
        sign = exponent[0] if exponent[0] in "+-" else "+"
        digits = exponent.lstrip("+-").lstrip("0") or "0"
        if sign == "+" and len(digits) < 2:
            digits = digits.rjust(2, "0")
        return f"{mantissa}e{sign}{digits}"
    text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


_FLOAT_MARK = re.compile(r'"\\u0000gofloat(\d+)"')


def _mark_floats(value: Any, floats: list[float]) -> Any:
    if isinstance(value, float):
        floats.append(value)
        return f"\x00gofloat{len(floats) - 1}"
    if isinstance(value, dict):
        # The details (up to a million) hold no floats: left as they are.
        return {k: (v if k == "details" else _mark_floats(v, floats)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark_floats(v, floats) for v in value]
    return value


def to_json(report: dict[str, Any], pretty: bool = False) -> str:
    """The report as Go's encoding/json writes it (json.Indent with two spaces for pretty):
    floats in Go's layout, and <, >, & escaped as \\u003c, \\u003e, \\u0026."""
    floats: list[float] = []
    marked = _mark_floats(report, floats)
    if pretty:
        text = json.dumps(marked, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(marked, separators=(",", ":"), ensure_ascii=False)
    text = _FLOAT_MARK.sub(lambda m: go_float_text(floats[int(m.group(1))]), text)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# --- ghz's text formats ---------------------------------------------------------------------


def format_nano_unit(ns: int) -> str:
    """printer.go formatNanoUnit."""
    if ns < 10000:
        return f"{ns} ns"
    ms = ns / 1_000_000
    if ms < 1000:
        return f"{ms:4.2f} ms"
    return f"{ms / 1000:4.2f} s"


def _histogram_text(buckets: list[dict[str, Any]] | None) -> str:
    if not buckets:
        return ""
    max_mark = max([0.0, *(b["mark"] for b in buckets)])
    max_count = max([0, *(b["count"] for b in buckets)])

    def mark(m: float) -> str:
        return f"{m * 1000:.3f}"

    mark_len, count_len = len(mark(max_mark)), len(str(max_count))
    lines = []
    for b in buckets:
        bar = (b["count"] * 40 + max_count // 2) // max_count if max_count > 0 else 0
        m, c = mark(b["mark"]), str(b["count"])
        lines.append(f"  {m}{' ' * (mark_len - len(m))} [{c}]{' ' * (count_len - len(c))} |{'∎' * bar}\n")
    return "".join(lines)


def _tabwrite(rows: list[tuple[str, str]], padding: int = 3) -> str:
    """Go's text/tabwriter with a trailing tab per line: every cell padded to its column."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) + padding for i in range(2)]
    return "".join(f"{a:<{widths[0]}}{b:<{widths[1]}}\n" for a, b in rows)


def format_summary(report: dict[str, Any]) -> str:
    """printer/template.go defaultTmpl, plus a Messages section for streaming calls."""
    out = io.StringIO()
    out.write("\nSummary:\n")
    if report.get("name"):
        out.write(f"  Name:\t\t{report['name']}\n")
    out.write(f"  Count:\t{report['count']}\n")
    out.write(f"  Total:\t{format_nano_unit(report['total'])}\n")
    out.write(f"  Slowest:\t{format_nano_unit(report['slowest'])}\n")
    out.write(f"  Fastest:\t{format_nano_unit(report['fastest'])}\n")
    out.write(f"  Average:\t{format_nano_unit(report['average'])}\n")
    out.write(f"  Requests/sec:\t{report['rps']:4.2f}\n\n")
    out.write("Response time histogram:\n")
    out.write(_histogram_text(report["histogram"]))
    out.write("\nLatency distribution:")
    for entry in report["latencyDistribution"] or []:
        out.write(f"\n  {entry['percentage']} % in {format_nano_unit(entry['latency'])} ")
    out.write("\n\n")
    if report["statusCodeDistribution"]:
        out.write("Status code distribution:\n")
        out.write(_tabwrite([(f"  [{k}]", f"{v} responses") for k, v in report["statusCodeDistribution"].items()]))
    out.write("\n")
    if report["errorDistribution"]:
        out.write("Error distribution:\n")
        out.write(_tabwrite([(f"  [{v}]", k) for k, v in report["errorDistribution"].items()]))
    out.write("\n")
    messages = report.get("messages")
    if messages is not None:
        out.write("\nMessages received (streaming):\n")
        out.write(f"  Count:\t{messages['count']}\n")
        out.write(f"  Messages/sec:\t{messages['rate']:4.2f}\n")
        out.write(f"  Per call:\t{messages['perCall']:4.2f}\n")
        out.write(f"  Time to first message, average:\t{format_nano_unit(messages['firstMessage']['average'])}\n")
        out.write(f"  Gap between messages, average:\t{format_nano_unit(messages['average'])}\n")
        out.write("\nMessage latency distribution (time since the previous message of the call):")
        for entry in messages["latencyDistribution"] or []:
            out.write(f"\n  {entry['percentage']} % in {format_nano_unit(entry['latency'])} ")
        out.write("\n")
    return out.getvalue()


def format_csv(report: dict[str, Any]) -> str:
    """printer/template.go csvTmpl."""
    lines = ["", "duration (ms),status,error"]
    for d in report["details"] or []:
        lines.append(f"{d['latency'] / 1_000_000:4.2f},{d['status']},{d['error']}")
    return "\n".join(lines) + "\n"
