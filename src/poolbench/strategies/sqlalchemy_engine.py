"""SQLAlchemy 2.x engines, as most Python services get their connections:
``sqlalchemy:queuepool`` / ``sqlalchemy:nullpool`` on psycopg 3 (``postgresql+psycopg``),
``sqlalchemy-asyncpg:queuepool`` / ``sqlalchemy-asyncpg:nullpool`` on asyncpg
(``create_async_engine``, ``AsyncAdaptedQueuePool``), on asyncio tasks.

Per operation: ``engine.connect()`` (a pool checkout: the timed wait), one Core
``text()`` statement in autocommit (``isolation_level="AUTOCOMMIT"``), and
``close()``, which returns the connection with SQLAlchemy's default
reset-on-return (``pool_reset_on_return="rollback"``): a ``rollback()`` on the
driver connection, which in autocommit psycopg skips when no transaction is
open, and asyncpg's dialect runs only inside a transaction. ``QueuePool``
keeps ``pool_size=--pool-min`` connections (at least 1: QueuePool reads 0 as no
limit) and opens up to ``--pool-max`` in all (``max_overflow`` the difference),
waiting ``pool_timeout=--acquire-timeout``.
Counters come from the pool's events: ``connect`` (new driver connections) and
``close``.

A script's statements go to the checked-out connection's driver connection (psycopg's or
asyncpg's, as those strategies send them), past SQLAlchemy's execution layer: ``text()``
would read pgbench's ``:name`` as its own parameters, and ``exec_driver_sql`` cannot ask
psycopg for the protocol ``-M`` names.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool, Pool, QueuePool
from sqlalchemy.sql.elements import TextClause

from poolbench.db.workload import ScriptMode, Statement
from poolbench.strategies import asyncpg_session, psycopg_session
from poolbench.strategies.base import AsyncStrategy, StrategySettings, SyncStrategy

# The names Statement.named_sql gives parameters, in order.
_NAMES = tuple(f"p{i}" for i in range(1, 17))


def _on_driver(mode: ScriptMode, driver: str) -> ScriptMode:
    return replace(mode, note=f"on SQLAlchemy's checked-out {driver} connection: {mode.note}")


def _psycopg_script_mode(protocol: str, *, prepared_statements: bool) -> ScriptMode:
    return _on_driver(psycopg_session.script_mode(
        protocol, prepared_statements=prepared_statements), "psycopg")


def _asyncpg_script_mode(protocol: str, *, prepared_statements: bool) -> ScriptMode:
    return _on_driver(asyncpg_session.script_mode(
        protocol, prepared_statements=prepared_statements), "asyncpg")


class _EngineCounters:
    """What the pool's events count, and the Core statements compiled once per SQL text."""

    pooled: ClassVar[bool]
    settings: StrategySettings

    def _pool_arguments(self, queued: type[Pool]) -> dict[str, Any]:
        s = self.settings
        if not self.pooled:
            return {"poolclass": NullPool}
        # QueuePool reads pool_size=0 as "no limit": --pool-min 0 keeps one instead.
        size = max(s.pool_min, 1)
        return {"poolclass": queued, "pool_size": size, "max_overflow": s.pool_max - size,
                "pool_timeout": s.acquire_timeout_s}

    def _count(self, engine: Engine) -> None:
        # No "checkout" listener: one checkout per operation, and a Python callback on the
        # hot path would cost what it counts.
        self.closed = 0
        self._texts: dict[str, TextClause] = {}
        counters = self

        @event.listens_for(engine, "connect")
        def connected(dbapi_connection: Any, record: Any) -> None:
            counters.connections_opened += 1  # type: ignore[attr-defined]

        @event.listens_for(engine, "close")
        def closed(dbapi_connection: Any, record: Any) -> None:
            counters.closed += 1

    def _text(self, statement: Statement) -> TextClause:
        found = self._texts.get(statement.sql)
        if found is None:
            found = self._texts[statement.sql] = text(statement.named_sql)
        return found

    @staticmethod
    def _params(params: tuple[object, ...]) -> dict[str, object]:
        if len(params) <= len(_NAMES):  # names made once, not formatted per operation
            return dict(zip(_NAMES, params))
        return {f"p{i}": value for i, value in enumerate(params, start=1)}

    @staticmethod
    def _value(statement: Statement, result: Any) -> int | None:
        if statement.returns_row:
            row = result.first()
            return None if row is None else row[0]
        return int(result.rowcount)

    def stats(self) -> dict[str, int]:
        return {"connections_opened": self.connections_opened,  # type: ignore[attr-defined]
                "connections_closed": self.closed}


