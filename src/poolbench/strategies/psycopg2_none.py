"""``psycopg2:none``: a new connection for every operation (the seed's NoPoolManager)."""

from __future__ import annotations

import psycopg2.extensions

from poolbench.db.workload import Statement
from poolbench.strategies import psycopg2_session
from poolbench.strategies.base import SyncStrategy


class Psycopg2NoPool(SyncStrategy):
    name = "psycopg2:none"
    driver = "psycopg2"
    pooled = False
    per_operation = ("psycopg2.connect() (TCP + auth), autocommit statement, close()")
    script_mode = staticmethod(psycopg2_session.script_mode)

    def open(self) -> None:
        self._conninfo = self.settings.target.conninfo()

    def acquire(self) -> psycopg2.extensions.connection:
        conn = psycopg2_session.connect(self._conninfo)
        self.connections_opened += 1  # int += is atomic enough under the GIL for a counter
        return conn

    def release(self, conn: psycopg2.extensions.connection) -> None:
        conn.close()

    def execute(self, conn: psycopg2.extensions.connection, statement: Statement,
                params: tuple[object, ...]) -> int | None:
        return psycopg2_session.execute(conn, statement, params)

    def close(self) -> None:
        pass
