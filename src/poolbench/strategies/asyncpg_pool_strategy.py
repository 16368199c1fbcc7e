"""``asyncpg:pool``: asyncpg's ``create_pool``, on asyncio tasks.

asyncpg's pool resets a connection when it is released (``Connection.reset``:
unlisten, unlock advisory locks, ``RESET ALL``), one extra round trip per
operation that its documentation describes; we keep the documented default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import asyncpg

from poolbench.db.workload import Statement
from poolbench.strategies import asyncpg_session
from poolbench.strategies.base import AsyncStrategy

_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


class AsyncpgPool(AsyncStrategy):
    name = "asyncpg:pool"
    pooler_extra = "asyncpg:pool resets each connection on release (one query more)"
    release_round_trips = 1  # the reset: one query, one round trip
    driver = "asyncpg"
    pooled = True
    per_operation = ("pool.acquire() (waits, bounded by --acquire-timeout), prepared statement "
                     "(cached), pool.release() (resets the connection)")
    script_mode = staticmethod(asyncpg_session.script_mode)

    async def open(self) -> None:
        s = self.settings
        self._types = asyncpg_session.ParameterTypes()
        self.pool = await asyncpg.create_pool(min_size=s.pool_min, max_size=s.pool_max,
                                              init=self._count, **s.asyncpg_kwargs())

    async def _count(self, conn: Any) -> None:
        self.connections_opened += 1

    # acquire, release and execute hand back asyncpg's own awaitable rather than awaiting it
    # in a coroutine of their own: one coroutine less per step, ~5k instructions an
    # operation of ~300k (bench/results/harness_ir.txt); the caller awaits it as before.
    def acquire(self) -> Awaitable[asyncpg.Connection]:  # type: ignore[override]
        s = self.settings
        if s.workers <= s.pool_max:
            # No task can wait for another's connection: no bound to enforce, and no timer
            # per acquire (asyncio.timeout costs ~10% of a point read here).
            return self.pool.acquire()
        return self._acquire_bounded()

    async def _acquire_bounded(self) -> asyncpg.Connection:
        s = self.settings
        if _timeout is None:  # Python 3.10: asyncpg's own timeout (asyncio.wait_for, a task)
            return await self.pool.acquire(timeout=s.acquire_timeout_s)
        # The same bound without a task per acquire: asyncio.timeout cancels the wait in place.
        async with _timeout(s.acquire_timeout_s):
            return await self.pool.acquire()

    def release(self, conn: asyncpg.Connection) -> Awaitable[None]:  # type: ignore[override]
        return self.pool.release(conn)

    def execute(self, conn: asyncpg.Connection, statement: Statement,  # type: ignore[override]
                params: tuple[object, ...]) -> Awaitable[int | None]:
        if statement.returns_row:  # asyncpg_session.execute's first case, one coroutine less
            return conn.fetchval(statement.numbered_sql, *params)
        return asyncpg_session.execute(conn, statement, params, self._types)

    async def close(self) -> None:
        await self.pool.close()