class _SqlalchemyPsycopg(_EngineCounters, SyncStrategy):
    driver = "sqlalchemy"
    prepares_add_queries = True
    pooler_extra = "SQLAlchemy's dialect runs start-up queries on the engine's first connection"
    script_mode = staticmethod(_psycopg_script_mode)

    def open(self) -> None:
        s = self.settings
        # The URL carries nothing: the conninfo (password included) goes to psycopg only,
        # so no engine repr or SQLAlchemy log line can show it.
        self.engine = create_engine(
            URL.create("postgresql+psycopg"), isolation_level="AUTOCOMMIT",
            connect_args={**conninfo_to_dict(s.target.conninfo()),
                          **{k: v for k, v in s.psycopg_kwargs().items() if k != "autocommit"}},
            **self._pool_arguments(QueuePool))
        self._count(self.engine)

    def acquire(self) -> Connection:
        return self.engine.connect()

    def release(self, conn: Connection) -> None:
        conn.close()

    def execute(self, conn: Connection, statement: Statement,
                params: tuple[object, ...]) -> int | None:
        if statement.returns_row is None:
            psycopg_session.run_script_statement(conn.connection.driver_connection, statement,
                                                 params)
            return None
        return self._value(statement, conn.execute(self._text(statement), self._params(params)))

    def close(self) -> None:
        self.engine.dispose()


class SqlalchemyQueuePool(_SqlalchemyPsycopg):
    name = "sqlalchemy:queuepool"
    pooled = True
    per_operation = ("engine.connect() (QueuePool checkout, waits up to --acquire-timeout), "
                     "text() statement in autocommit on psycopg 3, close() (reset-on-return)")


class SqlalchemyNullPool(_SqlalchemyPsycopg):
    name = "sqlalchemy:nullpool"
    pooled = False
    per_operation = ("engine.connect() (NullPool: psycopg.connect(), TCP + auth), text() "
                     "statement in autocommit, close() (closes the connection)")


class _SqlalchemyAsyncpg(_EngineCounters, AsyncStrategy):
    driver = "sqlalchemy"
    pooler_extra = "SQLAlchemy's dialect runs start-up queries on the engine's first connection"
    script_mode = staticmethod(_asyncpg_script_mode)

    async def open(self) -> None:
        s = self.settings
        self._types = asyncpg_session.ParameterTypes()
        kwargs = s.asyncpg_kwargs()
        query = {}
        if not s.prepared_statements:  # the dialect's own cache, as its docs say for PgBouncer
            query["prepared_statement_cache_size"] = "0"
        self.engine: AsyncEngine = create_async_engine(
            URL.create("postgresql+asyncpg", query=query), isolation_level="AUTOCOMMIT",
            connect_args=kwargs, **self._pool_arguments(AsyncAdaptedQueuePool))
        self._count(self.engine.sync_engine)

    async def acquire(self) -> AsyncConnection:
        return await self.engine.connect()

    async def release(self, conn: AsyncConnection) -> None:
        await conn.close()

    async def execute(self, conn: AsyncConnection, statement: Statement,
                      params: tuple[object, ...]) -> int | None:
        if statement.returns_row is None:
            raw = await conn.get_raw_connection()
            await asyncpg_session.run_script_statement(raw.driver_connection, statement,
                                                       params, self._types)
            return None
        return self._value(statement, await conn.execute(self._text(statement),
                                                         self._params(params)))

    async def close(self) -> None:
        await self.engine.dispose()


class SqlalchemyAsyncpgQueuePool(_SqlalchemyAsyncpg):
    name = "sqlalchemy-asyncpg:queuepool"
    pooled = True
    per_operation = ("await engine.connect() (AsyncAdaptedQueuePool checkout, waits up to "
                     "--acquire-timeout), text() statement in autocommit on asyncpg, close()")


class SqlalchemyAsyncpgNullPool(_SqlalchemyAsyncpg):
    name = "sqlalchemy-asyncpg:nullpool"
    pooled = False
    per_operation = ("await engine.connect() (NullPool: asyncpg.connect(), TCP + auth), text() "
                     "statement in autocommit, close() (closes the connection)")
