"""``psycopg2:simple`` and ``psycopg2:threaded``: psycopg2's own pools.

``SimpleConnectionPool`` is documented by psycopg2 as *not* safe to share between
threads; the seed shares it between 50 threads anyway, so poolbench does the
same and counts whatever errors that causes (``PoolError`` among them) instead
of hiding them. ``ThreadedConnectionPool`` locks around get/put. Neither pool
waits when exhausted (``getconn`` raises), so ``psycopg2:threaded`` runs
:class:`~poolbench.strategies.psycopg2_waiting_pool.WaitingConnectionPool`:
the same pool, whose callers wait for a connection, bounded by
``--acquire-timeout``, as with every other pool, and pay for waiting only when
they do wait (a connection free costs what it costs a bare loop).
"""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
import psycopg2.pool

from poolbench.strategies import psycopg2_session
from poolbench.strategies.base import SyncStrategy
from poolbench.strategies.psycopg2_waiting_pool import WaitingConnectionPool


def _counting_pool(base: type[psycopg2.pool.AbstractConnectionPool],
                   owner: SyncStrategy) -> type[psycopg2.pool.AbstractConnectionPool]:
    """A subclass of a psycopg2 pool whose new connections are autocommit and counted."""

    class CountingPool(base):  # type: ignore[misc, valid-type]
        def _connect(self, key: Any = None) -> psycopg2.extensions.connection:
            conn = super()._connect(key)
            conn.autocommit = True
            owner.connections_opened += 1
            return conn

    return CountingPool


class _Psycopg2Pool(SyncStrategy):
    driver = "psycopg2"
    pooled = True
    pool_class: type[psycopg2.pool.AbstractConnectionPool]
    script_mode = staticmethod(psycopg2_session.script_mode)

    def open(self) -> None:
        s = self.settings
        self.pool = _counting_pool(self.pool_class, self)(s.pool_min, s.pool_max,
                                                          s.target.conninfo(),
                                                          **self._pool_options())
        # The pool's own getconn and putconn stand in for acquire and release below, as
        # execute is the session's function: a Python frame less in each step of every
        # operation, which a bare loop does not pay either.
        self.acquire = self.pool.getconn  # type: ignore[method-assign]
        self.release = self.pool.putconn  # type: ignore[method-assign]

    def _pool_options(self) -> dict[str, Any]:
        """Keyword arguments of the pool class besides psycopg2's."""
        return {}

    def acquire(self) -> psycopg2.extensions.connection:
        return self.pool.getconn()

    def release(self, conn: psycopg2.extensions.connection) -> None:
        # A broken (closed) connection is discarded by psycopg2's putconn, never handed on.
        self.pool.putconn(conn)

    execute = staticmethod(psycopg2_session.execute)

    def close(self) -> None:
        self.pool.closeall()


class Psycopg2SimplePool(_Psycopg2Pool):
    name = "psycopg2:simple"
    pool_class = psycopg2.pool.SimpleConnectionPool
    per_operation = ("SimpleConnectionPool.getconn() without a lock (not thread-safe, as in the "
                     "seed), autocommit statement, putconn(); raises PoolError when exhausted")


class Psycopg2ThreadedPool(_Psycopg2Pool):
    name = "psycopg2:threaded"
    pool_class = WaitingConnectionPool
    per_operation = ("ThreadedConnectionPool.getconn() (locked; only when the pool is "
                     "exhausted, wait for a putconn(), bounded by --acquire-timeout), "
                     "autocommit statement, putconn()")

    def _pool_options(self) -> dict[str, Any]:
        return {"timeout_s": self.settings.acquire_timeout_s}

    def stats(self) -> dict[str, int]:
        """psycopg2's pool counts nothing; the waiting it adds is counted with
        psycopg_pool's names (``pool_requests_queued``: acquires that found every
        connection out and waited)."""
        pool = getattr(self, "pool", None)
        if not isinstance(pool, WaitingConnectionPool):  # not opened
            return super().stats()
        return {**super().stats(), "pool_requests_queued": pool.requests_queued,
                "pool_requests_wait_ms": pool.requests_wait_ns // 1_000_000,
                "pool_requests_errors": pool.requests_errors}
