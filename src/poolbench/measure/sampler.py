"""Evidence during every run: the server's activity and the machine's resources, sampled.

Every ``--sample-interval`` (default 100 ms) a connection of its own
(``poolbench-sampler``) reads ``pg_stat_activity`` for the benchmark's backends (by
application name): their ``state`` and ``wait_event_type``/``wait_event``. At the same
instants psutil reads the CPU time and RSS of poolbench's process and its children
(``--processes`` workers, LocalCluster nodes) and, when the server runs on this machine
(the embedded server always), of the server's processes (the postmaster, its live
backends, and the CPU of those it has reaped). The sampler's own statements are counted,
published (``pg_stat_force_next_flush``) and subtracted by the server cross-check, so it
does not disturb the counts poolbench checks.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil
import psycopg

from poolbench.db.target import ConnectionTarget
from poolbench.results import ActivitySecond, ActivitySummary

SAMPLER_APPLICATION_NAME = "poolbench-sampler"
DEFAULT_INTERVAL_S = 0.1
MB = 1024 * 1024


@dataclass
class _Sample:
    at: float
    states: list[tuple[str | None, str | None, str | None]]
    client_cpu_s: float
    client_rss: int
    server_cpu_s: float | None
    server_rss: int | None


def _cpu_and_rss(processes: list[psutil.Process], *, reaped: bool) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for proc in processes:
        try:
            t = proc.cpu_times()
            cpu += t.user + t.system + ((t.children_user + t.children_system) if reaped else 0)
            rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return cpu, rss


class ServerProcesses:
    """The server's processes on this machine: its postmaster (found by the data directory,
    or as the process listening on the server's local TCP port) and the backends it forks."""

    def __init__(self, postmaster: psutil.Process | None) -> None:
        self.postmaster = postmaster

    @classmethod
    def find(cls, *, data_dir: str | None = None, port: int | None = None) -> ServerProcesses:
        if data_dir is not None:
            for proc in psutil.process_iter(["cmdline"]):
                if data_dir in " ".join(proc.info["cmdline"] or ()):
                    return cls(proc)
        if port is not None:
            try:
                for conn in psutil.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr and \
                            conn.laddr.port == port and conn.pid:
                        return cls(psutil.Process(conn.pid))
            except psutil.Error:
                pass  # not allowed to see other users' sockets: the server's CPU is unknown
        return cls(None)

    def read(self) -> tuple[float, int] | None:
        if self.postmaster is None:
            return None
        try:
            children = self.postmaster.children(recursive=True)
        except psutil.Error:
            return None
        main_cpu, main_rss = _cpu_and_rss([self.postmaster], reaped=True)
        cpu, rss = _cpu_and_rss(children, reaped=False)
        return main_cpu + cpu, main_rss + rss


@dataclass
class Sampler:
    """One run's sampler: a connection of its own, started and stopped around each strategy."""

    target: ConnectionTarget
    application_names: tuple[str, ...] | None  # None: every client backend but poolbench's own
    interval_s: float = DEFAULT_INTERVAL_S
    server: ServerProcesses | None = None
    statements: int = 0  # statements sent, for the cross-check to subtract
    _samples: list[_Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.reconnects = 0  # sessions opened again after losing one (the cross-check counts)
        self.conn = self._connect()
        self.me = psutil.Process()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.target.with_params(
            application_name=SAMPLER_APPLICATION_NAME, connect_timeout="5").conninfo(),
            autocommit=True)

    def _states(self) -> list[tuple[str | None, str | None, str | None]] | None:
        """The backends' states, or None when the server cannot be asked right now (it
        restarted, or terminated us): the sample is then skipped, never the run."""
        try:
            if self.conn.closed:
                self.conn = self._connect()
                self.reconnects += 1
            return self._query()
        except psycopg.Error:
            return None

    def _query(self) -> list[tuple[str | None, str | None, str | None]]:
        self.statements += 1
        if self.application_names is None:
            return self.conn.execute(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE "
                "datname = current_database() AND backend_type = 'client backend' AND "
                "pid <> pg_backend_pid() AND application_name NOT LIKE 'poolbench%%'"
            ).fetchall()
        return self.conn.execute(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE "
            "datname = current_database() AND backend_type = 'client backend' AND "
            "application_name = ANY(%s)", (list(self.application_names),)).fetchall()

    def sample(self) -> None:
        states = self._states()
        if states is None:
            return
        try:
            client = [self.me, *self.me.children(recursive=True)]
        except psutil.Error:
            client = [self.me]
        cpu, rss = _cpu_and_rss(client, reaped=True)
        server = self.server.read() if self.server is not None else None
        self._samples.append(_Sample(time.monotonic(), states, cpu, rss,
                                     server[0] if server else None,
                                     server[1] if server else None))

    def start(self) -> None:
        self._samples = []
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="poolbench-sampler",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> ActivitySummary | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        # Publish this connection's counters now, so the cross-check can subtract them.
        try:
            self.conn.execute("SELECT pg_stat_force_next_flush()")
            self.statements += 1
        except psycopg.Error:
            pass  # a lost connection published its counters as it ended
        return summarise(self._samples, self.interval_s) if self._samples else None

    def close(self) -> None:
        self._stop.set()
        self.conn.close()


