"""``psycopg:pool``: psycopg 3 with ``psycopg_pool.ConnectionPool``.

Connections are autocommit (psycopg_pool's docs: a connection returned in a
transaction is rolled back, which would cost a round trip per operation).
``getconn`` waits up to ``--acquire-timeout`` and raises ``PoolTimeout``.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from poolbench.strategies import psycopg_session
from poolbench.strategies.base import SyncStrategy
from poolbench.strategies.psycopg_none import execute


class PsycopgPool(SyncStrategy):
    name = "psycopg:pool"
    prepares_add_queries = True
    driver = "psycopg_pool"
    pooled = True
    per_operation = ("ConnectionPool.getconn() (waits, bounded by --acquire-timeout), "
                     "autocommit statement (auto-prepared after 5 uses), putconn()")
    script_mode = staticmethod(psycopg_session.script_mode)

    def open(self) -> None:
        s = self.settings
        self.pool = ConnectionPool(s.target.conninfo(), min_size=s.pool_min, max_size=s.pool_max,
                                   kwargs=s.psycopg_kwargs(), timeout=s.acquire_timeout_s,
                                   open=False, name="poolbench")
        self.pool.open(wait=s.pool_min > 0, timeout=max(30.0, s.acquire_timeout_s))
        # The pool's own getconn and putconn stand in for acquire and release below, as
        # execute is psycopg_none's function: a Python frame less in each step.
        self.acquire = self.pool.getconn  # type: ignore[method-assign]
        self.release = self.pool.putconn  # type: ignore[method-assign]

    def acquire(self) -> psycopg.Connection:
        return self.pool.getconn()

    def release(self, conn: psycopg.Connection) -> None:
        self.pool.putconn(conn)

    execute = staticmethod(execute)

    def close(self) -> None:
        self._final_stats = self.pool.get_stats()
        self.pool.close()

    def stats(self) -> dict[str, int]:
        return pool_stats(getattr(self, "_final_stats", {}))


def pool_stats(final: dict[str, int]) -> dict[str, int]:
    """psycopg_pool's own counters (``connections_num``, ``requests_wait_ms``...), as taken
    by ``get_stats()`` before the pool closed (shared with the async pool)."""
    return {"connections_opened": int(final.get("connections_num", 0)),
            **{f"pool_{k}": int(v) for k, v in final.items()}}
