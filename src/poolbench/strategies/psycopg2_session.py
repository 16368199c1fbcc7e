"""How every psycopg2 strategy runs a statement: autocommit, one round trip.

psycopg2 opens a transaction on the first statement unless ``autocommit`` is
set; a read would then leave the connection "idle in transaction" until the
pool rolls it back. With autocommit each statement is its own transaction,
which is what psycopg2's documentation recommends for single statements.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from poolbench.db.workload import ScriptMode, Statement


def connect(conninfo: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    return conn


def execute(conn: psycopg2.extensions.connection, statement: Statement,
            params: tuple[object, ...]) -> int | None:
    with conn.cursor() as cur:
        if statement.returns_row is None:  # a script's: its values already in the text
            cur.execute(statement.sql)  # no arguments: psycopg2 sends the text as it is
            return None
        cur.execute(statement.sql, params)
        if statement.returns_row:
            row = cur.fetchone()
            return None if row is None else row[0]
        return cur.rowcount


def script_mode(protocol: str, *, prepared_statements: bool) -> ScriptMode:
    """-M on psycopg2: it interpolates values on the client, so every mode is ``simple``."""
    runs = "" if protocol == "simple" else f" (-M {protocol} runs as simple)"
    return ScriptMode("simple", "simple", False,
                      "psycopg2 puts values into the text on the client and sends one query "
                      "string: the simple query protocol" + runs + "; the values are put in "
                      "as pgbench -M simple puts them")
