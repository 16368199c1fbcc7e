"""The embedded server: scram over TCP, sized, removed at stop; `poolbench server` prints a DSN."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import psycopg
import pytest
from conftest import clean_env

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget


def test_embedded_server_requires_scram_password_over_tcp(target: ConnectionTarget,
                                                          admin: psycopg.Connection) -> None:
    assert target.get("host") == "127.0.0.1"
    assert admin.execute("SELECT auth_method FROM pg_hba_file_rules "
                         "WHERE type = 'host' LIMIT 1").fetchone()[0] == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(target.with_params(password="wrong").conninfo())


def test_server_is_sized_and_removed() -> None:
    srv = EmbeddedServer(max_connections=37)
    target = srv.start()
    root = srv.root
    with psycopg.connect(target.conninfo()) as conn:
        assert conn.execute("SHOW max_connections").fetchone()[0] == "37"
    srv.stop()
    assert root is not None and not root.exists()


def test_server_command_prints_masked_dsn_and_stops_on_sigterm(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "poolbench", "server"], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("postgresql://postgres:***@127.0.0.1:")
        port = int(line.split(":")[3].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            pass  # listening while it runs...
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(ConnectionRefusedError):  # ...and nothing listens once stopped
            socket.create_connection(("127.0.0.1", port), timeout=3)
    finally:
        proc.kill()
