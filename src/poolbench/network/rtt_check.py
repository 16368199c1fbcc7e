"""What an ``--rtt`` run injected, measured: ``SELECT 1`` round trips at the run's
concurrency, straight to the server (the loopback base) and through the relay.

Each side opens ``concurrency`` connections (psycopg, autocommit, application_name
``poolbench-rtt``), waits until all are open, then each runs ``SELECT 1`` back to back for
``seconds``; the side's figure is the median of every round trip of every connection.
The base is measured at the same concurrency, so what this machine's CPU adds under that
load is in both figures and the difference is what the relay added.
"""

from __future__ import annotations

import statistics
import threading
import time

import psycopg

from poolbench.db.target import ConnectionTarget
from poolbench.results import RttCheck

CHECK_SECONDS = 0.5  # of back-to-back SELECT 1 on each side
APPLICATION_NAME = "poolbench-rtt"
OPEN_TIMEOUT_S = 60.0


def round_trips_ns(target: ConnectionTarget, *, concurrency: int,
                   seconds: float = CHECK_SECONDS) -> list[int]:
    """Every ``SELECT 1`` round trip (ns) of ``concurrency`` connections at once, each
    running back to back for ``seconds`` (at least one each). Raises the first
    connection's error, if any."""
    barrier = threading.Barrier(concurrency, timeout=OPEN_TIMEOUT_S)
    found: list[list[int]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    conninfo = target.with_params(application_name=APPLICATION_NAME).conninfo()

    def one(i: int) -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")  # the first one warms the session up: not counted
                barrier.wait()
                mine, end = found[i], time.perf_counter() + seconds
                while True:
                    start = time.perf_counter_ns()
                    cur.execute("SELECT 1")
                    cur.fetchone()
                    mine.append(time.perf_counter_ns() - start)
                    if time.perf_counter() >= end:
                        return
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,), name=f"rtt-check-{i}", daemon=True)
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    return [ns for mine in found for ns in mine]


def check_rtt(direct: ConnectionTarget, relayed: ConnectionTarget, *, asked_ms: float,
              concurrency: int, seconds: float = CHECK_SECONDS) -> RttCheck:
    """The base straight to ``direct``, then the round trip through the relay at
    ``relayed``, against ``asked_ms``."""
    base = round_trips_ns(direct, concurrency=concurrency, seconds=seconds)
    through = round_trips_ns(relayed, concurrency=concurrency, seconds=seconds)
    return RttCheck.of(asked_ms=asked_ms, measured_ms=statistics.median(through) / 1e6,
                       base_ms=statistics.median(base) / 1e6, concurrency=concurrency,
                       round_trips=len(through))
