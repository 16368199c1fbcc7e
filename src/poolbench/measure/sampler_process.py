"""What runs in the activity sampler's own process: its looks at the server and the machine.

:class:`poolbench.measure.sampler.Sampler` starts this file as a process of its own, so the
sampling (a query every ``--sample-interval``, psutil's reads, their bookkeeping) never
takes a turn of the client's interpreter or its GIL. The file imports nothing of poolbench
(only the standard library, psutil and psycopg): started by path, the process loads in a
third of the time that importing the ``poolbench`` package would take.

The protocol, one JSON object a line: on its stdin the client sends the settings first
(the conninfo, password included, only ever through this pipe), then ``{"do": "start"}``,
``{"do": "sample"}`` or ``{"do": "stop"}``; each gets one answer on stdout. The samples go
back whole with the answer to ``stop``. The statements the sampler sends and the sessions
it reopens are counted in a 16-byte file both processes map (made by the client, mode 0600,
already unlinked), so the client knows them even if this process dies. The process ends
when its stdin closes (the client closed the sampler, or died) or its parent changes (the
client died and the process was handed to another); it ignores SIGINT, which a Ctrl-C in a
terminal sends to the whole group: the client decides, then closes the pipe.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import selectors
import signal
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg
from psycopg import sql

# CPU and memory are read once a second: walking the process table costs milliseconds of
# CPU on the cores the client and the server share.
RESOURCES_EVERY_S = 1.0
PARENT_POLL_S = 1.0  # longest time between two looks at whether the client is still there

State = tuple[str | None, str | None, str | None, int]  # state, wait type, event, pid


class LineChannel:
    """JSON objects, one a line, over two pipe ends; reading waits at most a given time
    (a selector, no thread). Used at both ends."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.selector = selectors.DefaultSelector()  # epoll/poll: no FD_SETSIZE limit
        self.selector.register(read_fd, selectors.EVENT_READ)
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        """Raises OSError (BrokenPipeError) if the other end has closed."""
        data = memoryview(json.dumps(message).encode() + b"\n")
        while data:
            data = data[os.write(self.write_fd, data):]

    def receive(self, timeout_s: float | None) -> dict[str, Any] | None:
        """The next object, or None if none came within ``timeout_s`` (None: wait for it).
        Raises EOFError once the other end has closed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.selector.select(left):
                return None
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise EOFError("the other end of the sampler's pipe closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self.selector.close()


class SharedCounters:
    """The sampler's statements sent and sessions opened again, in a small file mapped by
    the client and the sampler's process alike: still readable when the process died."""

    LAYOUT = struct.Struct("<qq")

    def __init__(self, fd: int) -> None:
        self.map: mmap.mmap | None = mmap.mmap(fd, self.LAYOUT.size)
        self.last = (0, 0)

    def read(self) -> tuple[int, int]:
        if self.map is not None:
            self.last = self.LAYOUT.unpack_from(self.map)
        return self.last

    def add(self, statements: int = 0, sessions: int = 0) -> None:
        if self.map is not None:
            done, opened = self.LAYOUT.unpack_from(self.map)
            self.LAYOUT.pack_into(self.map, 0, done + statements, opened + sessions)

    def close(self) -> None:
        """Keeps the last values readable."""
        if self.map is not None:
            self.read()
            self.map.close()
            self.map = None


@dataclass(slots=True)
class Sample:
    """One look at pg_stat_activity, kept as counts (a long run keeps thousands)."""

    at: float
    backends: int
    active: int
    idle_in_transaction: int


@dataclass
class Tally:
    """Backend samples by state and wait, added up over a strategy."""

    rows: int = 0
    active: int = 0
    idle_in_transaction: int = 0
    waits: Counter[str] = field(default_factory=Counter)  # active rows by wait_event_type
    events: Counter[str] = field(default_factory=Counter)  # rows by "Type:Event"

    def add(self, states: list[State]) -> Sample:
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
        return Sample(0.0, len(states), active, idle)


