"""SIGINT/SIGTERM mid-run: rows deleted, partial results written, 130/143;
``poolbench cleanup`` removes a dead run's rows and only those.

How soon a run exits after the signal is the machine's speed (bench/interrupt_time.py);
here a generous deadline only guards against a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import (
    cli,
    has_ended,
    run_cli,
    seed_table,
    table_contents,
    wait_for_run_rows,
)

from poolbench.db.target import ConnectionTarget


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleans_and_writes_partial_results(
        sig: signal.Signals, code: int, tmp_path: Path, target: ConnectionTarget,
        admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 10_000)
    before = table_contents(admin, table)
    command, env = cli(["run", "--dsn", target.conninfo(), "--table", table,
                        "-n", "100000", "-w", "8", "--strategies", "psycopg:pool"])
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_run_rows(admin, table, proc)
        samplers = [p for p in psutil.Process(proc.pid).children()
                    if "sampler_process" in " ".join(p.cmdline())]
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code
    finally:
        proc.kill()
    assert len(samplers) == 1 and has_ended(samplers[0])  # no sampler left running
    assert table_contents(admin, table) == before
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert data["partial"] is True
    assert data["verification"]["ok"] is True and data["verification"]["own_rows_left"] == 0
    assert "interrupted" in proc.stderr.read()
    out = proc.stdout.read()
    # the cut phase's CPU is not spread over the operations of the phases kept
    assert "psycopg:pool was interrupted mid-phase" in out
    # the rows the cut left are the interruption's, not failed deletes'
    assert "rows the interrupted run left" in out and "failed deletes" not in out


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


@pytest.mark.parametrize(("columns", "row"), [
    ("id int, username text, balance int", "1, 'pb0123abcd_x', 100"),
    ("id int, name text", "1, 'pb0123abcd_x'")])
def test_cleanup_leaves_a_table_not_of_poolbenchs_shape_untouched(
        columns: str, row: str, tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection,
        table: str) -> None:
    """A table no run could have written (run refuses it): its rows stay, even one whose
    username starts with the tag; one line, exit 4."""
    admin.execute(f'CREATE TABLE "{table}" ({columns})')
    admin.execute(f'INSERT INTO "{table}" VALUES ({row})')
    before = table_contents(admin, table)
    result = run_cli("cleanup", "--run-tag", "pb0123abcd", "--table", table,
                     "--dsn", target.conninfo(), cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert "not of poolbench's shape" in result.stderr and len(result.stderr.splitlines()) == 1
    assert table_contents(admin, table) == before


@pytest.mark.parametrize("tag", ["", "pb", "pb0123abc%", "users", "pb0123ABCD"])
def test_cleanup_refuses_what_is_not_a_run_tag(tag: str, tmp_path: Path,
                                               target: ConnectionTarget) -> None:
    result = run_cli("cleanup", "--run-tag", tag, "--dsn", target.conninfo(), cwd=tmp_path)
    assert result.returncode == 2 and "--run-tag" in result.stderr


def test_interrupted_run_whose_data_check_failed_exits_6(
        tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection, table: str) -> None:
    """Someone else changes a row mid-run, then the run is interrupted: the failed data
    check outranks the interrupt."""
    seed_table(admin, table, 100)
    command, env = cli(["run", "--dsn", target.conninfo(), "--table", table,
                        "-n", "100000", "-w", "4", "--strategies", "psycopg:pool", "--no-chart"])
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_run_rows(admin, table, proc)
        admin.execute(f"UPDATE \"{table}\" SET email = 'changed@example.com' WHERE id = 1")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 6, proc.stderr.read()
    finally:
        proc.kill()
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert data["partial"] is True and data["verification"]["ok"] is False
    assert data["verification"]["own_rows_left"] == 0


def test_ctrl_c_during_calibration_stops_pgbench_and_cleans_up(
        tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection, table: str) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: pgbench runs in a
    session of its own, so poolbench stops it and finishes as after any interrupt."""
    seed_table(admin, table, 1000)
    before = table_contents(admin, table)
    command, env = cli(["calibrate", "--dsn", target.conninfo(), "--table", table, "-n", "20",
                        "-w", "2", "--warmup", "0", "--trials", "1", "--strategies",
                        "psycopg:pool", "--baseline-seconds", "3600", "--no-chart"])
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own group, as a shell gives a foreground job
    try:
        deadline = time.monotonic() + 60
        while not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                "= 'poolbench-pgbench'").fetchone()[0]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        # pgbench was told to run for an hour: an exit within ten minutes (a deadline only
        # a hang reaches, however loaded the machine) means poolbench stopped it rather
        # than waiting for it.
        assert proc.wait(timeout=600) == 130, proc.stderr.read()
    finally:
        proc.kill()
    assert subprocess.run(["pgrep", "-f", f"pgbench.*{target.get('port')}"],
                          capture_output=True).returncode == 1  # no pgbench left
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert data["partial"] is True and data["calibration"] is None
    assert data["verification"]["ok"] is True and data["verification"]["own_rows_left"] == 0
    assert table_contents(admin, table) == before
