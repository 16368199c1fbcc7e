"""Evidence during every run: the server's activity and the machine's resources, sampled.

Every ``--sample-interval`` (default 200 ms) a connection of its own
(``poolbench-sampler``) reads ``pg_stat_activity`` (its function, ``pg_stat_get_activity``,
without the view's catalog joins) for the benchmark's backends (by application name):
their ``state`` and ``wait_event_type``/``wait_event``. At the same
instants psutil reads the CPU time and RSS of poolbench's process and its children
(``--processes`` workers, LocalCluster nodes; the sampler's own process left out) and,
when the server runs on this machine (the embedded server always), of the server's
processes (the postmaster, its live backends, and the CPU of those it has reaped). The
sampler's own statements are counted, published (``pg_stat_force_next_flush``) and
subtracted by the server cross-check, so it does not disturb the counts poolbench checks.

The sampling runs in a process of its own (:mod:`poolbench.measure.sampler_process`),
started once per run before any strategy and told to start and stop around each one:
it takes no turn of the client's interpreter. :class:`Sampler` is the client's handle.
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from poolbench.db.target import ConnectionTarget, reason
from poolbench.errors import SamplerFailed
from poolbench.measure import sampler_process
from poolbench.measure.sampler_process import (
    RESOURCES_EVERY_S,
    LineChannel,
    Resources,
    Sample,
    ServerProcesses,
    SharedCounters,
    Tally,
)
from poolbench.results import ActivitySecond, ActivitySummary

__all__ = ["DEFAULT_INTERVAL_S", "RESOURCES_EVERY_S", "SAMPLER_APPLICATION_NAME",
           "ProcessesRead", "Sampler", "ServerProcesses", "summarise"]

SAMPLER_APPLICATION_NAME = "poolbench-sampler"
# Five looks a second: each costs the server ~0.6 ms under load and the sampler's process
# about as much (bench/results/sampler_cost.txt), so together within 1% of one core.
DEFAULT_INTERVAL_S = 0.2
ANSWER_TIMEOUT_S = 60.0  # longest wait for the sampler's process to answer: only a hang
CLOSE_TIMEOUT_S = 10.0  # longest wait for it to end once its pipe is closed
MB = 1024 * 1024
# Started by path, not with -m: importing the poolbench package would load all of it.
_BOOTSTRAP = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


def _unlinked_file(size: int = 0) -> int:
    """A file only this user can read (mkstemp's mode 0600), unlinked at once, so nothing
    is left behind whatever happens; its descriptor."""
    fd, path = tempfile.mkstemp(prefix="poolbench-sampler-")
    os.unlink(path)
    os.ftruncate(fd, size)
    return fd


@dataclass(frozen=True)
class ProcessesRead:
    """The processes a reading covered besides the client's and the postmaster: the
    client's descendants (the sampler's process not among them) and the server's."""

    client: frozenset[int]
    server: frozenset[int]


