"""``psycopg2:simple`` and ``psycopg2:threaded``: psycopg2's own pools.

``SimpleConnectionPool`` is documented by psycopg2 as *not* safe to share between
threads; the seed shares it between 50 threads anyway, so poolbench does the
same and counts whatever errors that causes (``PoolError`` among them) instead
of hiding them. ``ThreadedConnectionPool`` locks around get/put. Neither pool
waits when exhausted (``getconn`` raises), so ``psycopg2:threaded`` gates
``getconn`` with a semaphore of ``--pool-max`` permits: callers then wait for a
connection, bounded by ``--acquire-timeout``, as with every other pool.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg2.extensions
import psycopg2.pool

from poolbench.db.workload import Statement
from poolbench.strategies import psycopg2_session
from poolbench.strategies.base import AcquireTimeout, SyncStrategy


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
                                                          s.target.conninfo())

    def acquire(self) -> psycopg2.extensions.connection:
        return self.pool.getconn()

    def release(self, conn: psycopg2.extensions.connection) -> None:
        # A broken connection is closed rather than handed to the next caller.
        self.pool.putconn(conn, close=bool(conn.closed))

    def execute(self, conn: psycopg2.extensions.connection, statement: Statement,
                params: tuple[object, ...]) -> int | None:
        return psycopg2_session.execute(conn, statement, params)

    def close(self) -> None:
        self.pool.closeall()


class Psycopg2SimplePool(_Psycopg2Pool):
    name = "psycopg2:simple"
    pool_class = psycopg2.pool.SimpleConnectionPool
    per_operation = ("SimpleConnectionPool.getconn() without a lock (not thread-safe, as in the "
                     "seed), autocommit statement, putconn(); raises PoolError when exhausted")


class Psycopg2ThreadedPool(_Psycopg2Pool):
    name = "psycopg2:threaded"
    pool_class = psycopg2.pool.ThreadedConnectionPool
    per_operation = ("wait for one of --pool-max permits, ThreadedConnectionPool.getconn() "
                     "(locked), autocommit statement, putconn()")

    def open(self) -> None:
        super().open()
        # Workers can only outnumber connections if there are more of them than --pool-max;
        # otherwise no one ever waits, and the gate (a Condition per call) is left out.
        self._permits = (threading.BoundedSemaphore(self.settings.pool_max)
                         if self.settings.workers > self.settings.pool_max else None)

    def acquire(self) -> psycopg2.extensions.connection:
        if self._permits is None:
            return super().acquire()
        if not self._permits.acquire(timeout=self.settings.acquire_timeout_s):
            raise AcquireTimeout(f"no connection free within {self.settings.acquire_timeout_s}s")
        try:
            return super().acquire()
        except BaseException:
            self._permits.release()
            raise

    def release(self, conn: psycopg2.extensions.connection) -> None:
        try:
            super().release(conn)
        finally:
            if self._permits is not None:
                self._permits.release()
