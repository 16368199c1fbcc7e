"""psycopg2's ``ThreadedConnectionPool``, waiting when exhausted, at no cost when it is not.

psycopg2's pools raise ``PoolError`` when every connection is out. With a connection free,
``getconn`` here is the pool's own (its one lock, what a bare loop pays), and ``putconn``
adds two reads of an empty queue. Only a caller that finds every connection out takes a
second lock: it queues (first come, first served), and sleeps on a lock of its own until a
returning caller hands it a connection or the timeout passes (``AcquireTimeout``).

Handed over, not put back: a connection returned while callers wait goes straight to the
oldest of them and stays checked out in psycopg2's books, so a caller who keeps asking
cannot take it back before a sleeper wakes (which left waiters queued for seconds when
they were merely notified). One returned broken, or in a transaction, goes to psycopg2's
``putconn`` (which closes it, or rolls it back), and the oldest waiter is woken to retry.

No wake-up is lost: a waiter queues itself *before* its last ``getconn``, both under the
queue's lock; a returner puts the connection back *then* looks at the queue. Either the
look sees the waiter, or it came before the waiter queued, so the put did too and the
waiter's ``getconn`` finds the connection (or someone who took it first returns it later,
and sees the waiter then). The pool's own limit holds: never more than ``maxconn`` out.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2.extensions
import psycopg2.pool

from poolbench.strategies.base import AcquireTimeout

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


class _Waiter:
    """One queued caller: a lock held until it is woken, and the connection handed to it
    (None: retry ``getconn``)."""

    __slots__ = ("conn", "ready")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.conn: psycopg2.extensions.connection | None = None


class WaitingConnectionPool(psycopg2.pool.ThreadedConnectionPool):
    """``ThreadedConnectionPool`` whose ``getconn`` waits up to ``timeout_s`` for a connection.

    Counters (psycopg_pool's names): ``requests_queued``, acquires that found every
    connection out and waited; ``requests_wait_ns``, their time waiting; ``requests_errors``,
    those that timed out. ``waiting`` is a gauge: callers queued now. ``on_wait``, if given,
    is called (holding the queue's lock, so briefly) as each caller starts waiting."""

    def __init__(self, minconn: int, maxconn: int, *args: Any, timeout_s: float,
                 on_wait: Callable[[], None] | None = None, **kwargs: Any) -> None:
        self.timeout_s = timeout_s
        self._on_wait = on_wait
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._queue_lock = threading.Lock()
        self.requests_queued = 0
        self.requests_errors = 0
        self.requests_wait_ns = 0
        super().__init__(minconn, maxconn, *args, **kwargs)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    # getconn and putconn are ThreadedConnectionPool's own code (its lock around the unlocked
    # pool's method, as psycopg2 writes it), not calls to it: one call more, or a ``with``,
    # costs ~0.3 µs per operation, as much as the rest of what a free connection costs.
    def getconn(self, key: Any = None) -> psycopg2.extensions.connection:
        if not self._queue:  # else queue behind those already waiting
            self._lock.acquire()
            try:
                return self._getconn(key)
            except psycopg2.pool.PoolError:
                if self.closed:
                    raise
            finally:
                self._lock.release()
        return self._wait(key)

    def putconn(self, conn: Any = None, key: Any = None, close: bool = False) -> None:
        if self._queue and key is None and not close and not conn.closed \
                and conn.info.transaction_status == _IDLE:
            with self._queue_lock:
                if self._queue:
                    waiter = self._queue.popleft()
                    waiter.conn = conn
                    waiter.ready.release()
                    return
        self._lock.acquire()
        try:
            self._putconn(conn, key, close)
        finally:
            self._lock.release()
        if self._queue:  # read after the put: see the module's docstring for why
            self._wake_one()

    def closeall(self) -> None:
        super().closeall()
        with self._queue_lock:  # each retries, finds the pool closed and raises PoolError
            while self._queue:
                self._queue.popleft().ready.release()

    def _wake_one(self) -> None:
        """Wake the oldest waiter to retry ``getconn`` (a connection, or room for one, is
        in the pool)."""
        with self._queue_lock:
            if self._queue:
                self._queue.popleft().ready.release()

    def _try(self, key: Any) -> psycopg2.extensions.connection | None:
        """psycopg2's ``getconn``, None when every connection is out."""
        self._lock.acquire()
        try:
            return self._getconn(key)
        except psycopg2.pool.PoolError:
            if self.closed:
                raise
            return None
        finally:
            self._lock.release()

    def _wait(self, key: Any) -> psycopg2.extensions.connection:
        t0 = time.monotonic_ns()
        deadline = time.monotonic() + self.timeout_s
        waiter = _Waiter()
        first = True
        try:
            while True:
                with self._queue_lock:
                    # Queued first, then one more try: a put that did not see this waiter
                    # came before it queued, so its connection is found here.
                    if first:
                        self._queue.append(waiter)
                    else:  # woken to retry: keep its place at the head
                        self._queue.appendleft(waiter)
                    conn = self._try(key)
                    if conn is not None:
                        self._queue.remove(waiter)
                        return conn
                    if first:
                        self.requests_queued += 1
                        if self._on_wait is not None:
                            self._on_wait()
                first = False
                remaining = deadline - time.monotonic()
                woken = remaining > 0 and waiter.ready.acquire(
                    timeout=-1 if remaining == float("inf") else remaining)
                if not woken:
                    with self._queue_lock:
                        if waiter in self._queue:
                            self._queue.remove(waiter)
                            self.requests_errors += 1
                            raise AcquireTimeout(
                                f"no connection free within {self.timeout_s}s")
                    # Taken off the queue by a returner as it timed out: its release of
                    # ``ready`` has happened (under the queue's lock), so this is at once.
                    waiter.ready.acquire()
                if waiter.conn is not None:
                    return waiter.conn
                if self.closed:
                    raise psycopg2.pool.PoolError("connection pool is closed")
        finally:
            if not first:  # it queued
                self.requests_wait_ns += time.monotonic_ns() - t0
