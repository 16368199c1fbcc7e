"""``psycopg:none``: psycopg 3, a new connection for every operation."""

from __future__ import annotations

import psycopg

from poolbench.db.workload import Statement
from poolbench.strategies import psycopg_session
from poolbench.strategies.base import SyncStrategy


def execute(conn: psycopg.Connection, statement: Statement,
            params: tuple[object, ...]) -> int | None:
    """One statement on an autocommit psycopg 3 connection (shared by psycopg strategies)."""
    if statement.returns_row is None:
        psycopg_session.run_script_statement(conn, statement, params)
        return None
    cur = conn.execute(statement.sql, params)
    if statement.returns_row:
        row = cur.fetchone()
        return None if row is None else row[0]
    return cur.rowcount


class PsycopgNoPool(SyncStrategy):
    name = "psycopg:none"
    driver = "psycopg"
    pooled = False
    per_operation = "psycopg.connect(autocommit=True) (TCP + auth), statement, close()"
    script_mode = staticmethod(psycopg_session.script_mode)

    def open(self) -> None:
        self._conninfo = self.settings.target.conninfo()

    def acquire(self) -> psycopg.Connection:
        conn = psycopg.connect(self._conninfo, **self.settings.psycopg_kwargs())
        self.connections_opened += 1
        return conn

    def release(self, conn: psycopg.Connection) -> None:
        conn.close()

    def execute(self, conn: psycopg.Connection, statement: Statement,
                params: tuple[object, ...]) -> int | None:
        return execute(conn, statement, params)

    def close(self) -> None:
        pass
