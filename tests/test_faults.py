"""The fault suite: backends killed, server restarted, slow statements, exhausted pools.

Each test runs the real CLI in a subprocess against the session's real server,
seeds 10,000 rows that are not poolbench's, and asserts they are byte-identical
afterwards and that no row of the run is left.
"""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path

import psycopg
import pytest
from conftest import run_cli, seed_table, start_cli, table_contents, wait_for_run_rows

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident
from poolbench.strategies import REGISTRY

SEED_ROWS = 10_000


def own_rows(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {quote_ident(table)} WHERE username LIKE 'pb%'"
                        ).fetchone()[0]


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "reports" / "results.json").read_text())


class BackendKiller:
    """Terminates every benchmark backend (application_name 'poolbench') every 100 ms."""

    def __init__(self, target: ConnectionTarget) -> None:
        self.target = target.with_params(application_name="fault-injector")
        self.stop = threading.Event()
        self.killed = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self.target.conninfo(), autocommit=True) as conn:
            while not self.stop.wait(0.1):
                self.killed += conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = 'poolbench'").fetchone()[0]

    def __enter__(self) -> BackendKiller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_backends_killed_every_100ms(tmp_path: Path, target: ConnectionTarget,
                                     admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, SEED_ROWS)
    before = table_contents(admin, table)
    with BackendKiller(target) as killer:
        result = run_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                         "all", "-n", "60", "-w", "8", "--warmup", "0", "--trials", "1",
                         "--connect-samples", "1",
                         "--no-chart", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert killer.killed > 0
    data = results(tmp_path)
    assert [s["name"] for s in data["strategies"]] == list(REGISTRY)
    errors = {key: n for s in data["strategies"] for p in s["phases"]
              for key, n in p["errors"].items()}
    assert sum(errors.values()) > 0, "backends were killed but no operation failed"
    # Terminated backends show up as counted errors by step and class (57P01: admin shutdown).
    assert any(key.startswith(("acquire:", "execute:", "release:")) for key in errors)
    assert "failed operations" in result.stdout
    assert data["verification"]["ok"] is True
    assert own_rows(admin, table) == 0
    assert table_contents(admin, table) == before


def test_server_restarted_mid_run(tmp_path: Path, server: EmbeddedServer,
                                  target: ConnectionTarget, admin: psycopg.Connection,
                                  table: str) -> None:
    seed_table(admin, table, SEED_ROWS)
    before = table_contents(admin, table)
    proc = start_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                     "psycopg2:none,psycopg:pool", "-n", "1000", "-w", "8", "--warmup", "0",
                     "--connect-samples", "1",
                     "--trials", "1", "--no-chart", cwd=tmp_path)
    try:
        wait_for_run_rows(admin, table, proc)
        server.restart()
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    # The run completes: pools reconnect, the admin session reconnects and sweeps.
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    data = results(tmp_path)
    assert data["partial"] is False and data["verification"]["ok"] is True
    errors = sum(s["error_count"] for s in data["strategies"])
    assert errors > 0, "the outage does not show in the numbers"
    with psycopg.connect(target.with_params(application_name="poolbench-test").conninfo(),
                         autocommit=True) as conn:
        assert own_rows(conn, table) == 0
        assert table_contents(conn, table) == before


@pytest.fixture
def slow_inserts(admin: psycopg.Connection, table: str):
    """Every insert into the table sleeps (a trigger): a slow server, for timeouts."""
    seed_table(admin, table, SEED_ROWS)
    function = "slow_" + secrets.token_hex(4)

    def install(seconds: float) -> None:
        admin.execute(f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS "
                      f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$")
        admin.execute(f"CREATE TRIGGER slow BEFORE INSERT ON {quote_ident(table)} "
                      f"FOR EACH ROW EXECUTE FUNCTION {function}()")

    yield install
    admin.execute(f"DROP TRIGGER IF EXISTS slow ON {quote_ident(table)}")
    admin.execute(f"DROP FUNCTION IF EXISTS {function}()")


def test_statement_timeout_fails_operations_without_hanging(
        tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection, table: str,
        slow_inserts) -> None:
    slow_inserts(5)
    before = table_contents(admin, table)
    result = run_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                     "psycopg2:none,psycopg:pool,asyncpg:pool", "-n", "3", "-w", "2",
                     "--connect-samples", "1",
                     "--warmup", "0", "--trials", "1", "--statement-timeout", "0.2",
                     "--no-chart", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    for s in results(tmp_path)["strategies"]:
        create = s["phases"][0]
        assert create["ops"] == 0
        # 57014: query_canceled, raised by statement_timeout; counted per step and class.
        assert sum(n for k, n in create["errors"].items()
                   if k.startswith("execute:") and "57014" in k) == 3, create["errors"]
    assert own_rows(admin, table) == 0
    assert table_contents(admin, table) == before


def test_exhausted_pool_times_out_and_reports_held_connections(
        tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection, table: str,
        slow_inserts) -> None:
    slow_inserts(0.6)
    before = table_contents(admin, table)
    result = run_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                     "psycopg2:threaded,psycopg:pool,asyncpg:pool", "-n", "3", "-w", "3",
                     "--pool-min", "1", "--pool-max", "1", "--acquire-timeout", "0.3",
                     "--warmup", "0", "--trials", "1", "--no-chart", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    for s in results(tmp_path)["strategies"]:
        create = s["phases"][0]
        timeouts = sum(n for k, n in create["errors"].items() if k.startswith("acquire:"))
        assert timeouts >= 1, (s["name"], create["errors"])
        assert create["ops"] + sum(create["errors"].values()) == 3
        assert create["held_too_long"] >= 1  # a connection out for 0.6 s > 0.3 s
        # Failed operations keep their time: each waited the 0.3 s acquire timeout.
        assert create["failed"]["count"] == sum(create["errors"].values())
        assert create["failed"]["p50_us"] >= 290_000, create["failed"]
    assert "held longer than --acquire-timeout" in result.stdout
    assert own_rows(admin, table) == 0
    assert table_contents(admin, table) == before


def test_failed_operations_that_held_a_connection_too_long_are_reported(
        tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection, table: str,
        slow_inserts) -> None:
    """Inserts cancelled at 0.4 s held their connection past --acquire-timeout 0.2 s: a
    possible leak whether or not the statement succeeded."""
    slow_inserts(5)
    before = table_contents(admin, table)
    result = run_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                     "psycopg:pool,asyncpg:pool", "-n", "2", "-w", "1", "--pool-max", "1",
                     "--statement-timeout", "0.4", "--acquire-timeout", "0.2", "--warmup", "0",
                     "--trials", "1", "--no-chart", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    for s in results(tmp_path)["strategies"]:
        create = s["phases"][0]
        assert create["ops"] == 0 and sum(create["errors"].values()) == 2, create["errors"]
        assert create["held_too_long"] == 2, (s["name"], create["held_too_long"])
        # The server cancelled each at the timeout (57014) rather than let it sleep its
        # 5 s, and a cancelled operation kept its time: at least the 0.4 s it ran.
        assert all(k.startswith("execute:") and "57014" in k for k in create["errors"]), \
            create["errors"]
        assert create["failed"]["p50_us"] >= 400_000, create["failed"]
    assert table_contents(admin, table) == before
