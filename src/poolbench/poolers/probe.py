"""PgBouncer's own counts, read from its admin console, beside poolbench's.

Before and after each strategy: ``SHOW STATS`` (``total_xact_count``,
``total_query_count`` for the run's database); during it, ``SHOW POOLS`` sampled
every ``SAMPLE_S``: server connections in use (``sv_active + sv_idle + sv_used +
sv_tested + sv_login``), clients waiting (``cl_waiting``) and the longest wait
(``maxwait``). The admin console speaks only the simple query protocol, which
psycopg2 always uses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg2

from poolbench.db.target import ConnectionTarget

SAMPLE_S = 0.1
SERVER_COLUMNS = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")


@dataclass(frozen=True)
class PoolerCounters:
    transactions: int
    queries: int


@dataclass
class PoolSamples:
    """The busiest moments seen in SHOW POOLS while a strategy ran."""

    samples: int = 0
    server_connections_max: int = 0
    clients_waiting_max: int = 0
    maxwait_us_max: int = 0


class PoolerProbe:
    """A connection to PgBouncer's admin console, and a sampler thread on it."""

    def __init__(self, admin: ConnectionTarget, database: str) -> None:
        self.database = database
        self._conn = psycopg2.connect(admin.conninfo())
        self._conn.autocommit = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pools = PoolSamples()

    def _show(self, what: str) -> list[dict[str, object]]:
        with self._lock, self._conn.cursor() as cur:
            cur.execute(f"SHOW {what}")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()
                    if dict(zip(names, row)).get("database") == self.database]

    def version(self) -> str:
        with self._lock, self._conn.cursor() as cur:
            cur.execute("SHOW VERSION")
            return str(cur.fetchone()[0])

    def counters(self) -> PoolerCounters:
        rows = self._show("STATS")
        return PoolerCounters(transactions=sum(int(r["total_xact_count"]) for r in rows),
                              queries=sum(int(r["total_query_count"]) for r in rows))

    def sample(self) -> None:
        rows = self._show("POOLS")
        p = self.pools
        p.samples += 1
        p.server_connections_max = max(p.server_connections_max, sum(
            int(r[c]) for r in rows for c in SERVER_COLUMNS if c in r))
        p.clients_waiting_max = max(p.clients_waiting_max, sum(int(r["cl_waiting"]) for r in rows))
        p.maxwait_us_max = max(p.maxwait_us_max, max(
            (int(r["maxwait"]) * 1_000_000 + int(r.get("maxwait_us", 0)) for r in rows),
            default=0))

    def start_sampling(self) -> None:
        self.pools = PoolSamples()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="poolbench-pooler-sampler",
                                        daemon=True)
        self._thread.start()

    def stop_sampling(self) -> PoolSamples:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()  # one last look, after the strategy's connections were returned
        return self.pools

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._conn.close()