@dataclass(slots=True)
class Resources:
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
    """A process and its descendants (less ``exclude``), listed again only when told the
    tree changed: listing walks the whole process table (a file read per process on the
    machine), so it is not done every second of a steady run. Between listings a new
    process is missed until the next one, and one that ends drops out, its CPU then
    counted in its parent's reaped children's time."""

    def __init__(self, root: psutil.Process, exclude: frozenset[int] = frozenset()) -> None:
        self.root = root
        self.exclude = exclude
        self.members: list[psutil.Process] | None = None  # None: list at the next read

    def changed(self) -> None:
        self.members = None

    def descendants(self) -> list[psutil.Process] | None:
        if self.members is None:
            try:
                self.members = [p for p in self.root.children(recursive=True)
                                if p.pid not in self.exclude]
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


def child_pids(proc: psutil.Process) -> frozenset[int]:
    """``proc``'s own children. On Linux from ``/proc/PID/task/*/children`` (one small file
    per thread of ``proc``), not from a walk of the whole process table as psutil does."""
    tasks = f"/proc/{proc.pid}/task"
    try:
        threads = os.listdir(tasks)
    except OSError:
        threads = []
    found: set[int] = set()
    read_any = False
    for tid in threads:
        try:
            with open(f"{tasks}/{tid}/children", "rb") as f:
                found.update(int(pid) for pid in f.read().split())
            read_any = True
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    if read_any:
        return frozenset(found)
    try:  # no such files here (not Linux, or a kernel without them)
        return frozenset(p.pid for p in proc.children())
    except psutil.Error:
        return frozenset()


class Readings:
    """The sampler's looks at the server (a connection of its own) and at the resources of
    the client (its process and descendants, this process left out) and of the server."""

    def __init__(self, conninfo: str, application_names: list[str] | None, *,
                 client: psutil.Process, server: ServerProcesses | None,
                 counters: SharedCounters) -> None:
        self.conninfo = conninfo
        self.application_names = application_names
        self.counters = counters
        self.server = server
        self.client = client
        # The client's processes are listed again when its own children change (--processes
        # workers, LocalCluster nodes), the server's when the run's backends sampled (their
        # pids) change.
        self.me = os.getpid()
        self.client_tree = ProcessTree(client, exclude=frozenset({self.me}))
        self._children_seen: frozenset[int] = frozenset()
        self._backends_seen: frozenset[int] = frozenset()
        self.samples: list[Sample] = []
        self.resources: list[Resources] = []
        self.tally = Tally()
        self.conn = self._connect()
        self._cursor = self.conn.cursor()
        self._sql = self._states_sql()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True,
                               prepare_threshold=None)  # a PREPARE would be a transaction more

    def _states_sql(self) -> str:
        """The look at the backends, its names inlined once (a parameter costs the server
        and psycopg's adaptation a tick, every tick). It reads ``pg_stat_get_activity``,
        the function under ``pg_stat_activity``, without the view's joins to
        ``pg_database`` and ``pg_authid``: the same rows for a fifth of the server's CPU
        (measured on an idle 2-core VM, 2026-12-01; under load each look costs more, and
        the backend's CPU over a run is in bench/results/sampler_cost.txt)."""
        base = ("SELECT state, wait_event_type, wait_event, pid FROM pg_stat_get_activity(NULL) "
                "WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND backend_type = 'client backend' AND ")
        if self.application_names is None:
            return base + ("pid <> pg_backend_pid() AND "
                           "application_name NOT LIKE 'poolbench%'")  # sent as is: no params
        names = sql.Literal(self.application_names).as_string(self.conn)
        return base + f"application_name = ANY({names})"

    def _states(self) -> list[State] | None:
        """The backends' states, or None when the server cannot be asked right now (it
        restarted, or terminated us): the sample is then skipped, never the run."""
        try:
            if self.conn.closed:
                self.conn = self._connect()
                self._cursor = self.conn.cursor()
                self.counters.add(sessions=1)
            self.counters.add(statements=1)  # counted before it is sent: the server may count it
            return self._cursor.execute(self._sql).fetchall()
        except psycopg.Error:
            return None

    def start(self) -> None:
        self.samples, self.resources, self.tally = [], [], Tally()
        self.sample(resources=True)

    def sample(self, *, resources: bool = False) -> None:
        now = time.monotonic()
        states = self._states()
        if states is not None:
            sample = self.tally.add(states)
            sample.at = now
            self.samples.append(sample)
            backends = frozenset(row[3] for row in states)
            if backends != self._backends_seen and self.server is not None \
                    and self.server.tree is not None:
                self._backends_seen = backends
                self.server.tree.changed()
        if resources or not self.resources or now - self.resources[-1].at >= RESOURCES_EVERY_S:
            self._read_resources(now, relist=resources)

    def _read_resources(self, now: float, *, relist: bool = False) -> None:
        children = child_pids(self.client) - {self.me}
        if relist or children != self._children_seen:
            self._children_seen = children
            self.client_tree.changed()
        if relist and self.server is not None and self.server.tree is not None:
            self.server.tree.changed()
        cpu, rss = _cpu_and_rss([self.client, *(self.client_tree.descendants() or ())],
                                reaped=True)
        server = self.server.read() if self.server is not None else None
        self.resources.append(Resources(now, cpu, rss, server[0] if server else None,
                                        server[1] if server else None))

    def listed(self) -> dict[str, list[int]]:
        """The processes the latest reading covered besides the client and the postmaster."""
        server = self.server.tree.members if self.server and self.server.tree else None
        return {"client": [p.pid for p in self.client_tree.members or ()],
                "server": [p.pid for p in server or ()]}

    def stop(self) -> dict[str, Any]:
        """The final reading, this connection's counters published (so the cross-check can
        subtract them), and everything sampled since ``start``."""
        self.sample(resources=True)
        try:
            self.counters.add(statements=1)
            self.conn.execute("SELECT pg_stat_force_next_flush()")
        except psycopg.Error:
            pass  # a lost connection published its counters as it ended
        t = self.tally
        return {"samples": [[s.at, s.backends, s.active, s.idle_in_transaction]
                            for s in self.samples],
                "resources": [[r.at, r.client_cpu_s, r.client_rss, r.server_cpu_s,
                               r.server_rss] for r in self.resources],
                "tally": {"rows": t.rows, "active": t.active,
                          "idle_in_transaction": t.idle_in_transaction,
                          "waits": dict(t.waits), "events": dict(t.events)}}

    def close(self) -> None:
        self.conn.close()


