"""Where the database comes from: --dsn, DATABASE_URL, the seed's .env variables, PG*; and
how run's options reach the config of every command that takes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import clean_env, run_cli

from poolbench.config import resolve_target
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError


def seed_env_text(target: ConnectionTarget) -> str:
    return (f"DB_NAME={target.get('dbname')}\nUSER_NAME={target.get('user')}\n"
            f"PASSWORD={target.password}\nHOST={target.get('host')}\nPORT={target.get('port')}\n")


def test_seed_env_file_is_honoured(tmp_path: Path, target: ConnectionTarget) -> None:
    (tmp_path / ".env").write_text(seed_env_text(target))
    result = run_cli("run", "-n", "20", "-w", "2", "--trials", "1", "--warmup", "0",
                     "--table", "env_users", "--no-chart", "--connect-samples", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DB_NAME/USER_NAME/PASSWORD/HOST/PORT" in result.stderr
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert data["config"]["target"] == target.masked()
    assert data["environment"]["embedded_server"] is False


def test_precedence_dsn_then_database_url_then_seed_then_libpq(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_NAME=seeddb\nHOST=seedhost\n")
    environ = {"DATABASE_URL": "postgresql://u@urlhost/urldb", "PGHOST": "pghost"}
    assert resolve_target(dsn="host=dsnhost", env_file=env_file, environ=environ).get(
        "host") == "dsnhost"
    assert resolve_target(dsn=None, env_file=env_file, environ=environ).get("host") == "urlhost"
    assert resolve_target(dsn=None, env_file=env_file, environ={"PGHOST": "pghost"}).get(
        "host") == "seedhost"
    (tmp_path / "empty.env").write_text("")
    assert resolve_target(dsn=None, env_file=tmp_path / "empty.env",
                          environ={"PGHOST": "pghost"}).get("host") == "pghost"
    assert resolve_target(dsn=None, env_file=tmp_path / "empty.env", environ={}) is None


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_NAME=filedb\nPORT=5432\n")
    t = resolve_target(dsn=None, env_file=env_file, environ={"DB_NAME": "envdb"})
    assert (t.get("dbname"), t.get("port")) == ("envdb", "5432")


def test_malformed_env_file_names_the_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_NAME=x\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match="line 2"):
        resolve_target(dsn=None, env_file=env_file, environ={})
    result = run_cli("run", "--env-file", str(env_file), cwd=tmp_path, env=clean_env())
    assert result.returncode == 2 and "line 2" in result.stderr


def test_masked_dsn_hides_the_password() -> None:
    t = ConnectionTarget.from_dsn("postgresql://bob:s3cr%40t@db.example:6432/app?sslmode=require",
                                  source="--dsn")
    assert t.password == "s3cr@t"
    assert t.masked() == "postgresql://bob:***@db.example:6432/app?sslmode=require"
    assert "s3cr" in t.masked(show_password=True)


def options_in_help(command: str, tmp_path: Path) -> set[str]:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)", result.stdout, re.MULTILINE))


def test_sweep_and_calibrate_list_runs_options(tmp_path: Path) -> None:
    """One set of options: a sweep lists every option of run's that its points use, and
    calibrate all of run's but --baseline, which it implies."""
    run_options = options_in_help("run", tmp_path)
    assert {"--dsn", "--duration", "--trials", "--mix", "--via", "--debug"} <= run_options
    # A sweep has its own -w/--workers (a list) and --warmup (seconds), runs no pgbench
    # and keeps no server.
    whole_run_only = {"--warmup-seconds", "--baseline", "--baseline-seconds", "--keep-server",
                      "--show-password"}
    sweep_options = options_in_help("sweep", tmp_path)
    assert run_options - whole_run_only <= sweep_options, run_options - sweep_options
    assert not sweep_options & whole_run_only
    assert options_in_help("calibrate", tmp_path) == run_options - {"--baseline"}


def test_sweep_takes_runs_options_in_either_spelling(tmp_path: Path, target: ConnectionTarget,
                                                     table: str) -> None:
    """`--duration=1` and `--trials=2` (click's --x=1 form) reach the sweep's config as
    `--x 1` does: the appended 3 s default and a looked-for `--trials` used to win."""
    result = run_cli("sweep", "--strategies=psycopg:pool", "--pool-sizes=2", "-w", "2",
                     "--duration=1", "--trials=2", "--warmup=0", "--rows=20", "--no-chart",
                     f"--dsn={target.conninfo()}", "--table", table, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "sweep.json").read_text())
    config = data["config"]
    assert (config["duration_s"], config["trials"], config["warmup"]) == (1.0, 2, 0)
    assert (config["pool_sizes"], config["workers"], config["rows"]) == ([2], [2], 20)
    assert [(p["pool_size"], p["workers"]) for p in data["points"]] == [(2, 2)]
    assert not (tmp_path / "reports" / "sweep.png").exists()  # --no-chart reached it too
    assert "Sweep written to reports/ (sweep.json)" in result.stdout


def test_poolbenchs_own_session_is_not_cancelled_by_a_timeout_in_the_dsns_options(
        target: ConnectionTarget) -> None:
    """A DSN whose options set statement_timeout (for the workload): poolbench's own
    session runs without it, so its setup, snapshots and data check are never cancelled
    (a 1-ms one cancelled its first query: 'unexpected QueryCanceled')."""
    from poolbench.db.admin import connect_admin

    timed = target.with_settings(statement_timeout="1")
    with connect_admin(timed) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        conn.execute("SELECT pg_sleep(0.01)")