class Sampler:
    """One run's sampler: a process of its own, started here (it has connected when this
    returns), told to start and stop sampling around each strategy, ended by ``close``.

    Raises :class:`~poolbench.errors.SamplerFailed` (a one-line reason, secrets masked)
    when the process cannot start or connect, and from then on when it has died or stops
    answering: the caller reports the sampler not measured and goes on."""

    def __init__(self, target: ConnectionTarget,
                 application_names: tuple[str, ...] | None,  # None: every client backend
                 interval_s: float = DEFAULT_INTERVAL_S,  # but poolbench's own
                 server: ServerProcesses | None = None) -> None:
        self.target = target
        self.application_names = application_names
        self.interval_s = interval_s
        self.server = server
        self.failed: str | None = None  # why the process is gone, once it is
        self._files = ExitStack()  # closed last, by close()
        try:
            counts = _unlinked_file(SharedCounters.LAYOUT.size)
            self._files.callback(os.close, counts)
            self._counters = SharedCounters(counts)
            self._files.callback(self._counters.close)  # its last values stay readable
            self._stderr = _unlinked_file()
            self._files.callback(os.close, self._stderr)
            # This very file (it imports nothing of poolbench's), whatever PYTHONPATH says.
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, sampler_process.__file__],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                pass_fds=(counts,), bufsize=0)
        except BaseException:
            self._files.close()
            raise
        self.pid = self.process.pid
        assert self.process.stdin is not None and self.process.stdout is not None
        self._channel = LineChannel(self.process.stdout.fileno(), self.process.stdin.fileno())
        postmaster = server.postmaster if server is not None else None
        try:
            # The password goes through the pipe, never the command line.
            self._ask({"conninfo": target.with_params(
                application_name=SAMPLER_APPLICATION_NAME, connect_timeout="5").conninfo(),
                "application_names": list(application_names)
                if application_names is not None else None,
                "interval_s": interval_s, "client_pid": os.getpid(),
                "postmaster_pid": postmaster.pid if postmaster is not None else None,
                "counters_fd": counts})
        except BaseException:
            self.close()
            raise

    @property
    def statements(self) -> int:
        """Statements the sampler has sent, for the cross-check to subtract."""
        return self._counters.read()[0]

    @property
    def reconnects(self) -> int:
        """Sessions opened again after losing one (the cross-check counts them)."""
        return self._counters.read()[1]

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.failed is not None:
            raise SamplerFailed(self.failed)
        try:
            self._channel.send(message)
            answer = self._channel.receive(ANSWER_TIMEOUT_S)
        except (OSError, EOFError):
            self._fail(self._ended())
        if answer is None:
            self.process.kill()
            self._fail(f"the sampler's process did not answer within {ANSWER_TIMEOUT_S:g} s")
        if "error" in answer:
            self._fail(answer["error"])
        return answer

    def _ended(self) -> str:
        try:
            code = self.process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return "the sampler's process closed its pipe"
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            tail = os.pread(self._stderr, 4096, max(0, os.fstat(self._stderr).st_size - 4096))
            last = (tail.decode(errors="replace").strip().splitlines() or [""])[-1]
            how = f"ended with exit code {code}" + (f": {last}" if last else "")
        return f"the sampler's process {how}"

    def _fail(self, why: str) -> NoReturn:
        self.failed = reason(SamplerFailed(why), self.target)
        raise SamplerFailed(self.failed)

    def start(self) -> None:
        """The first reading (taken when this returns), then one every ``interval_s``."""
        self._ask({"do": "start"})

    def sample(self) -> ProcessesRead:
        """A reading now, besides the regular ones; which processes it covered."""
        answer = self._ask({"do": "sample"})
        return ProcessesRead(frozenset(answer["client"]), frozenset(answer["server"]))

    def stop(self) -> ActivitySummary | None:
        """The final reading, then what was sampled since ``start`` (None: too little)."""
        answer = self._ask({"do": "stop"})
        samples = [Sample(*row) for row in answer["samples"]]
        resources = [Resources(*row) for row in answer["resources"]]
        t = answer["tally"]
        tally = Tally(t["rows"], t["active"], t["idle_in_transaction"], Counter(t["waits"]),
                      Counter(t["events"]))
        if not samples or len(resources) < 2:
            return None
        return replace(summarise(samples, tally, resources, self.interval_s),
                       sampler_cpu_s=round(answer["cpu_s"], 4))

    def close(self) -> None:
        """Ends the process (its pipe closed, it closes its connection and exits)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._channel.close()
        self._files.close()


def _median(values: list[int]) -> float:
    return statistics.median(values) if values else 0.0


def _cpu_pct(pair: tuple[Resources, Resources], before: float | None,
             after: float | None) -> float | None:
    """CPU seconds between two readings as % of one core over the time between them."""
    wall = pair[1].at - pair[0].at
    if before is None or after is None or wall <= 0:
        return None
    return round((after - before) / wall * 100, 1)


def summarise(samples: list[Sample], tally: Tally, resources: list[Resources],
              interval_s: float) -> ActivitySummary:
    """Samples -> shares, medians, maxima and a per-second series (pure)."""
    actives = [s.active for s in samples]
    first, last = resources[0], resources[-1]
    server_cpu = (last.server_cpu_s - first.server_cpu_s
                  if last.server_cpu_s is not None and first.server_cpu_s is not None else None)
    by_second: dict[int, list[Sample]] = {}
    for s in samples:
        by_second.setdefault(int(s.at - first.at), []).append(s)
    usage: dict[int, tuple[Resources, Resources]] = {}
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
