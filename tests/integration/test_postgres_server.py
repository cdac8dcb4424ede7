"""The throwaway PostgreSQL server (services/common/postgres_server.py) does not outlive the
process that started it: a SIGKILLed `debate-engine up --postgres` or pytest leaves no server
running, and the next start removes its directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from services.common.postgres_server import DIR_PREFIX, OWNER_FILE, PostgresServer, sweep_orphans

_STARTER = textwrap.dedent(
    """
    import time
    from services.common.postgres_server import PostgresServer
    server = PostgresServer().start()
    print(server.process.pid, server.port, server.root, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_server_exits_when_its_starter_is_sigkilled_and_the_next_start_removes_its_folder():
    starter = subprocess.Popen([sys.executable, "-c", _STARTER], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        pid_text, port_text, root_text = starter.stdout.readline().split()
        server_pid, port, root = int(pid_text), int(port_text), Path(root_text)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as db:
            assert db.execute("SELECT 1").fetchone() == (1,)
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        assert _wait_gone(server_pid), "PostgreSQL outlived the process that started it"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)
        assert root.exists()  # nobody removed it yet: the starter died without cleaning up
        assert root in sweep_orphans(root.parent)
        assert not root.exists()
    finally:
        if starter.poll() is None:
            starter.kill()


def test_the_sweep_leaves_a_live_server_and_foreign_folders_alone(tmp_path):
    live = tmp_path / f"{DIR_PREFIX}live"
    live.mkdir()
    (live / OWNER_FILE).write_text(str(os.getpid()))
    unowned = tmp_path / f"{DIR_PREFIX}old"  # made before owner files existed: never touched
    unowned.mkdir()
    dead = tmp_path / f"{DIR_PREFIX}dead"
    dead.mkdir()
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (dead / OWNER_FILE).write_text(exited.stdout.strip())
    assert sweep_orphans(tmp_path) == [dead]
    assert live.exists() and unowned.exists() and not dead.exists()


def test_stop_ends_the_server_and_removes_its_folder():
    server = PostgresServer().start()
    pid, root = server.process.pid, server.root
    url = server.create_database()
    with psycopg.connect(url) as db:
        assert db.execute("SELECT current_database()").fetchone() == ("test_1",)
    server.stop()
    assert _wait_gone(pid, timeout=5) and not root.exists()
    server.stop()  # a second stop does nothing
