"""``psycopg-async:none`` and ``psycopg-async:pool``: psycopg 3's ``AsyncConnection`` and
``psycopg_pool.AsyncConnectionPool``, on asyncio tasks.

The async twins of ``psycopg:none`` and ``psycopg:pool``: the same autocommit
statement (auto-prepared after 5 uses on a connection, unless prepared
statements are off behind a transaction pooler), awaited.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import AsyncConnectionPool

from poolbench.db.workload import Statement
from poolbench.strategies import psycopg_session
from poolbench.strategies.base import AsyncStrategy
from poolbench.strategies.psycopg_pool_strategy import pool_stats


async def execute(conn: psycopg.AsyncConnection, statement: Statement,
                  params: tuple[object, ...]) -> int | None:
    """One statement on an autocommit psycopg 3 async connection."""
    if statement.returns_row is None:
        await psycopg_session.run_script_statement_async(conn, statement, params)
        return None
    cur = await conn.execute(statement.sql, params)
    if statement.returns_row:
        row = await cur.fetchone()
        return None if row is None else row[0]
    return cur.rowcount


class PsycopgAsyncNoPool(AsyncStrategy):
    name = "psycopg-async:none"
    driver = "psycopg"
    pooled = False
    per_operation = ("await AsyncConnection.connect(autocommit=True) (TCP + auth), statement, "
                     "close()")
    script_mode = staticmethod(psycopg_session.script_mode)

    async def open(self) -> None:
        self._conninfo = self.settings.target.conninfo()

    async def acquire(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self._conninfo,
                                                     **self.settings.psycopg_kwargs())
        self.connections_opened += 1
        return conn

    async def release(self, conn: psycopg.AsyncConnection) -> None:
        await conn.close()

    async def execute(self, conn: psycopg.AsyncConnection, statement: Statement,
                      params: tuple[object, ...]) -> int | None:
        return await execute(conn, statement, params)

    async def close(self) -> None:
        pass


class PsycopgAsyncPool(AsyncStrategy):
    name = "psycopg-async:pool"
    prepares_add_queries = True
    driver = "psycopg_pool"
    pooled = True
    per_operation = ("await AsyncConnectionPool.getconn() (waits, bounded by --acquire-timeout), "
                     "autocommit statement (auto-prepared after 5 uses), putconn()")
    script_mode = staticmethod(psycopg_session.script_mode)

    async def open(self) -> None:
        s = self.settings
        self.pool = AsyncConnectionPool(s.target.conninfo(), min_size=s.pool_min,
                                        max_size=s.pool_max, kwargs=s.psycopg_kwargs(),
                                        timeout=s.acquire_timeout_s, open=False,
                                        name="poolbench")
        await self.pool.open(wait=s.pool_min > 0, timeout=max(30.0, s.acquire_timeout_s))

    async def acquire(self) -> psycopg.AsyncConnection:
        return await self.pool.getconn()

    async def release(self, conn: psycopg.AsyncConnection) -> None:
        await self.pool.putconn(conn)

    async def execute(self, conn: psycopg.AsyncConnection, statement: Statement,
                      params: tuple[object, ...]) -> int | None:
        return await execute(conn, statement, params)

    async def close(self) -> None:
        self._final_stats = self.pool.get_stats()
        await self.pool.close()

    def stats(self) -> dict[str, int]:
        return pool_stats(getattr(self, "_final_stats", {}))
