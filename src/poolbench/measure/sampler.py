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

import itertools
import multiprocessing
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import psutil
import psycopg

from poolbench.db.target import ConnectionTarget
from poolbench.results import ActivitySecond, ActivitySummary

SAMPLER_APPLICATION_NAME = "poolbench-sampler"
DEFAULT_INTERVAL_S = 0.1
# CPU and memory are read once a second: walking the process table costs milliseconds of
# the client's own CPU (and GIL), ten times a second would cost the run measurably.
RESOURCES_EVERY_S = 1.0
MB = 1024 * 1024


State = tuple[str | None, str | None, str | None, int]  # state, wait type, event, pid


@dataclass(slots=True)
class _Sample:
    """One look at pg_stat_activity, kept as counts (a long run keeps thousands)."""

    at: float
    backends: int
    active: int
    idle_in_transaction: int


@dataclass
class _Tally:
    """Backend samples by state and wait, added up over a strategy."""

    rows: int = 0
    active: int = 0
    idle_in_transaction: int = 0
    waits: Counter[str] = field(default_factory=Counter)  # active rows by wait_event_type
    events: Counter[str] = field(default_factory=Counter)  # rows by "Type:Event"

    def add(self, states: list[State]) -> _Sample:
        active = idle = 0
        for state, wait_type, wait_event, _ in states:
            if state == "active":
                active += 1
                self.waits[wait_type or "CPU"] += 1
            elif state == "idle in transaction":
                idle += 1
            if wait_type:
                self.events[f"{wait_type}:{wait_event}"] += 1
        self.rows += len(states)
        self.active += active
        self.idle_in_transaction += idle
        return _Sample(0.0, len(states), active, idle)


@dataclass(slots=True)
class _Resources:
    at: float
    client_cpu_s: float
    client_rss: int
    server_cpu_s: float | None
    server_rss: int | None


def _cpu_and_rss(processes: list[psutil.Process], *, reaped: bool,
                 private: bool = False) -> tuple[float, int]:
    """CPU seconds (with ``reaped``: those of reaped children too) and resident memory;
    ``private``: only each process's own pages (RSS less shared ones, Linux), so memory
    the processes share, such as PostgreSQL's shared_buffers, is not counted once each."""
    cpu, rss = 0.0, 0
    for proc in processes:
        try:
            t = proc.cpu_times()
            cpu += t.user + t.system + ((t.children_user + t.children_system) if reaped else 0)
            m = proc.memory_info()
            rss += m.rss - getattr(m, "shared", 0) if private else m.rss
        except psutil.Error:
            continue
    return cpu, rss


