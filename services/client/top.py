"""`debate-engine top`: a live view of a running suite's own Prometheus metrics.

    debate-engine top [--data-dir DIR] [--metrics URL]... [--interval 1] [--window 10] [--once]

It finds the endpoints in the suite file that `debate-engine up` writes in its data dir
(services/suite_file.py), or takes them from --metrics (repeatable), scrapes them every
`--interval` seconds and shows: debates running and queued, tokens per second and cost per hour
by model, relay latency p50 and p99, the suite's cost per hour, and the errors (gRPC calls
ended with a code other than OK or CANCELLED, provider errors, endpoints that do not answer).
Rates and quantiles are over the last `--window` seconds (services/client/suite_metrics.py computes them).
A model call's tokens are counted when it ends (`gen_ai_client_token_usage`), so tokens per
second is their average over the window, as `rate(gen_ai_client_token_usage_sum[10s])` is.

On a terminal it redraws one screen each interval until q or Ctrl-C; in a pipe it prints one
snapshot per interval; `--once` prints one snapshot (two scrapes `--interval` apart) and exits.
Exit codes: 0, 1 when no endpoint answers or no suite runs (one line on stderr), 2 bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator, Mapping
from typing import TextIO

import httpx

from services.client.style import Style, clip_right, count, table
from services.client.suite_metrics import Snapshot, SuiteFigures, Window
from services.launcher import SuiteConfig
from services.suite_file import SuiteFileError, read_suite_file

EXIT_OK, EXIT_FAILED = 0, 1
MODEL_COLUMNS = 32  # a longer model name is clipped
MAX_ERROR_ROWS = 8


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser(
        "top",
        help="a live view of a running suite's metrics: debates, tokens/s, relay latency, cost per hour, errors",
        description="Scrapes the Prometheus endpoints of the suite that `debate-engine up` runs on --data-dir "
        "(or the --metrics URLs) and shows the suite's figures live; q or Ctrl-C quits.",
    )
    top.add_argument(
        "--data-dir",
        default=SuiteConfig().data_dir,
        help="the data dir of the running `debate-engine up` (default: %(default)s)",
    )
    top.add_argument(
        "--metrics",
        action="append",
        metavar="URL",
        help="a /metrics URL to scrape instead of the suite file's (repeat for each endpoint)",
    )
    top.add_argument("--interval", type=_seconds, default=1.0, help="seconds between scrapes (default: 1)")
    top.add_argument("--window", type=_seconds, default=10.0, help="seconds that rates are taken over (default: 10)")
    top.add_argument("--once", action="store_true", help="print one snapshot (two scrapes an interval apart) and exit")
    top.set_defaults(handler=_top)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def endpoints(args: argparse.Namespace) -> dict[str, str]:
    """{name shown: /metrics URL}. SuiteFileError (one line) when there are none to scrape."""
    if args.metrics:
        return {url: url for url in args.metrics}
    processes = read_suite_file(args.data_dir)
    found = {p.name: p.metrics_url for p in processes if p.metrics_url}
    if not found:
        raise SuiteFileError(f"the suite on {args.data_dir} serves no metrics (it was started with --no-metrics)")
    return found


async def scrape(client: httpx.AsyncClient, urls: Mapping[str, str]) -> dict[str, Snapshot | str]:
    """One scrape of every endpoint, at once: {name: Snapshot, or why it did not answer}."""

    async def one(url: str) -> Snapshot | str:
        try:
            response = await client.get(url)
            response.raise_for_status()
            return Snapshot.parse(response.text, time.monotonic())
        except httpx.HTTPStatusError as error:
            return f"HTTP {error.response.status_code}"
        except httpx.HTTPError as error:
            return _reason(error)
        except ValueError as error:
            return str(error).splitlines()[0]

    answers = await asyncio.gather(*(one(url) for url in urls.values()))
    return dict(zip(urls, answers, strict=True))


def _reason(error: httpx.HTTPError) -> str:
    """One line: the OS's words when a socket error lies under httpx's ("Connection refused")."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# -- drawing -----------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def usd(amount: float) -> str:
    """A float USD figure with three significant digits below $1 ("$0.0123"), cents above."""
    if amount <= 0:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    decimals = min(8, max(2, 2 - math.floor(math.log10(amount))))
    return f"${amount:.{decimals}f}"


def per_second(value: float) -> str:
    return f"{value:,.1f}" if value else "0"


