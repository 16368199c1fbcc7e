"""SIGINT/SIGTERM mid-run: rows deleted, partial results written, 130/143 within 5 s;
``poolbench cleanup`` removes a dead run's rows and only those."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from conftest import clean_env, run_cli, seed_table, table_contents, wait_for_run_rows

from poolbench.db.target import ConnectionTarget


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleans_and_writes_partial_results(
        sig: signal.Signals, code: int, tmp_path: Path, target: ConnectionTarget,
        admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 10_000)
    before = table_contents(admin, table)
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolbench", "run", "--dsn", target.conninfo(), "--table", table,
         "-n", "100000", "-w", "8", "--strategies", "psycopg:pool"],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_run_rows(admin, table, proc)
        sent = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code
        assert time.monotonic() - sent < 5
    finally:
        proc.kill()
    assert table_contents(admin, table) == before
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert data["partial"] is True
    assert data["verification"]["ok"] is True and data["verification"]["own_rows_left"] == 0
    assert "interrupted" in proc.stderr.read()


def test_cleanup_deletes_only_the_runs_rows(tmp_path: Path, target: ConnectionTarget,
                                            admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 50)
    before = table_contents(admin, table)
    admin.execute(f'INSERT INTO "{table}" (username, email) SELECT '
                  "'pb0123abcd_0_' || g, 'pb0123abcd_0_' || g || '@poolbench.invalid' "
                  "FROM generate_series(1, 30) g")
    admin.execute(f'INSERT INTO "{table}" (username, email) VALUES '
                  "('pb0123abce_0_1', 'other-run@poolbench.invalid')")
    result = run_cli("cleanup", "--run-tag", "pb0123abcd", "--table", table,
                     "--dsn", target.conninfo(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "deleted 30 rows" in result.stdout
    after = table_contents(admin, table)
    assert after[:50] == before and [r[1] for r in after[50:]] == ["pb0123abce_0_1"]


@pytest.mark.parametrize("tag", ["", "pb", "pb0123abc%", "users", "pb0123ABCD"])
def test_cleanup_refuses_what_is_not_a_run_tag(tag: str, tmp_path: Path,
                                               target: ConnectionTarget) -> None:
    result = run_cli("cleanup", "--run-tag", tag, "--dsn", target.conninfo(), cwd=tmp_path)
    assert result.returncode == 2 and "--run-tag" in result.stderr
