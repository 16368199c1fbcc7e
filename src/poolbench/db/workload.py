"""The seed's ``users`` table and the four CRUD phases: every SQL statement lives here.

Each run owns its rows through a *run tag* (``pb`` + 8 hex digits) that prefixes
every username and email it creates. Reads, updates and deletes address rows by
the ids the run's own inserts returned; the end-of-run sweep deletes by tag
prefix. A row without the tag is never written.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from poolbench.errors import PermissionProblem, SchemaConflict

INSUFFICIENT_PRIVILEGE = "42501"


# The seed's DDL, verbatim but for the quoted table name.
CREATE_TABLE = """CREATE TABLE {table} (
  id SERIAL PRIMARY KEY,
  username VARCHAR(50) UNIQUE NOT NULL,
  email VARCHAR(100) UNIQUE NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
)"""

# (name, type as format_type prints it, NOT NULL) per column, in order.
EXPECTED_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("id", "integer", True),
    ("username", "character varying(50)", True),
    ("email", "character varying(100)", True),
    ("created_at", "timestamp with time zone", False),
)


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident does (always quoted)."""
    return '"' + name.replace('"', '""') + '"'


def new_run_tag() -> str:
    return "pb" + secrets.token_hex(4)


RUN_TAG = re.compile(r"^pb[0-9a-f]{8}$")


@dataclass(frozen=True)
class Statement:
    """One phase's SQL, written with ``%s`` placeholders (psycopg, psycopg2); or one SQL
    command of a script (``returns_row`` None: run it, its result is ignored).

    A script's statement is written as its strategy's :class:`ScriptMode` asks (values in
    the text, ``%s`` or ``$n``) and sent as ``protocol`` says: ``simple`` without
    parameters, ``extended`` with them, ``prepared`` prepared on each connection."""

    phase: str  # a CRUD phase, or the script's name
    sql: str
    returns_row: bool | None
    protocol: str = "extended"  # scripts: simple, extended or prepared, as this driver sends
    source: str = ""  # scripts: file:line, for messages
    in_transaction: bool = False  # scripts: between BEGIN and COMMIT (on an error, roll back)

    @cached_property  # asked for on every asyncpg operation: computed once per statement
    def numbered_sql(self) -> str:
        """The same SQL with ``$1, $2...`` placeholders (asyncpg, pgbench scripts)."""
        return self._numbered("$")

    @cached_property
    def named_sql(self) -> str:
        """The same SQL with ``:p1, :p2...`` placeholders (SQLAlchemy's ``text()``)."""
        return self._numbered(":p")

    def _numbered(self, mark: str) -> str:
        parts = self.sql.split("%s")
        return parts[0] + "".join(f"{mark}{i}{p}" for i, p in enumerate(parts[1:], start=1))


# Sent after a script's statement failed inside its BEGIN ... COMMIT: a pooled connection
# never goes back to its pool in a failed transaction.
SCRIPT_ROLLBACK = Statement("rollback", "ROLLBACK", None, "simple")


@dataclass(frozen=True)
class ScriptMode:
    """How one driver sends a script's statements for pgbench's ``-M`` (see docs/scripts.md).

    ``style``: where values go: ``simple`` (into the text, as pgbench ``-M simple``),
    ``format`` (``%s``) or ``dollar`` (``$n``). ``params_as_text``: values are sent as
    pgbench's text (type unknown, as pgbench sends them) rather than Python numbers.
    ``note`` says in results what ``-M`` became on this driver; ``extra`` what the driver
    adds to the server's transaction count in this mode (None: nothing). ``typed_params``:
    the driver encodes each value by the type the server infers for its parameter
    (asyncpg), so a parameter typed other than a number or boolean must be given text."""

    protocol: str  # what the driver does: simple, extended or prepared
    style: str
    params_as_text: bool
    note: str
    extra: str | None = None
    typed_params: bool = False


