"""A throwaway PostgreSQL server: `initdb` on a temporary directory, `pg_ctl` on a free port of
127.0.0.1, gone when stopped. The tests' server (tests/support/backends.py), the benchmarks' and
`debate-engine up --postgres`'s are this one class.

The server is Debian's `postgresql` package (PostgreSQL 15 on bookworm), installed by `make
postgres` when it is missing (a prerequisite of `make test` and `make check`); its binaries are
in /usr/lib/postgresql/<major>/bin. PostgreSQL refuses to run as root, and the suite runs as root
in CI and here: then every server command runs as the `postgres` system user that the package
creates (`runuser -u postgres --`), and the temporary directory is handed to that user. As any
other user the commands run as that user.

By default the server is tuned for tests (TEST_OPTIONS), never for data to keep: fsync, synchronous_commit and
full_page_writes are off (a crash of the machine may lose the last commits; a crash of a
client or of the server process loses nothing committed), trust authentication on 127.0.0.1
only, no Unix socket.

    with PostgresServer() as server:
        url = server.create_database()     # postgresql://postgres@127.0.0.1:PORT/test_1
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

PG_ROOT = Path("/usr/lib/postgresql")
PREFERRED_MAJOR = "15"  # Debian bookworm's; any other installed major serves as well
SERVER_USER = "postgres"  # the system user Debian's package creates, and the database superuser
START_ATTEMPTS = 3  # a free port can be taken between our probe and the server's bind
SERVER_OPTIONS = "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200"
TEST_OPTIONS = f"{SERVER_OPTIONS} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
DURABLE_OPTIONS = SERVER_OPTIONS  # fsync and synchronous_commit on, as a production server runs (benchmarks)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (the server's bind may still lose it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries: `make postgres` installs Debian's package."""


def find_bindir(root: Path = PG_ROOT) -> Path:
    """The bin directory of an installed PostgreSQL (PREFERRED_MAJOR first, else the newest);
    PostgresMissing when there is none."""
    found = sorted(
        (p.parent for p in root.glob("*/bin/pg_ctl")),
        key=lambda bindir: (bindir.parent.name == PREFERRED_MAJOR, bindir.parent.name.isdigit(), bindir.parent.name),
        reverse=True,
    )
    if not found:
        raise PostgresMissing(
            f"no PostgreSQL server under {root}/*/bin: run `make postgres` "
            "(installs Debian's postgresql package with apt-get)"
        )
    return found[0]


class PostgresServer:
    """One PostgreSQL server on a temporary data directory and a free port of 127.0.0.1.

    `start()` runs initdb and pg_ctl start (waiting until it accepts connections); `stop()`
    stops it at once (pg_ctl stop -m immediate) and removes the directory. Databases are made
    and dropped through the `postgres` superuser, with trust authentication. `options` are the
    server's: TEST_OPTIONS (no durability, the tests') or DURABLE_OPTIONS (the benchmarks')."""

    def __init__(self, bindir: Path | None = None, options: str = TEST_OPTIONS):
        self.bindir = bindir or find_bindir()
        self.options = options
        self.root: Path | None = None
        self.port = 0
        self._names = itertools.count(1)

    # -- running commands as the server's user

    def _as_server_user(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", SERVER_USER, "--", *argv]
        return list(argv)

    def _run(self, *argv: str) -> None:
        done = subprocess.run(self._as_server_user(*argv), capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    @property
    def datadir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "server.log"

    # -- the server

    def start(self) -> PostgresServer:
        self.root = Path(tempfile.mkdtemp(prefix="debate-engine-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.datadir),
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            try:
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.logfile), "-o", f"-p {self.port} {self.options}")
                break
            except RuntimeError as failed:
                if attempt == START_ATTEMPTS:
                    log = self.logfile.read_text() if self.logfile.exists() else ""
                    self._remove()
                    raise RuntimeError(f"{failed}\nserver log:\n{log}") from None
        return self

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args)

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            self._pg_ctl("stop", "-m", "immediate", "-w")
        finally:
            self._remove()

    def _remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str = "") -> str:
        """A new empty database (named test_<n> unless given); its URL."""
        name = name or f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops it, closing any connection still open to it."""
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
