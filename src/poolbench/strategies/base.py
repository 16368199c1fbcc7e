"""The one interface every connection strategy implements.

A strategy is *how a worker gets a connection*: open once, then per operation
``acquire`` (timed apart: the pool wait, or the connect for ``none``), ``execute``
one statement, ``release``; ``close`` at the end; ``stats`` for counters. Sync
strategies are driven by threads, async ones by asyncio tasks; the two ABCs
differ only in ``async``, and everything else (timing, recording, phases) is
shared by the runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import ScriptMode, Statement


@dataclass(frozen=True)
class StrategySettings:
    target: ConnectionTarget
    workers: int
    pool_min: int
    pool_max: int
    acquire_timeout_s: float
    # False behind a transaction-mode pooler that cannot keep prepared statements
    # (PgBouncer before 1.21): each driver's documented setting turns them off.
    prepared_statements: bool = True

    def psycopg_kwargs(self) -> dict[str, Any]:
        """psycopg 3 connect arguments: autocommit, and no server-side prepares when off."""
        off = {} if self.prepared_statements else {"prepare_threshold": None}
        return {"autocommit": True, **off}

    def asyncpg_kwargs(self) -> dict[str, Any]:
        """asyncpg connect arguments; its statement cache off when prepares are off."""
        off = {} if self.prepared_statements else {"statement_cache_size": 0}
        return {**self.target.asyncpg_kwargs(), **off}


class AcquireTimeout(Exception):
    """No pooled connection became free within ``--acquire-timeout``."""


class StrategyInfo:
    """Class-level facts shared by both kinds of strategy."""

    name: ClassVar[str]
    driver: ClassVar[str]  # the importable package the strategy needs
    pooled: ClassVar[bool]
    is_async: ClassVar[bool]
    per_operation: ClassVar[str]  # what happens per operation, shown in docs/strategies.md and JSON
    # What the driver or pool sends besides one statement per operation (a reset on
    # release, start-up queries), or None: then a pooler's counts must equal ours.
    pooler_extra: ClassVar[str | None] = None
    # True when prepared statements add a query of their own (psycopg's PREPARE after 5 uses).
    prepares_add_queries: ClassVar[bool] = False
    # Round trips giving a connection back costs (a reset query on release): at a distance,
    # each one holds the connection a round trip longer (analysis/distance.py).
    release_round_trips: ClassVar[int] = 0

    @classmethod
    def extra_traffic(cls, *, prepared_statements: bool) -> str | None:
        """Why a pooler would count more than one statement per operation, if it would."""
        if cls.prepares_add_queries and prepared_statements:
            return f"{cls.name} prepares each statement on each connection (one query more)"
        return cls.pooler_extra

    def __init__(self, settings: StrategySettings) -> None:
        self.settings = settings
        self.connections_opened = 0

    @staticmethod
    def script_mode(protocol: str, *, prepared_statements: bool) -> ScriptMode:
        """How this strategy sends a script's statements under ``-M protocol`` (simple,
        extended, prepared): its driver's nearest mode, and what that means."""
        raise NotImplementedError("this strategy does not run scripts")

    @classmethod
    def connections_needed(cls, *, workers: int, pool_min: int, pool_max: int) -> int:
        """Server connections this strategy can hold at once: a pool opens ``pool_min``
        however few workers there are, and grows to at most one per worker."""
        return max(min(workers, pool_max), pool_min) if cls.pooled else workers

    def stats(self) -> dict[str, int]:
        """Counters with units in their names (``connections_opened``...)."""
        return {"connections_opened": self.connections_opened}


class SyncStrategy(StrategyInfo, ABC):
    is_async = False

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def acquire(self) -> Any: ...

    @abstractmethod
    def release(self, conn: Any) -> None: ...

    @abstractmethod
    def execute(self, conn: Any, statement: Statement, params: tuple[object, ...]) -> int | None:
        """Run one statement; return the first column of its row, or its row count; for a
        script's statement (``returns_row`` None), run it as ``statement.protocol`` says
        and return None."""

    @abstractmethod
    def close(self) -> None: ...


class AsyncStrategy(StrategyInfo, ABC):
    is_async = True

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def acquire(self) -> Any: ...

    @abstractmethod
    async def release(self, conn: Any) -> None: ...

    @abstractmethod
    async def execute(self, conn: Any, statement: Statement,
                      params: tuple[object, ...]) -> int | None: ...

    @abstractmethod
    async def close(self) -> None: ...


Strategy = SyncStrategy | AsyncStrategy
