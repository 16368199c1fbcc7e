"""psycopg2:threaded's pool waits when exhausted: a caller who finds every connection out
gets the next one returned, within the timeout, and never more than the pool's maximum
are out at once."""

from __future__ import annotations

import math
import threading

import psycopg2.extensions
import psycopg2.pool
import pytest

from poolbench.db.target import ConnectionTarget
from poolbench.strategies import StrategySettings
from poolbench.strategies.base import AcquireTimeout
from poolbench.strategies.psycopg2_pools import Psycopg2ThreadedPool
from poolbench.strategies.psycopg2_waiting_pool import WaitingConnectionPool


def test_the_second_caller_waits_for_the_connection_the_first_returns(
        target: ConnectionTarget) -> None:
    """A pool of one: the second caller waits (counted once) and gets the very connection
    the first puts back; a caller that waits out the timeout fails and is counted. The
    second caller's wait has no timeout: only the put can end it."""
    waiting = threading.Event()
    pool = WaitingConnectionPool(1, 1, target.conninfo(), timeout_s=math.inf,
                                 on_wait=waiting.set)
    try:
        first = pool.getconn()
        got: list[psycopg2.extensions.connection] = []
        second = threading.Thread(target=lambda: got.append(pool.getconn()), daemon=True)
        second.start()
        assert waiting.wait(60)
        assert pool.waiting == 1 and not got
        pool.putconn(first)
        second.join(60)
        assert got == [first]
        assert (pool.requests_queued, pool.requests_errors, pool.waiting) == (1, 0, 0)

        pool.timeout_s = 0.05
        with pytest.raises(AcquireTimeout):
            pool.getconn()  # the second caller still holds the only connection
        assert (pool.requests_queued, pool.requests_errors, pool.waiting) == (2, 1, 0)
        assert pool.requests_wait_ns >= 50_000_000
        pool.putconn(got[0])
        assert pool.getconn() is first  # free again: no wait
        assert pool.requests_queued == 2
    finally:
        pool.closeall()


def test_a_returned_connection_goes_to_the_oldest_waiter(target: ConnectionTarget) -> None:
    """A pool of one, two callers queued in turn: each connection put back goes to the
    one that has waited longest, handed over, not left for whoever asks first."""
    queued = threading.Semaphore(0)
    pool = WaitingConnectionPool(1, 1, target.conninfo(), timeout_s=math.inf,
                                 on_wait=queued.release)
    try:
        held = pool.getconn()
        got: dict[str, psycopg2.extensions.connection] = {}
        callers = {name: threading.Thread(target=lambda n=name: got.update({n: pool.getconn()}),
                                          daemon=True) for name in ("older", "younger")}
        for caller in callers.values():
            caller.start()
            assert queued.acquire(timeout=60)  # queued before the next one starts
        assert pool.waiting == 2
        pool.putconn(held)
        with pytest.raises(psycopg2.pool.PoolError):  # psycopg2's own getconn finds none:
            psycopg2.pool.ThreadedConnectionPool.getconn(pool)  # it went to the waiter
        callers["older"].join(60)
        assert got == {"older": held} and pool.waiting == 1
        pool.putconn(got["older"])
        callers["younger"].join(60)
        assert got == {"older": held, "younger": held} and pool.waiting == 0
        assert pool.requests_queued == 2
        pool.putconn(held)
    finally:
        pool.closeall()


def test_workers_outnumbering_the_pool_all_get_a_connection_and_never_more_than_its_max(
        target: ConnectionTarget) -> None:
    """Six threads on psycopg2:threaded with a pool of two: every acquire succeeds (psycopg2's
    own pool would raise PoolError), at most two connections are out at once, and the two
    are all that were opened."""
    threads, rounds, size = 6, 40, 2
    strategy = Psycopg2ThreadedPool(StrategySettings(
        target=target, workers=threads, pool_min=size, pool_max=size, acquire_timeout_s=60.0))
    strategy.open()
    lock = threading.Lock()
    out, peak, done, errors = 0, 0, 0, []
    start = threading.Barrier(threads)

    def worker() -> None:
        nonlocal out, peak, done
        start.wait()
        for _ in range(rounds):
            try:
                conn = strategy.acquire()
            except Exception as exc:  # counted, then asserted on below
                errors.append(exc)
                continue
            with lock:
                out += 1
                peak = max(peak, out)
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            with lock:
                out -= 1
                done += 1
            strategy.release(conn)

    try:
        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(120)
    finally:
        strategy.close()
    assert errors == [] and done == threads * rounds
    assert 1 <= peak <= size
    stats = strategy.stats()
    assert stats["connections_opened"] == size
    assert stats["pool_requests_errors"] == 0
    assert 0 <= stats["pool_requests_queued"] <= threads * rounds
