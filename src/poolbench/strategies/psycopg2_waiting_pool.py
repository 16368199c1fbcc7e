"""psycopg2's ``ThreadedConnectionPool``, waiting when exhausted, at no cost when it is not.

psycopg2's pools raise ``PoolError`` when every connection is out. This subclass first
calls the pool's own ``getconn``: with a connection free that is the whole cost of an
acquire (the pool's one lock, the call a bare loop makes), and ``putconn`` adds one read of
an int when no one waits. Only a caller that finds the pool exhausted takes a second lock:
it counts itself as waiting under a ``Condition``, retries, and sleeps until ``putconn``
notifies it or the timeout passes (``AcquireTimeout``).

No wake-up is lost: a waiter counts itself and retries ``getconn`` holding the Condition,
and gives it up only by sleeping; ``putconn`` puts the connection back, *then* reads the
count, and notifies under the Condition. Either that read sees the waiter (whose sleep the
notify then reaches), or it came before the waiter counted itself, so the put did too and
the waiter's retry finds the connection. A connection a fast caller takes in between comes
back through ``putconn``, which notifies again. The pool's own limit is untouched: never
more than ``maxconn`` connections out at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2.extensions
import psycopg2.pool

from poolbench.strategies.base import AcquireTimeout


class WaitingConnectionPool(psycopg2.pool.ThreadedConnectionPool):
    """``ThreadedConnectionPool`` whose ``getconn`` waits up to ``timeout_s`` for a connection.

    Counters (psycopg_pool's names): ``requests_queued``, acquires that found the pool
    exhausted and waited; ``requests_wait_ns``, their time in waiting; ``requests_errors``,
    those that timed out. ``waiting`` is a gauge: callers waiting now. ``on_wait``, if
    given, is called (holding the Condition, so briefly) as each caller starts waiting."""

    def __init__(self, minconn: int, maxconn: int, *args: Any, timeout_s: float,
                 on_wait: Callable[[], None] | None = None, **kwargs: Any) -> None:
        self.timeout_s = timeout_s
        self._on_wait = on_wait
        self._returned = threading.Condition(threading.Lock())
        self.waiting = 0
        self.requests_queued = 0
        self.requests_errors = 0
        self.requests_wait_ns = 0
        super().__init__(minconn, maxconn, *args, **kwargs)

    # getconn and putconn are ThreadedConnectionPool's own code (its lock around the unlocked
    # pool's method, as psycopg2 writes it), not calls to it: one call more, or a ``with``,
    # costs ~0.3 µs per operation, as much as the rest of what a free connection costs.
    def getconn(self, key: Any = None) -> psycopg2.extensions.connection:
        self._lock.acquire()
        try:
            return self._getconn(key)
        except psycopg2.pool.PoolError:
            if self.closed:
                raise
        finally:
            self._lock.release()
        return self._wait(key)

    def _wait(self, key: Any) -> psycopg2.extensions.connection:
        t0 = time.monotonic_ns()
        deadline = t0 / 1e9 + self.timeout_s
        with self._returned:
            self.waiting += 1
            self.requests_queued += 1
            try:
                if self._on_wait is not None:
                    self._on_wait()
                while True:
                    try:
                        with self._lock:
                            return self._getconn(key)
                    except psycopg2.pool.PoolError:
                        if self.closed:
                            raise
                    # Retried once more after a timed-out sleep: a notify that reached this
                    # caller as it timed out is not lost.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.requests_errors += 1
                        raise AcquireTimeout(f"no connection free within {self.timeout_s}s")
                    self._returned.wait(None if math.isinf(remaining) else remaining)
            finally:
                self.waiting -= 1
                self.requests_wait_ns += time.monotonic_ns() - t0

    def putconn(self, conn: Any = None, key: Any = None, close: bool = False) -> None:
        self._lock.acquire()
        try:
            self._putconn(conn, key, close)
        finally:
            self._lock.release()
        if self.waiting:  # read without the lock: see the module's docstring for why
            with self._returned:
                self._returned.notify()

    def closeall(self) -> None:
        super().closeall()
        with self._returned:  # waiters retry, find the pool closed, and raise PoolError
            self._returned.notify_all()
