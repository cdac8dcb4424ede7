"""Small things many tests need."""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_until(stream, pattern: str, timeout: float, seen: list[str]) -> re.Match:
    """Reads lines of a text stream (a child's stdout) into `seen` until one matches `pattern`;
    AssertionError with the output read when none does within `timeout` seconds or at its end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"{pattern!r} not seen; output:\n{''.join(seen)}")