def render(figures: SuiteFigures, style: Style, *, clock: str = "") -> list[str]:
    """The screen of `top` for `figures`, as lines (painted when `style.color`)."""
    window = (
        f"rates over the last {figures.window_seconds:.0f} s"
        if figures.window_seconds
        else "rates after the next scrape"
    )
    up = figures.endpoints_up
    total = up + len(figures.endpoints_down)
    head = style.paint("Debate Engine top", "bold") + style.paint(
        f" · {up} of {total} endpoints answer · {window}" + (f" · {clock}" if clock else ""), "dim"
    )
    label = lambda text: style.paint(f"{text:<10}", "bold")  # noqa: E731
    lines = [head, ""]
    lines.append(
        label("Debates")
        + f"running {figures.debates_running}   queued {figures.debates_queued}   "
        + style.paint(f"started {figures.debates_started:.0f}, ended {figures.debates_ended:.0f} in the window", "dim")
    )
    lines.append(
        label("Events") + f"{per_second(figures.events_per_second)}/s appended   subscribers {figures.subscribers}"
    )
    relay = f"p50 {duration(figures.relay_p50)}   p99 {duration(figures.relay_p99)}"
    messages = round(figures.relay_messages)
    relayed = f"   ({count(messages)} message{'' if messages == 1 else 's'} in the window)"
    lines.append(label("Relay") + relay + style.paint(relayed, "dim"))
    lines.append(label("Cost") + f"{usd(figures.cost_per_hour)} per hour")
    for name, reason in figures.endpoints_down.items():
        lines.append(label("Down") + style.paint(f"{name}: {reason}", "red"))
    lines.append("")
    if figures.models:
        rows = [
            [
                clip_right(m.model, MODEL_COLUMNS),
                per_second(m.output_tokens_per_second),
                per_second(m.input_tokens_per_second),
                usd(m.cost_per_hour),
            ]
            for m in figures.models
        ]
        lines += table(style, ["model", "out tok/s", "in tok/s", "cost/hour"], rows, indent=0)
    else:
        lines.append(style.paint("no model has been called yet", "dim"))
    lines.append("")
    if figures.errors:
        shown = figures.errors[:MAX_ERROR_ROWS]
        rows = [
            [e.source, clip_right(e.what, MODEL_COLUMNS), e.code, f"{e.per_second:.2f}", count(round(e.total))]
            for e in shown
        ]
        paint = lambda r, c, text: style.paint(text, "red" if figures.errors[r].per_second else "yellow")  # noqa: E731
        lines += table(
            style,
            ["errors", "method or model", "code", "per s", "total"],
            rows,
            align="lllrr",
            indent=0,
            paint=lambda r, c, text: style.paint(text, "bold") if r < 0 else paint(r, c, text),
        )
        if len(figures.errors) > len(shown):
            lines.append(style.paint(f"... and {len(figures.errors) - len(shown)} more", "dim"))
    else:
        lines.append(label("Errors") + "none")
    return lines


# -- running -----------------------------------------------------------------------------------


def _top(args: argparse.Namespace) -> int:
    try:
        urls = endpoints(args)
    except SuiteFileError as error:
        print(f"debate-engine top: {error}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return asyncio.run(_run(args, urls, sys.stdout))
    except KeyboardInterrupt:  # Ctrl-C before the handlers were set: quitting is what it asks
        return EXIT_OK
    except BrokenPipeError:  # `debate-engine top | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


async def _run(args: argparse.Namespace, urls: Mapping[str, str], out: TextIO) -> int:
    style = Style.for_stream(out)
    window = Window(args.window)
    async with httpx.AsyncClient(timeout=max(1.0, min(args.interval, 5.0)), trust_env=False) as client:
        first = await scrape(client, urls)
        if not any(isinstance(s, Snapshot) for s in first.values()):
            reasons = "; ".join(f"{name}: {reason}" for name, reason in first.items())
            print(f"debate-engine top: no metrics endpoint answers ({reasons}); is the suite up?", file=sys.stderr)
            return EXIT_FAILED
        window.add(first)
        if args.once:
            await asyncio.sleep(args.interval)
            window.add(await scrape(client, urls))
            out.write("\n".join(render(window.figures(), style)) + "\n")
            return EXIT_OK
        quit_now = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, quit_now.set)
        with _screen(out, style.live) as draw, _keys(quit_now):
            started = time.monotonic()
            ticks = 0
            while True:
                draw(render(window.figures(), style, clock=time.strftime("%H:%M:%S")))
                ticks += 1
                pause = started + ticks * args.interval - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(quit_now.wait(), max(0.0, pause))
                if quit_now.is_set():
                    return EXIT_OK
                window.add(await scrape(client, urls))


@contextlib.contextmanager
def _screen(out: TextIO, live: bool) -> Iterator:
    """A function that shows one frame: on a terminal, redrawn in place on the alternate screen
    (no line wrapping, cut to the terminal's rows), restored on the way out; elsewhere, frames
    one after the other, a blank line apart."""
    if not live:

        def plain(lines: list[str]) -> None:
            out.write("\n".join(lines) + "\n\n")
            out.flush()

        yield plain
        return

    def frame(lines: list[str]) -> None:
        rows = shutil.get_terminal_size().lines
        out.write("\x1b[H" + "\x1b[K\n".join(lines[:rows]) + "\x1b[K\x1b[J")
        out.flush()

    out.write("\x1b[?1049h\x1b[?25l\x1b[?7l")  # alternate screen, no cursor, no wrapping
    out.flush()
    try:
        yield frame
    finally:
        out.write("\x1b[?7h\x1b[?25h\x1b[?1049l")
        out.flush()


@contextlib.contextmanager
def _keys(quit_now: asyncio.Event) -> Iterator[None]:
    """On a terminal stdin: keys are read one by one (no echo) and q quits; restored on the way out."""
    stdin = sys.stdin
    if not stdin.isatty():
        yield
        return
    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def read() -> None:
        keys = os.read(fd, 64)
        if not keys or b"q" in keys.lower():
            quit_now.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, read)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