class ProcessTree:
    """A process and its descendants, listed again only when told the tree changed: listing
    walks the whole process table (a file read per process on the machine, each giving up
    the GIL to the workers), so it is not done every second of a steady run. Between
    listings a new process is missed until the next one, and one that ends drops out, its
    CPU then counted in its parent's reaped children's time."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.members: list[psutil.Process] | None = None  # None: list at the next read

    def changed(self) -> None:
        self.members = None

    def descendants(self) -> list[psutil.Process] | None:
        if self.members is None:
            try:
                self.members = self.root.children(recursive=True)
            except psutil.Error:
                return None
        return self.members


class ServerProcesses:
    """The server's processes on this machine: its postmaster (found by the data directory,
    or as the process listening on the server's local TCP port) and the backends it forks."""

    def __init__(self, postmaster: psutil.Process | None) -> None:
        self.postmaster = postmaster
        self.tree = ProcessTree(postmaster) if postmaster is not None else None

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
        if self.postmaster is None or self.tree is None:
            return None
        children = self.tree.descendants()
        if children is None:
            return None
        # The postmaster's whole RSS (shared memory once), each backend's own pages.
        main_cpu, main_rss = _cpu_and_rss([self.postmaster], reaped=True)
        cpu, rss = _cpu_and_rss(children, reaped=False, private=True)
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
    _resources: list[_Resources] = field(default_factory=list)
    _tally: _Tally = field(default_factory=_Tally)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.reconnects = 0  # sessions opened again after losing one (the cross-check counts)
        self.conn = self._connect()
        self.me = psutil.Process()
        # The client's processes are listed again when its own children change (--processes
        # workers, LocalCluster nodes: multiprocessing knows them without a table walk), the
        # server's when the run's backends sampled (their pids) change.
        self.client_tree = ProcessTree(self.me)
        self._children_seen: frozenset[int] = frozenset()
        self._backends_seen: frozenset[int] = frozenset()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.target.with_params(
            application_name=SAMPLER_APPLICATION_NAME, connect_timeout="5").conninfo(),
            autocommit=True, prepare_threshold=None)  # a PREPARE would be a transaction more

    def _states(self) -> list[State] | None:
        """The backends' states, or None when the server cannot be asked right now (it
        restarted, or terminated us): the sample is then skipped, never the run."""
        try:
            if self.conn.closed:
                self.conn = self._connect()
                self.reconnects += 1
            return self._query()
        except psycopg.Error:
            return None

    def _query(self) -> list[State]:
        self.statements += 1
        if self.application_names is None:
            return self.conn.execute(
                "SELECT state, wait_event_type, wait_event, pid FROM pg_stat_activity WHERE "
                "datname = current_database() AND backend_type = 'client backend' AND "
                "pid <> pg_backend_pid() AND application_name NOT LIKE 'poolbench%%'"
            ).fetchall()
        return self.conn.execute(
            "SELECT state, wait_event_type, wait_event, pid FROM pg_stat_activity WHERE "
            "datname = current_database() AND backend_type = 'client backend' AND "
            "application_name = ANY(%s)", (list(self.application_names),)).fetchall()

    def sample(self, *, resources: bool = False) -> None:
        now = time.monotonic()
        states = self._states()
        if states is not None:
            sample = self._tally.add(states)
            sample.at = now
            self._samples.append(sample)
            backends = frozenset(row[3] for row in states)
            if backends != self._backends_seen and self.server is not None \
                    and self.server.tree is not None:
                self._backends_seen = backends
                self.server.tree.changed()
        if resources or not self._resources or now - self._resources[-1].at >= RESOURCES_EVERY_S:
            self._read_resources(now, relist=resources)

    def _read_resources(self, now: float, *, relist: bool = False) -> None:
        children = frozenset(p.pid for p in multiprocessing.active_children())
        if relist or children != self._children_seen:
            self._children_seen = children
            self.client_tree.changed()
        if relist and self.server is not None and self.server.tree is not None:
            self.server.tree.changed()
        cpu, rss = _cpu_and_rss([self.me, *(self.client_tree.descendants() or ())],
                                reaped=True)
        server = self.server.read() if self.server is not None else None
        self._resources.append(_Resources(now, cpu, rss, server[0] if server else None,
                                          server[1] if server else None))

    def start(self) -> None:
        self.cpu_s = 0.0
        self._samples, self._resources, self._tally = [], [], _Tally()
        self._stop.clear()
        self.sample(resources=True)
        self._thread = threading.Thread(target=self._loop, name="poolbench-sampler",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        started = time.thread_time()
        while not self._stop.wait(self.interval_s):
            self.sample()
        self.cpu_s = time.thread_time() - started  # what sampling cost this process

    def stop(self) -> ActivitySummary | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample(resources=True)
        # Publish this connection's counters now, so the cross-check can subtract them.
        try:
            self.conn.execute("SELECT pg_stat_force_next_flush()")
            self.statements += 1
        except psycopg.Error:
            pass  # a lost connection published its counters as it ended
        if not self._samples or len(self._resources) < 2:
            return None
        return replace(summarise(self._samples, self._tally, self._resources, self.interval_s),
                       sampler_cpu_s=round(self.cpu_s, 4))

    def close(self) -> None:
        self._stop.set()
        self.conn.close()


def _median(values: list[int]) -> float:
    return statistics.median(values) if values else 0.0


def _cpu_pct(pair: tuple[_Resources, _Resources], before: float | None,
             after: float | None) -> float | None:
    """CPU seconds between two readings as % of one core over the time between them."""
    wall = pair[1].at - pair[0].at
    if before is None or after is None or wall <= 0:
        return None
    return round((after - before) / wall * 100, 1)


def summarise(samples: list[_Sample], tally: _Tally, resources: list[_Resources],
              interval_s: float) -> ActivitySummary:
    """Samples -> shares, medians, maxima and a per-second series (pure)."""
    actives = [s.active for s in samples]
    first, last = resources[0], resources[-1]
    server_cpu = (last.server_cpu_s - first.server_cpu_s
                  if last.server_cpu_s is not None and first.server_cpu_s is not None else None)
    by_second: dict[int, list[_Sample]] = {}
    for s in samples:
        by_second.setdefault(int(s.at - first.at), []).append(s)
    usage: dict[int, tuple[_Resources, _Resources]] = {}
    for before, after in itertools.pairwise(resources):
        usage[int(after.at - first.at)] = (before, after)
    timeline = []
    for second in sorted(set(by_second) | set(usage)):
        group = by_second.get(second, [])
        pair = usage.get(second)
        timeline.append(ActivitySecond(
            second=second, backends=_median([s.backends for s in group]),
            active=_median([s.active for s in group]),
            idle_in_transaction=_median([s.idle_in_transaction for s in group]),
            client_cpu_pct=(_cpu_pct(pair, pair[0].client_cpu_s, pair[1].client_cpu_s) or 0.0)
            if pair else 0.0,
            client_rss_mb=round(pair[1].client_rss / MB, 1) if pair else 0.0,
            server_cpu_pct=_cpu_pct(pair, pair[0].server_cpu_s, pair[1].server_cpu_s)
            if pair else None,
            server_rss_mb=round(pair[1].server_rss / MB, 1)
            if pair and pair[1].server_rss is not None else None))
    return ActivitySummary(
        samples=len(samples), interval_s=interval_s, seconds=round(last.at - first.at, 3),
        backends_max=max((s.backends for s in samples), default=0),
        active_median=statistics.median(actives) if actives else 0.0,
        active_max=max(actives, default=0),
        idle_in_transaction_share=round(tally.idle_in_transaction / tally.rows, 4)
        if tally.rows else 0.0,
        wait_shares={k: round(v / tally.active, 4) for k, v in tally.waits.most_common()}
        if tally.active else {},
        wait_events=dict(tally.events.most_common(10)),
        client_cpu_s=round(last.client_cpu_s - first.client_cpu_s, 3),
        server_cpu_s=round(server_cpu, 3) if server_cpu is not None else None,
        client_rss_max_mb=round(max(r.client_rss for r in resources) / MB, 1),
        server_rss_max_mb=round(max(r.server_rss or 0 for r in resources) / MB, 1)
        if last.server_rss is not None else None,
        timeline=tuple(timeline))
