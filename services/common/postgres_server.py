"""A throwaway PostgreSQL server: `initdb` on a temporary directory, `postgres` on a free port of
127.0.0.1, gone when stopped, and gone when the process that started it dies. The tests' server
(tests/support/backends.py), the benchmarks' and `debate-engine up --postgres`'s are this one
class.

The server is Debian's `postgresql` package (PostgreSQL 15 on bookworm), installed by `make
postgres` when it is missing (a prerequisite of `make test` and `make check`); its binaries are
in /usr/lib/postgresql/<major>/bin. PostgreSQL refuses to run as root, and the suite runs as root
in CI and here: then every server command runs as the `postgres` system user that the package
creates (`runuser -u postgres --`), and the temporary directory is handed to that user. As any
other user the commands run as that user.

The server process is a child of the caller (not daemonized by pg_ctl), started through
util-linux's `setpriv --pdeathsig INT`: when the thread that started it dies, even by SIGKILL (a
killed `debate-engine up` or pytest), PostgreSQL gets SIGINT, its fast shutdown, and exits. So
call `start()` from a thread that lives as long as the server should (the main thread, say).
The temporary directory of a server whose starter died is removed by the next `start()` of any
PostgresServer (`sweep_orphans`).

By default the server is tuned for tests (TEST_OPTIONS), never for data to keep: fsync, synchronous_commit and
full_page_writes are off (a crash of the machine may lose the last commits; a crash of a
client or of the server process loses nothing committed), trust authentication on 127.0.0.1
only, no Unix socket.

    with PostgresServer() as server:
        url = server.create_database()     # postgresql://postgres@127.0.0.1:PORT/test_1
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

PG_ROOT = Path("/usr/lib/postgresql")
PREFERRED_MAJOR = "15"  # Debian bookworm's; any other installed major serves as well
SERVER_USER = "postgres"  # the system user Debian's package creates, and the database superuser
START_ATTEMPTS = 3  # a free port can be taken between our probe and the server's bind
START_TIMEOUT_S = 60.0  # until the server accepts connections
STOP_TIMEOUT_S = 30.0  # after SIGQUIT (immediate shutdown), before SIGKILL
DIR_PREFIX = "debate-engine-pg-"
OWNER_FILE = "owner.pid"  # in the temporary directory: the pid of the process that started the server
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(tmp: Path | None = None) -> list[Path]:
    """Removes the temporary directories of servers whose starting process is dead (a SIGKILLed
    `up` or pytest), stopping their server first if it still runs (SIGQUIT to the pid in
    postmaster.pid); directories without an owner file, or whose owner lives, are left alone.
    Returns the directories removed."""
    removed = []
    for root in Path(tmp or tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
            if _alive(postmaster):
                os.kill(postmaster, signal.SIGQUIT)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


class PostgresServer:
    """One PostgreSQL server on a temporary data directory and a free port of 127.0.0.1.

    `start()` runs initdb and then the server as a child process (waiting until it accepts
    connections; RuntimeError with the server's log when it cannot start); `stop()` stops it at
    once (SIGQUIT, PostgreSQL's immediate shutdown) and removes the directory. Databases are made
    and dropped through the `postgres` superuser, with trust authentication. `options` are the
    server's: TEST_OPTIONS (no durability, the tests') or DURABLE_OPTIONS (the benchmarks')."""

    def __init__(self, bindir: Path | None = None, options: str = TEST_OPTIONS):
        self.bindir = bindir or find_bindir()
        self.options = options
        self.root: Path | None = None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
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
        sweep_orphans()
        self.root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
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
                self._spawn()
                break
            except RuntimeError as failed:
                if attempt == START_ATTEMPTS:
                    self._remove()
                    raise RuntimeError(f"PostgreSQL did not start: {failed}") from None
        return self

    def _spawn(self) -> None:
        """Runs `postgres` on self.port, a child of this thread that gets SIGINT when the thread
        dies; returns when it accepts connections, RuntimeError (with its log) when it exits or
        does not within START_TIMEOUT_S."""
        argv = ["setpriv", "--pdeathsig", "INT", "--", str(self.bindir / "postgres"), "-D", str(self.datadir)]
        argv += ["-p", str(self.port), *shlex.split(self.options)]
        # As root, Popen switches to the server's user before exec, so setpriv's parent-death
        # signal is set after the switch (a change of user clears it).
        user = SERVER_USER if os.geteuid() == 0 else None
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(
                argv, user=user, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"exited on port {self.port}:\n{self._log_tail()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self._kill()
                    raise RuntimeError(f"not ready in {START_TIMEOUT_S:.0f} s:\n{self._log_tail()}") from None
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def _kill(self) -> None:
        """Immediate shutdown (SIGQUIT), then SIGKILL after STOP_TIMEOUT_S."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            self._kill()
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
