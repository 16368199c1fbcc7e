"""poolbench init: pgbench's tables made by pgbench's own initializer, only when confirmed,
never over tables that exist; run -b makes them on its own embedded server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import run_cli

from poolbench.db.target import ConnectionTarget

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")


@pytest.fixture
def database(target: ConnectionTarget) -> Iterator[ConnectionTarget]:
    """A database of this test's own on the session's server, dropped afterwards."""
    name = "init_" + secrets.token_hex(4)
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield ConnectionTarget.from_dsn(target.with_params(dbname=name).conninfo(), source="test")
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def counts(target: ConnectionTarget) -> dict[str, int]:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_init_makes_the_tables_once_and_never_over_existing_ones(
        tmp_path: Path, database: ConnectionTarget) -> None:
    dsn = database.conninfo()
    unconfirmed = run_cli("init", "-b", "tpcb-like", "-s", "2", "--dsn", dsn, cwd=tmp_path,
                          keep_password=True)  # masked in its messages
    assert unconfirmed.returncode == 2
    assert unconfirmed.stderr.strip().splitlines() == [
        f"poolbench: error: init writes to {database.masked()}: it creates "
        f"{', '.join(TABLES)} (200,000 accounts at scale 2); give --allow-writes to confirm"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('pgbench_accounts')").fetchone()[0] is None

    made = run_cli("init", "-b", "tpcb", "-s", "2", "--dsn", dsn, "--allow-writes",
                   cwd=tmp_path, keep_password=True)
    assert made.returncode == 0, made.stderr
    assert counts(database) == {"pgbench_accounts": 200_000, "pgbench_branches": 2,
                                "pgbench_tellers": 20, "pgbench_history": 0}
    assert database.password and database.password not in made.stdout + made.stderr

    with psycopg.connect(dsn, autocommit=True) as conn:  # a change a re-made table would lose
        conn.execute("UPDATE pgbench_accounts SET abalance = 42 WHERE aid = 7")
    again = run_cli("init", "-s", "1", "--dsn", dsn, "--allow-writes", cwd=tmp_path,
                    keep_password=True)
    assert again.returncode == 4
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("poolbench: error: pgbench's tables exist already in "
                           f"{database.masked()} (pgbench_accounts, pgbench_branches, "
                           "pgbench_tellers, pgbench_history); nothing changed"), line
    assert counts(database)["pgbench_accounts"] == 200_000
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT abalance FROM pgbench_accounts WHERE aid = 7"
                            ).fetchone()[0] == 42


def test_run_builtin_on_its_embedded_server_makes_pgbench_tables(tmp_path: Path) -> None:
    result = run_cli("run", "-b", "select-only", "-s", "1", "--strategies", "psycopg:pool",
                     "-w", "1", "--pool-max", "1", "-n", "20", "--warmup", "0", "--trials",
                     "1", "--no-chart", "--sample-interval", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "script:select-only" in (tmp_path / "reports" / "results.csv").read_text()
