"""How every psycopg2 strategy runs a statement: autocommit, one round trip.

psycopg2 opens a transaction on the first statement unless ``autocommit`` is
set; a read would then leave the connection "idle in transaction" until the
pool rolls it back. With autocommit each statement is its own transaction,
which is what psycopg2's documentation recommends for single statements.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from poolbench.db.workload import Statement


def connect(conninfo: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    return conn


def execute(conn: psycopg2.extensions.connection, statement: Statement,
            params: tuple[object, ...]) -> int | None:
    with conn.cursor() as cur:
        cur.execute(statement.sql, params)
        if statement.returns_row:
            row = cur.fetchone()
            return None if row is None else row[0]
        return cur.rowcount
