"""An optional measurement that fails (pgbench calibration, the connect-cost probe, the
sampler, the pooler console) is reported as "not measured: why"; the run completes with
exit 0 and every report."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from conftest import run_cli, seed_table

from poolbench.check.calibrate import PGBENCH_APPLICATION_NAME
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident


def test_a_failed_calibration_is_not_measured_and_the_run_completes(
        tmp_path: Path, target: ConnectionTarget, table: str,
        admin: psycopg.Connection) -> None:
    # The server refuses pgbench's writes (and only pgbench's): its calibration fails for
    # real, while the run's own strategies work.
    seed_table(admin, table, 0)
    admin.execute(f"""
        CREATE FUNCTION {quote_ident(table + "_no_pgbench")}() RETURNS trigger AS $$
        BEGIN
            IF current_setting('application_name') = '{PGBENCH_APPLICATION_NAME}' THEN
                RAISE EXCEPTION 'pgbench may not write here';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""")
    admin.execute(f"CREATE TRIGGER no_pgbench BEFORE INSERT OR UPDATE ON {quote_ident(table)} "
                  f"FOR EACH ROW EXECUTE FUNCTION {quote_ident(table + '_no_pgbench')}()")
    try:
        result = run_cli("run", "--dsn", target.conninfo(), "--strategies", "psycopg:pool",
                         "-n", "20", "-w", "2", "--warmup", "0", "--trials", "1",
                         "--baseline", "pgbench", "--baseline-seconds", "1", "--table", table,
                         cwd=tmp_path)
    finally:
        admin.execute(f"DROP TABLE {quote_ident(table)}")
        admin.execute(f"DROP FUNCTION {quote_ident(table + '_no_pgbench')}()")
    assert result.returncode == 0, result.stderr
    assert "pgbench calibration: not measured:" in result.stdout
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert data["calibration"] is None
    assert "pgbench" in data["not_measured"]["pgbench calibration"]
    assert data["verification"]["ok"] and data["strategies"][0]["server"]["ok"]
    assert "Not measured" in (tmp_path / "reports" / "report.html").read_text()
    assert "pgbench calibration: not measured:" in (tmp_path / "reports" / "results.md"
                                                    ).read_text()
