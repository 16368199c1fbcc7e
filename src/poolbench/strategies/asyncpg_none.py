"""``asyncpg:none``: asyncpg, a new connection for every operation, on asyncio tasks."""

from __future__ import annotations

import asyncpg

from poolbench.db.workload import Statement
from poolbench.strategies import asyncpg_session
from poolbench.strategies.base import AsyncStrategy


class AsyncpgNoPool(AsyncStrategy):
    name = "asyncpg:none"
    driver = "asyncpg"
    pooled = False
    per_operation = "asyncpg.connect() (TCP + auth), statement (prepared, unnamed), close()"
    script_mode = staticmethod(asyncpg_session.script_mode)

    async def open(self) -> None:
        self._kwargs = self.settings.asyncpg_kwargs()
        self._types = asyncpg_session.ParameterTypes()

    async def acquire(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(**self._kwargs)
        self.connections_opened += 1
        return conn

    async def release(self, conn: asyncpg.Connection) -> None:
        await conn.close()

    async def execute(self, conn: asyncpg.Connection, statement: Statement,
                      params: tuple[object, ...]) -> int | None:
        return await asyncpg_session.execute(conn, statement, params, self._types)

    async def close(self) -> None:
        pass