def summarise(samples: list[_Sample], interval_s: float) -> ActivitySummary:
    """Samples -> shares, medians, maxima and a per-second series (pure)."""
    backend_rows = [row for s in samples for row in s.states]
    active_rows = [row for row in backend_rows if row[0] == "active"]
    waits: Counter[str] = Counter((row[1] or "CPU") for row in active_rows)
    events: Counter[str] = Counter(f"{row[1]}:{row[2]}" for row in backend_rows if row[1])
    actives = [sum(1 for row in s.states if row[0] == "active") for s in samples]
    first, last = samples[0], samples[-1]
    seconds = last.at - first.at
    server_cpu = (last.server_cpu_s - first.server_cpu_s
                  if last.server_cpu_s is not None and first.server_cpu_s is not None else None)
    timeline = []
    by_second: dict[int, list[_Sample]] = {}
    for s in samples:
        by_second.setdefault(int(s.at - first.at), []).append(s)
    previous = first
    for second, group in sorted(by_second.items()):
        end = group[-1]
        wall = end.at - previous.at
        timeline.append(ActivitySecond(
            second=second,
            backends=statistics.median(len(s.states) for s in group),
            active=statistics.median(sum(1 for r in s.states if r[0] == "active")
                                     for s in group),
            idle_in_transaction=statistics.median(
                sum(1 for r in s.states if r[0] == "idle in transaction") for s in group),
            client_cpu_pct=round((end.client_cpu_s - previous.client_cpu_s) / wall * 100, 1)
            if wall > 0 else 0.0,
            client_rss_mb=round(max(s.client_rss for s in group) / MB, 1),
            server_cpu_pct=round((end.server_cpu_s - previous.server_cpu_s) / wall * 100, 1)
            if wall > 0 and end.server_cpu_s is not None and previous.server_cpu_s is not None
            else None,
            server_rss_mb=round(max(s.server_rss or 0 for s in group) / MB, 1)
            if end.server_rss is not None else None))
        previous = end
    return ActivitySummary(
        samples=len(samples), interval_s=interval_s, seconds=round(seconds, 3),
        backends_max=max((len(s.states) for s in samples), default=0),
        active_median=statistics.median(actives) if actives else 0.0,
        active_max=max(actives, default=0),
        idle_in_transaction_share=round(sum(1 for r in backend_rows
                                            if r[0] == "idle in transaction")
                                        / len(backend_rows), 4) if backend_rows else 0.0,
        wait_shares={k: round(v / len(active_rows), 4) for k, v in waits.most_common()}
        if active_rows else {},
        wait_events=dict(events.most_common(10)),
        client_cpu_s=round(last.client_cpu_s - first.client_cpu_s, 3),
        server_cpu_s=round(server_cpu, 3) if server_cpu is not None else None,
        client_rss_max_mb=round(max(s.client_rss for s in samples) / MB, 1),
        server_rss_max_mb=round(max(s.server_rss or 0 for s in samples) / MB, 1)
        if last.server_rss is not None else None,
        timeline=tuple(timeline))
