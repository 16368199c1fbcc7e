"""How both asyncpg strategies run a statement (asyncpg is autocommit by default)."""

from __future__ import annotations

import asyncpg

from poolbench.db.workload import Statement


async def execute(conn: asyncpg.Connection, statement: Statement,
                  params: tuple[object, ...]) -> int | None:
    if statement.returns_row:
        return await conn.fetchval(statement.numbered_sql, *params)
    status = await conn.execute(statement.numbered_sql, *params)  # e.g. "UPDATE 1"
    return int(status.rsplit(" ", 1)[1])