@dataclass(frozen=True)
class RunTable:
    """The statements and row naming of one run against one table."""

    table: str
    run_tag: str

    @property
    def prefix(self) -> str:
        return f"{self.run_tag}_"

    def statements(self) -> dict[str, Statement]:
        t = quote_ident(self.table)
        return {
            "create": Statement("create", f"INSERT INTO {t} (username, email) VALUES (%s, %s) "
                                          "RETURNING id", True),
            "read": Statement("read", f"SELECT id, username, email, created_at FROM {t} "
                                      "WHERE id = %s", True),
            "update": Statement("update", f"UPDATE {t} SET email = %s WHERE id = %s", False),
            "delete": Statement("delete", f"DELETE FROM {t} WHERE id = %s", False),
        }

    def username(self, trial: int, index: int) -> str:
        return f"{self.run_tag}_{trial}_{index}"

    def create_row(self, trial: int, index: int) -> tuple[object, ...]:
        """Parameters of the create statement for row ``index`` of a trial."""
        name = self.username(trial, index)
        return (name, f"{name}@poolbench.invalid")

    def update_row(self, trial: int, index: int, row_id: int) -> tuple[object, ...]:
        """Parameters of the update statement for the ``index``-th created row (unique email)."""
        return (f"{self.username(trial, index)}.u@poolbench.invalid", row_id)

    def create_params(self, trial: int, rows: int) -> list[tuple[object, ...]]:
        return [self.create_row(trial, i) for i in range(rows)]

    def update_params(self, trial: int, ids: list[int]) -> list[tuple[object, ...]]:
        return [self.update_row(trial, i, row_id) for i, row_id in enumerate(ids)]


# -- table management (an autocommit DB-API connection: psycopg 3 or psycopg2) -----


def _query(conn: Any, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _rowcount(conn: Any, sql: str, params: tuple[object, ...]) -> int:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return int(cur.rowcount)


def ensure_table(conn: Any, table: str) -> bool:
    """Create the table if missing (returns True), else check it has the seed's shape.

    Raises SchemaConflict (touching nothing) for another shape, PermissionProblem
    when the role may not create it.
    """
    if _query(conn, "SELECT to_regclass(%s)", (quote_ident(table),))[0][0] is None:
        try:
            _query(conn, CREATE_TABLE.format(table=quote_ident(table)))
        except Exception as exc:
            if INSUFFICIENT_PRIVILEGE not in (getattr(exc, "sqlstate", None),
                                              getattr(exc, "pgcode", None)):
                raise
            user, db = _query(conn, "SELECT current_user, current_database()")[0]
            raise PermissionProblem(
                f"role {user!r} may not create table {table!r} in database {db!r}; "
                f"GRANT CREATE ON SCHEMA public TO {user}, or create the table with the seed's "
                "DDL (see docs/workload.md)") from None
        return True
    check_shape(conn, table)
    return False


def check_shape(conn: Any, table: str) -> None:
    rows = _query(
        conn, "SELECT attname, format_type(atttypid, atttypmod), attnotnull, atthasdef "
        "FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (quote_ident(table),))
    found = tuple((name, typ, notnull) for name, typ, notnull, _ in rows)
    id_has_default = bool(rows) and rows[0][0] == "id" and rows[0][3]
    if found != EXPECTED_COLUMNS or not id_has_default:
        shape = ", ".join(f"{n} {t}" for n, t, _ in found)
        raise SchemaConflict(
            f"table {table!r} exists with another shape ({shape}); poolbench left it untouched. "
            "Use --table NAME to benchmark on a table of its own")


@dataclass(frozen=True)
class TableSnapshot:
    """Count and digest of every row the run does not own (ordered by id, all columns)."""

    rows: int
    digest: str


def snapshot_others(conn: Any, table: str, prefix: str) -> TableSnapshot:
    t = quote_ident(table)
    count, digest = _query(
        conn, f"SELECT count(*), md5(coalesce(string_agg(md5(t::text), ',' ORDER BY t.id), '')) "
        f"FROM {t} t WHERE NOT starts_with(t.username, %s)", (prefix,))[0]
    return TableSnapshot(rows=int(count), digest=str(digest))


def count_own_rows(conn: Any, table: str, prefix: str) -> int:
    return int(_query(conn, f"SELECT count(*) FROM {quote_ident(table)} "
                            "WHERE starts_with(username, %s)", (prefix,))[0][0])


def delete_own_rows(conn: Any, table: str, prefix: str) -> int:
    """Delete every row whose username carries the run's tag; return how many."""
    return _rowcount(conn, f"DELETE FROM {quote_ident(table)} WHERE starts_with(username, %s)",
                     (prefix,))


def make_rows(conn: Any, table: str, workload: RunTable, rows: int) -> tuple[int, ...]:
    """``rows`` rows of the run (one statement), for a mixed workload to start on."""
    name = f"{workload.prefix}m"
    return tuple(r[0] for r in _query(
        conn, f"INSERT INTO {quote_ident(table)} (username, email) SELECT %s || g, %s || g || "
        "'@poolbench.invalid' FROM generate_series(1, %s) g RETURNING id",
        (name, name, rows)))