def _serve(channel: LineChannel, readings: Readings, interval_s: float, parent: int) -> None:
    """Obey the client until it closes the pipe or is gone; between its messages, sample
    every ``interval_s`` while started."""
    due = math.inf  # the next sample's instant; inf: stopped
    cpu_started = 0.0
    while os.getppid() == parent:
        message = channel.receive(min(PARENT_POLL_S, max(0.0, due - time.monotonic())))
        if message is None:
            if time.monotonic() >= due:
                readings.sample()
                due = time.monotonic() + interval_s
            continue
        if message["do"] == "start":
            readings.start()
            cpu_started = time.process_time()
            due = time.monotonic() + interval_s
            channel.send({"started": True})
        elif message["do"] == "sample":
            readings.sample()
            channel.send(readings.listed())
        elif message["do"] == "stop":
            due = math.inf
            answer = readings.stop()
            answer["cpu_s"] = time.process_time() - cpu_started  # what sampling cost
            channel.send(answer)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the client decides
    parent = os.getppid()
    channel = LineChannel(sys.stdin.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr  # the pipe carries the protocol only
    try:
        settings = channel.receive(None)
    except EOFError:
        return
    assert settings is not None
    counters = SharedCounters(settings["counters_fd"])
    try:
        postmaster = settings["postmaster_pid"]
        readings = Readings(
            settings["conninfo"], settings["application_names"],
            client=psutil.Process(settings["client_pid"]),
            server=ServerProcesses(psutil.Process(postmaster)) if postmaster else None,
            counters=counters)
    except Exception as exc:  # the client says "not measured" and why
        channel.send({"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0]})
        return
    try:
        channel.send({"ready": True})
        _serve(channel, readings, settings["interval_s"], parent)
    except (EOFError, BrokenPipeError):
        pass  # the client closed the sampler, or died
    finally:
        readings.close()
        counters.close()


if __name__ == "__main__":
    main()
