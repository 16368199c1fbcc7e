"""pgbench's tables (``pgbench_accounts``, ``_branches``, ``_tellers``, ``_history``), which
its built-in scripts (``-b tpcb-like|simple-update|select-only``) work on: made by pgbench's
own initializer, ``pgbench -i``, never by a copy of its SQL.

``pgbench -i`` first drops those tables wherever they exist (its step ``d``). poolbench
never runs that step: it refuses when any of them exists, and runs the steps that create,
fill, vacuum and index them (``-I tgvp``), so even a table made between its look and
pgbench's start is not dropped (pgbench then fails on it, and poolbench drops nothing).
What pgbench made before failing otherwise, or being interrupted, is dropped: none of
those tables existed when it started.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from poolbench.db.admin import connect_admin
from poolbench.db.pgbench_connection import connection_env, connection_flags
from poolbench.db.target import ConnectionTarget, redact
from poolbench.errors import SchemaConflict, ServerError

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
INIT_STEPS = "tgvp"  # pgbench's default, "dtgvp", without d: drop the tables first
# Rows pgbench -i makes per unit of scale (pgbench.c: naccounts, nbranches, ntellers)
ROWS_PER_SCALE = {"pgbench_accounts": 100_000, "pgbench_branches": 1, "pgbench_tellers": 10,
                  "pgbench_history": 0}


@dataclass(frozen=True)
class PgbenchTables:
    """pgbench's tables as ``init_tables`` made them: their rows, counted afterwards."""

    scale: int
    rows: tuple[tuple[str, int], ...]  # (table, rows), in TABLES' order
    seconds: float


def existing_tables(conn: psycopg.Connection) -> tuple[str, ...]:
    """Those of pgbench's tables this session sees by their bare names (its search_path:
    where pgbench, connecting the same way, would look)."""
    return tuple(name for name in TABLES if conn.execute(
        "SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None)


def init_tables(pgbench: Path, target: ConnectionTarget, *, scale: int) -> PgbenchTables:
    """Make pgbench's tables at ``scale`` on ``target`` with ``pgbench -i -I tgvp``; raise
    SchemaConflict, touching nothing, if any of them exists already."""
    with connect_admin(target) as conn:
        found = existing_tables(conn)
    if found:
        raise SchemaConflict(
            f"pgbench's tables exist already in {target.masked()} ({', '.join(found)}); "
            "nothing changed: run the built-ins on them with the --scale they were made "
            "with, or drop them yourself to make them afresh (poolbench never drops them)")
    args = [str(pgbench), "-i", "-I", INIT_STEPS, "-s", str(scale), "-q",
            *connection_flags(target), target.dbname]
    started = time.monotonic()
    try:
        proc = subprocess.run(args, env=connection_env(target), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
    except BaseException:
        _drop_made(target)
        raise
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        if "already exists" in proc.stderr:  # made by someone else since the look: theirs
            raise SchemaConflict(f"pgbench -i stopped: {redact(last, *target.secrets())} "
                                 "(made by another session meanwhile); nothing dropped")
        _drop_made(target)
        raise ServerError(f"pgbench -i failed: {redact(last, *target.secrets())}; what it "
                          "had made is dropped")
    seconds = time.monotonic() - started
    with connect_admin(target) as conn:
        rows = tuple((name, conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
                     for name in TABLES)
    return PgbenchTables(scale=scale, rows=rows, seconds=round(seconds, 3))


def _drop_made(target: ConnectionTarget) -> None:
    """Drop what a failed or interrupted ``pgbench -i`` made (none of it existed before)."""
    with connect_admin(target) as conn:
        made = existing_tables(conn)
        if made:
            conn.execute(f"DROP TABLE {', '.join(made)}")
