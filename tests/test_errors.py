"""Each error case: one line naming cause and fix, its exit code, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from conftest import clean_env, run_cli, table_contents

from poolbench.db.server import free_port
from poolbench.db.target import ConnectionTarget


def assert_one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    # The only other line allowed is the "database: ..." note printed once connected.
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith("database: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("poolbench: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_connection_refused(tmp_path: Path) -> None:
    dsn = f"postgresql://u:pw@127.0.0.1:{free_port()}/db"
    result = run_cli("run", "--dsn", dsn, cwd=tmp_path)
    assert_one_line_error(result, 3, "connection refused", "host/port")


def test_authentication_failed(tmp_path: Path, target: ConnectionTarget) -> None:
    bad = target.with_params(password="not-the-password")
    result = run_cli("run", "--dsn", bad.conninfo(), cwd=tmp_path)
    assert_one_line_error(result, 3, "authentication failed", "password")
    assert "not-the-password" not in result.stderr


def test_database_missing(tmp_path: Path, target: ConnectionTarget) -> None:
    result = run_cli("run", "--dsn", target.with_params(dbname="nope").conninfo(), cwd=tmp_path)
    assert_one_line_error(result, 3, "database 'nope' does not exist", "createdb")


def test_no_permission_to_create_table(tmp_path: Path, target: ConnectionTarget,
                                       admin: psycopg.Connection) -> None:
    admin.execute("DROP ROLE IF EXISTS pb_reader")
    admin.execute("CREATE ROLE pb_reader LOGIN PASSWORD 'reader-pw'")
    try:
        dsn = target.with_params(user="pb_reader", password="reader-pw").conninfo()
        result = run_cli("run", "--dsn", dsn, "--table", "forbidden", cwd=tmp_path)
        assert_one_line_error(result, 4, "may not create table 'forbidden'", "GRANT CREATE")
        assert admin.execute("SELECT to_regclass('forbidden')").fetchone()[0] is None
    finally:
        admin.execute("DROP ROLE pb_reader")


def test_more_workers_than_max_connections(tmp_path: Path, target: ConnectionTarget) -> None:
    result = run_cli("run", "--dsn", target.conninfo(), "-w", "500", "--table", "never",
                     cwd=tmp_path)
    assert_one_line_error(result, 2, "needs 500 connections", "max_connections=120",
                          "--workers")


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_more_connections_than_open_files_is_refused_first(tmp_path: Path,
                                                           command: str) -> None:
    """Like pgbench: 400 connections held at once cannot fit in 300 file descriptors, so
    the run is refused before a server starts or a file is written."""
    import resource
    import subprocess
    import sys

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    proc = subprocess.run([sys.executable, "-m", "poolbench", command, "--strategies",
                           "psycopg:none", "--workers", "400"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, preexec_fn=lower_limit)
    assert_one_line_error(proc, 2, "psycopg:none holds up to 400 connections", "ulimit -n")
    assert not (tmp_path / "reports").exists() and "embedded server" not in proc.stdout


def test_missing_driver(tmp_path: Path, target: ConnectionTarget) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "asyncpg.py").write_text("raise ModuleNotFoundError(\"No module named 'asyncpg'\", "
                                       "name='asyncpg')\n")
    env = clean_env(PYTHONPATH=str(shadow))
    result = run_cli("run", "--dsn", target.conninfo(), "--strategies", "asyncpg:pool",
                     cwd=tmp_path, env=env)
    assert_one_line_error(result, 2, "asyncpg:pool needs the Python package 'asyncpg'",
                          "pip install asyncpg")


def test_schema_conflict_is_refused_untouched(tmp_path: Path, target: ConnectionTarget,
                                              admin: psycopg.Connection, table: str) -> None:
    admin.execute(f'CREATE TABLE "{table}" (id int PRIMARY KEY, name text)')
    admin.execute(f"INSERT INTO \"{table}\" VALUES (1, 'alice'), (2, 'bob')")
    before = table_contents(admin, table)
    result = run_cli("run", "--dsn", target.conninfo(), "--table", table, cwd=tmp_path)
    assert_one_line_error(result, 4, "exists with another shape", "--table")
    assert table_contents(admin, table) == before


@pytest.mark.parametrize(("args", "needle"), [
    (["-n", "0"], "-n/--rows"),
    (["-w", "-3"], "-w/--workers"),
    (["--trials", "0"], "--trials"),
    (["--pool-min", "9", "--pool-max", "4"], "--pool-min"),
    (["--strategies", "psycopg3:magic"], "unknown strategy"),
    (["--table", "users; drop table x"], "--table"),
    (["--dsn", "postgresql://u:secretpw@host:99999/db"], "port"),
    (["--dsn", "host=1 = 2"], "--dsn"),
    (["--dsn", "host=a,b,c port=1,2 dbname=d"], "2 ports for 3 host(s)"),  # libpq's rule
    (["--dsn", "host=a sslmode=bogus"], "sslmode 'bogus'"),
    (["--rows", "many"], "rows"),
    (["--duration", "0"], "--duration"),
    (["--duration", "-5"], "--duration"),
    (["--rate", "-1"], "--rate"),
    (["--rate", "0"], "--rate"),
    (["--processes", "0"], "--processes"),
    (["--processes", "8", "-w", "4"], "--processes"),
    (["--statement-timeout", "0"], "--statement-timeout"),
    (["--statement-timeout", "0.0004"], "--statement-timeout"),  # would be 0 ms: off
    (["--statement-timeout", "1e12"], "--statement-timeout"),  # beyond PostgreSQL's int
    (["--statement-timeout", "1", "--via", "pgbouncer:transaction"], "role or database"),
    (["--acquire-timeout", "-1"], "--acquire-timeout"),
    (["--env-file", "missing.env"], "--env-file"),
    (["--connect-samples", "-1"], "--connect-samples"),
])
def test_bad_input_is_a_usage_error(tmp_path: Path, args: list[str], needle: str) -> None:
    result = run_cli("run", *args, cwd=tmp_path)
    assert_one_line_error(result, 2, needle)
    assert "secretpw" not in result.stderr


@pytest.mark.parametrize("args", [["sweep", "--p99-slo", "nan"], ["sweep", "--warmup", "nan"],
                                  ["capture", "--sample", "inf", "--out", "x"],
                                  ["capture", "--sample", "nan", "--out", "x"]])
def test_a_number_that_is_not_finite_is_refused(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(result, 2, args[1], "finite")


def test_a_scale_beyond_pgbenchs_is_refused_before_pgbench(tmp_path: Path) -> None:
    result = run_cli("init", "-s", "99999999999", cwd=tmp_path)  # pgbench's limit: 2**31 - 1
    assert_one_line_error(result, 2, "--scale")




@pytest.mark.parametrize(("command", "mix", "fix"), [
    ("run", "read=199,delete=1", "give delete=2 or more"),  # a 0.5 share rounds to none
    ("run", "read=400,update=1,delete=1", "give update=3 and delete=3 or more"),
    ("sweep", "read=1000,delete=1", "give delete=6 or more"),
])
def test_a_mix_weight_that_rounds_to_no_operation_is_refused(tmp_path: Path, command: str,
                                                             mix: str, fix: str) -> None:
    """A mix deals its kinds out in cycles of 100 operations by their rounded shares: a
    kind whose share rounds to none would never run, so the mix is refused before
    anything starts, with the least weight that makes it run."""
    result = run_cli(command, "--mix", mix, cwd=tmp_path)
    assert_one_line_error(result, 2, f"--mix {mix}:", "would never run", fix)
    assert not (tmp_path / "reports").exists() and "embedded server" not in result.stdout


def test_unwritable_output_folder_is_refused_before_the_run(tmp_path: Path,
                                                            target: ConnectionTarget) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("run", "--dsn", target.conninfo(), "--out", str(blocker / "sub"),
                     cwd=tmp_path)
    assert_one_line_error(result, 2, "--out")


def test_malformed_env_file(tmp_path: Path) -> None:
    (tmp_path / "bad.env").write_text("DB_NAME=x\nthis line is not an assignment\n")
    result = run_cli("run", "--env-file", "bad.env", cwd=tmp_path)
    assert_one_line_error(result, 2, "--env-file", "line 2")


def test_unreadable_env_file(tmp_path: Path) -> None:
    (tmp_path / "bin.env").write_bytes(b"DB_NAME=\xff\xfe\n")
    result = run_cli("run", "--env-file", "bin.env", cwd=tmp_path)
    assert_one_line_error(result, 2, "--env-file", "cannot read")


def test_pool_max_above_max_connections(tmp_path: Path, target: ConnectionTarget,
                                        admin: psycopg.Connection) -> None:
    result = run_cli("run", "--dsn", target.conninfo(), "--strategies", "psycopg:pool",
                     "-w", "4", "--pool-max", "5000", "--table", "never_made", cwd=tmp_path)
    assert_one_line_error(result, 2, "--pool-max 5000", "max_connections=120")
    assert admin.execute("SELECT to_regclass('never_made')").fetchone()[0] is None


def test_debug_traceback_never_shows_the_password(tmp_path: Path,
                                                  target: ConnectionTarget) -> None:
    bad = target.with_params(password="Sup3r-secret-pw")
    result = run_cli("run", "--debug", "--dsn", bad.conninfo(), cwd=tmp_path)
    assert result.returncode == 3
    assert "Traceback" in result.stderr  # --debug does print it...
    assert "Sup3r-secret-pw" not in result.stderr + result.stdout  # ...masked


def test_pool_min_above_workers_counts_in_the_capacity_check(
        tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection) -> None:
    """A pool opens --pool-min connections however few workers there are."""
    result = run_cli("run", "--dsn", target.conninfo(), "--strategies", "psycopg:pool",
                     "-w", "2", "--pool-min", "119", "--pool-max", "119",
                     "--table", "never_made", cwd=tmp_path)
    assert_one_line_error(result, 2, "needs 119 connections", "max_connections=120")
    assert admin.execute("SELECT to_regclass('never_made')").fetchone()[0] is None


def test_show_password_never_reveals_the_users_own_server(tmp_path: Path,
                                                          target: ConnectionTarget) -> None:
    assert target.password
    result = run_cli("run", "--dsn", target.conninfo(), "--show-password", "-n", "5", "-w", "2",
                     "--warmup", "0", "--trials", "1", "--no-chart", "--table", "show_pw",
                     "--connect-samples", "1", cwd=tmp_path, keep_password=True)
    assert result.returncode == 0, result.stderr
    assert "database: postgresql://postgres:***@" in result.stderr
    assert target.password not in result.stdout + result.stderr


# A stand-in for asyncpg whose create_pool fails with an error that echoes its arguments,
# password included (as some driver errors do). It writes the password it got to a file,
# so the test knows the embedded server's password too.
SHADOW_ASYNCPG = '''
import os, pathlib

class Connection: ...

async def connect(**kwargs):
    raise RuntimeError(f"cannot connect with {kwargs}")

async def create_pool(**kwargs):
    pathlib.Path(os.environ["PB_SEEN_PASSWORD"]).write_text(kwargs["password"])
    raise RuntimeError(f"cannot pool with {kwargs}")
'''


@pytest.mark.parametrize("source", ["--dsn", "DATABASE_URL", ".env DATABASE_URL",
                                    ".env seed variables", "PG* variables", "embedded server",
                                    "--dsn, --processes 2"])
def test_unexpected_error_under_debug_masks_the_password_of_every_source(
        source: str, tmp_path: Path, target: ConnectionTarget) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "asyncpg.py").write_text(SHADOW_ASYNCPG)
    seen = tmp_path / "seen"
    env = clean_env(PYTHONPATH=str(shadow), PB_SEEN_PASSWORD=str(seen))
    dsn = target.conninfo()
    host, port, password = target.get("host"), target.get("port"), target.password
    seed = (f"DB_NAME=poolbench\nUSER_NAME=postgres\nPASSWORD={password}\nHOST={host}\n"
            f"PORT={port}\n")
    args = ["run", "--debug", "--strategies", "asyncpg:pool", "-w", "2", "--no-chart"]
    if source.startswith("--dsn"):
        args += ["--dsn", dsn]
    if source.endswith("--processes 2"):
        args += ["--processes", "2"]
    if source == "DATABASE_URL":
        env["DATABASE_URL"] = dsn
    if source == ".env DATABASE_URL":
        (tmp_path / ".env").write_text(f"DATABASE_URL={dsn}\n")
    if source == ".env seed variables":
        (tmp_path / ".env").write_text(seed)
    if source == "PG* variables":
        env.update(PGHOST=host, PGPORT=port, PGUSER="postgres", PGPASSWORD=password,
                   PGDATABASE="poolbench")
    result = run_cli(*args, cwd=tmp_path, env=env, keep_password=True)  # in --dsn, as named
    assert result.returncode == 1, result.stderr
    secret = seen.read_text()
    assert len(secret) >= 16  # the driver did get the password...
    output = result.stdout + result.stderr
    assert "cannot pool with" in output and "***" in output  # ...and its error was shown,
    assert secret not in output  # masked
