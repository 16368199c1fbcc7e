"""One real embedded PostgreSQL per test session, and helpers to run the real CLI."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident

# Each test's CLI, worker processes, relay... is a fresh Python. Where bytecode writing is
# off (PYTHONDONTWRITEBYTECODE, as container images often set it), every one of them
# compiled poolbench anew: this session's processes share a bytecode cache of their own
# instead, outside the source tree, removed at the end.
if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
    BYTECODE = tempfile.mkdtemp(prefix="poolbench-tests-pyc-")
    atexit.register(shutil.rmtree, BYTECODE, ignore_errors=True)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = BYTECODE

# Variables that would pick a database behind the test's back.
DB_VARIABLES = ("DATABASE_URL", "DB_NAME", "USER_NAME", "PASSWORD", "HOST", "PORT", "PGHOST",
                "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSERVICE")


# The test servers' throwaway passwords (the session's, and those of modules' own servers
# added by their fixtures): the CLI helpers below hand them to the CLI in PGPASSWORD, never
# on its command line (where ``ps`` shows it), as a user should.
SERVER_PASSWORDS: set[str] = set()


@pytest.fixture(scope="session")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(max_connections=120) as srv:
        assert srv.target is not None and srv.target.password
        SERVER_PASSWORDS.add(srv.target.password)
        yield srv


@pytest.fixture(scope="session")
def target(server: EmbeddedServer) -> ConnectionTarget:
    assert server.target is not None
    return server.target


def users_dsn(target: ConnectionTarget, *without: str) -> ConnectionTarget:
    """``target`` as a user's ``--dsn`` names it (not poolbench's embedded server), naming
    none of ``without`` (libpq's environment and defaults then choose them)."""
    return ConnectionTarget(target.without_params(*without).params, "--dsn")


@pytest.fixture
def admin(target: ConnectionTarget) -> Iterator[psycopg.Connection]:
    # Not named 'poolbench': fault injectors terminate the benchmark's backends by that name.
    with psycopg.connect(target.with_params(application_name="poolbench-test").conninfo(),
                         autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(target: ConnectionTarget) -> Iterator[str]:
    """A fresh table name for one test; dropped afterwards (on a connection of its own,
    which a test that restarts the server has not broken)."""
    name = "t_" + secrets.token_hex(4)
    yield name
    with psycopg.connect(target.with_params(application_name="poolbench-test").conninfo(),
                         autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")


def seed_table(conn: psycopg.Connection, table: str, rows: int) -> None:
    """The seed's table with ``rows`` pre-existing rows that are not poolbench's."""
    conn.execute(f"CREATE TABLE {quote_ident(table)} (id SERIAL PRIMARY KEY, "
                 "username VARCHAR(50) UNIQUE NOT NULL, email VARCHAR(100) UNIQUE NOT NULL, "
                 "created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW())")
    conn.execute(f"INSERT INTO {quote_ident(table)} (username, email) "
                 "SELECT 'user' || g, 'user' || g || '@example.com' "
                 "FROM generate_series(1, %s) g", (rows,))
    # Publish these inserts now: an idle session's counters otherwise reach
    # pg_stat_user_tables up to 10 s later, inside the run's cross-check window.
    conn.execute("SELECT pg_stat_force_next_flush()")


def wait_for_run_rows(conn: psycopg.Connection, table: str, proc: subprocess.Popen,
                      timeout_s: float = 180) -> None:
    """Block until the run has created rows of its own (its usernames start with 'pb'):
    a condition polled, with a deadline only a hang would reach."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        if conn.execute(f"SELECT count(*) FROM {quote_ident(table)} WHERE username LIKE %s",
                        ("pb%",)).fetchone()[0]:
            return
        time.sleep(0.02)  # between two looks, not in place of one: the server stays free
    pytest.fail("the run never created a row")


def has_ended(process: psutil.Process, timeout_s: float = 60) -> bool:
    """Whether ``process`` exits (gone, or a zombie its new parent has not reaped yet): a
    condition polled, with a deadline only a hang would reach."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def recording_pgbench(tmp_path: Path, source: str) -> tuple[Path, Path]:
    """A transparent stand-in for pgbench: ``source`` (its ``{keep}`` and ``{real}`` filled
    in) run by this Python, which runs the real pgbench and keeps what it saw. Returns the
    stand-in's path and the folder it keeps things in."""
    from poolbench.db.binaries import find_pgbench

    keep = tmp_path / "seen"
    keep.mkdir()
    recorder = tmp_path / "pgbench"
    recorder.write_text(f"#!{sys.executable}\n"
                        + source.format(keep=str(keep), real=str(find_pgbench())))
    recorder.chmod(0o755)
    return recorder, keep


DSN_OPTIONS = ("--dsn", "--pooler-dsn")  # the CLI's options that take a DSN


def cli(args: tuple[str, ...] | list[str], env: dict[str, str] | None = None, *,
        keep_password: bool = False) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the real CLI for ``args``: a ``--dsn`` or
    ``--pooler-dsn`` carrying a test server's password carries it no more, and PGPASSWORD
    does (unless ``keep_password``, for a test of a password given in the DSN, or the
    test's environment sets another PGPASSWORD)."""
    env = dict(env or clean_env())
    out: list[str] = []
    after_dsn = False
    for arg in args:
        name, eq, value = arg.partition("=")
        if after_dsn:
            out.append(_without_password(arg, env, keep_password))
        elif eq and name in DSN_OPTIONS:
            out.append(f"{name}={_without_password(value, env, keep_password)}")
        else:
            out.append(arg)
        after_dsn = arg in DSN_OPTIONS
    return [sys.executable, "-m", "poolbench", *out], env


def _without_password(dsn: str, env: dict[str, str], keep: bool) -> str:
    """``dsn`` without a test server's password, which goes to ``env``'s PGPASSWORD."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return dsn
    password = params.pop("password", None)
    if keep or password not in SERVER_PASSWORDS or env.get("PGPASSWORD") not in (None, password):
        return dsn
    env["PGPASSWORD"] = password
    return make_conninfo("", **params)


def start_cli(*args: str, cwd: Path, keep_password: bool = False) -> subprocess.Popen:
    """The real CLI in the background, output captured."""
    command, env = cli(args, keep_password=keep_password)
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def table_contents(conn: psycopg.Connection, table: str) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT * FROM {quote_ident(table)} ORDER BY id").fetchall()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DB_VARIABLES}
    env.update(extra)
    env["COLUMNS"] = "200"
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300, keep_password: bool = False) -> CliResult:
    command, env = cli(args, env, keep_password=keep_password)
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
