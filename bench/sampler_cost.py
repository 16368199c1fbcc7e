"""What the activity sampler costs, measured inside one run so that the machine's drift
cancels: one long pooled read phase with the run's own sampler off, while this script starts
and stops a sampler (the same class, every 200 ms as a run's by default, on the run's
backends, reading resources each second; its process started before the run) in alternate
blocks of BLOCK_S seconds. Each block's first second (the switch) is left out. Each "on"
block's operations are divided by the mean of its two "off" neighbours', and the mean of
those ratios is given with a 95% confidence interval (Student's t). An A/A control does the
same with nothing switched. Target: within 1%.

On this machine's two shared cores the throughput ratio moves by more than 1% between
blocks with nothing switched, so the same run also keeps CPU accounts over each "on" block's
counted seconds, and over the whole block with the start and stop (the scheduler's run time
of each thread from /proc, or psutil's cpu_times in 10 ms ticks where a sum is needed): the
sampler's process, the server backend answering its queries (found by its application
name), this process (the run's client: its threads) and the server's other processes (the
postmaster, its live children and the CPU of those it reaped). With the cores saturated the
sampler can take at most the CPU it uses, so its cost in throughput is at most (its process
+ its backend) / (everything the run used) over the same blocks: a bound that does not
depend on the machine's drift. When the cores are not saturated (the client, one interpreter,
is then the bottleneck) the most is its CPU over the wall clock, a share of one core: both
are printed, with how many cores the run kept busy. The control reports the same accounts
with the sampler idle.
Run: python bench/sampler_cost.py [seconds per run, default 240]
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, fields

import psutil
from _common import Report
from scipy import stats

from poolbench import RunConfig, run
from poolbench.db.admin import connect_admin
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import APPLICATION_NAME
from poolbench.events import RunEvents
from poolbench.measure.sampler import (
    DEFAULT_INTERVAL_S,
    SAMPLER_APPLICATION_NAME,
    Sampler,
    ServerProcesses,
)
from poolbench.measure.sampler_process import child_pids

BLOCK_S = 3


@dataclass(frozen=True)
class CpuSeconds:
    """CPU seconds (user + system) by who spent them."""

    sampler: float = 0.0  # the sampler's own process
    sampler_backend: float = 0.0  # the server backend answering the sampler's queries
    client: float = 0.0  # this process: the run's workers are its threads
    server: float = 0.0  # the postmaster, its other children (live or reaped)
    wall: float = 0.0  # seconds of the monotonic clock (not CPU: not in the total)

    def __add__(self, other: CpuSeconds) -> CpuSeconds:
        return CpuSeconds(*(getattr(self, f.name) + getattr(other, f.name)
                            for f in fields(self)))

    def __sub__(self, other: CpuSeconds) -> CpuSeconds:
        return CpuSeconds(*(getattr(self, f.name) - getattr(other, f.name)
                            for f in fields(self)))

    @property
    def total(self) -> float:
        return self.sampler + self.sampler_backend + self.client + self.server

    @property
    def one_core(self) -> float:
        """The sampler's CPU over the wall clock: its most if all it took came out of a
        bottleneck that runs on one core (the client's interpreter) while cores are idle."""
        return (self.sampler + self.sampler_backend) / self.wall if self.wall else 0.0

    @property
    def bound(self) -> float:
        """The sampler's share of the CPU the run used: its most a saturated machine loses."""
        return (self.sampler + self.sampler_backend) / self.total if self.total else 0.0


def _cpu_s(proc: psutil.Process, *, reaped: bool = False) -> float:
    """Its CPU seconds: from the scheduler's nanosecond count of each of its threads
    (``/proc/PID/task/*/schedstat``) where there is one, since cpu_times counts 10 ms ticks
    and a backend's share of a 3 s block is tens of them; ``reaped``: with its reaped
    children's (ticks: the kernel keeps no finer sum)."""
    seconds = None
    if not reaped:
        try:
            tasks = os.listdir(f"/proc/{proc.pid}/task")
            total = 0
            for tid in tasks:
                with open(f"/proc/{proc.pid}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[0])
            seconds = total / 1e9
        except (OSError, ValueError, IndexError):
            seconds = None  # a thread ended meanwhile, or no schedstat: ticks then
    if seconds is not None:
        return seconds
    t = proc.cpu_times()
    return t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)


class CpuMeter:
    """Reads :class:`CpuSeconds` from /proc (psutil); the server's children are listed again
    at each reading (``/proc/PID/task/*/children``, not a walk of the process table), so
    a backend that ends between two readings moves from the live to the reaped sum."""

    def __init__(self, sampler_pid: int, sampler_backend_pid: int,
                 postmaster: psutil.Process) -> None:
        self.client = psutil.Process()
        self.sampler = psutil.Process(sampler_pid)
        self.sampler_backend_pid = sampler_backend_pid
        self.postmaster = postmaster
        self.children: dict[int, psutil.Process] = {}  # kept: psutil caches per process

    def read(self) -> CpuSeconds:
        backend = server = 0.0
        pids = child_pids(self.postmaster)
        self.children = {pid: self.children.get(pid) or psutil.Process(pid) for pid in pids}
        for pid, proc in self.children.items():
            try:
                seconds = _cpu_s(proc)
            except psutil.NoSuchProcess:
                continue  # reaped meanwhile: its CPU is in the postmaster's children's
            if pid == self.sampler_backend_pid:
                backend = seconds
            else:
                server += seconds
        return CpuSeconds(sampler=_cpu_s(self.sampler), sampler_backend=backend,
                          # ticks for the client: its pool's threads may come and go
                          client=_cpu_s(self.client, reaped=True),
                          server=server + _cpu_s(self.postmaster, reaped=True),
                          wall=time.monotonic())


def sampler_backend_pid(server: EmbeddedServer) -> int:
    """The pid of the backend serving the sampler's connection (exactly one)."""
    assert server.target is not None
    with connect_admin(server.target) as conn:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (SAMPLER_APPLICATION_NAME,))]
    assert len(pids) == 1, f"sampler backends: {pids}"
    return pids[0]


def measure(server: EmbeddedServer, seconds: float, *,
            switch: bool) -> tuple[list[float], float, list[CpuSeconds]]:
    """Per 'on' block, its operations over its neighbours'; the sampler's CPU share of the
    client's (its own reading); the CPU accounts over the 'on' blocks' counted seconds and
    over the whole blocks."""
    assert server.target is not None
    processes = ServerProcesses.find(data_dir=str(server.data_dir))
    assert processes.postmaster is not None
    sampler = Sampler(server.target, (APPLICATION_NAME,), DEFAULT_INTERVAL_S, server=processes)
    meter = CpuMeter(sampler.pid, sampler_backend_pid(server), processes.postmaster)
    events, started, done = RunEvents(), threading.Event(), threading.Event()
    origin: list[float] = []
    cpu = [0.0, 0.0]  # the sampler's process, the client's processes, over 'on' blocks
    # Summed over the 'on' blocks: their seconds the ratio counts (the switch's first one
    # left out), and the whole blocks with the start and the stop (a run does them once per
    # strategy; here they come every 2 blocks).
    accounts = [CpuSeconds(), CpuSeconds()]

    def phase_started(**_: object) -> None:
        origin.append(time.monotonic())
        started.set()

    def switcher() -> None:
        started.wait()
        block = 0
        while not done.is_set():
            even = block % 2 == 0
            on = switch and even
            begin = origin[0] + block * BLOCK_S
            first = meter.read() if even else None
            if on:
                sampler.start()
            done.wait(max(0.0, begin + 1 - time.monotonic()))  # the switch's second
            counted = meter.read() if even else None
            done.wait(max(0.0, begin + BLOCK_S - time.monotonic()))
            last = meter.read() if even else None
            if on and (summary := sampler.stop()) is not None:
                cpu[0] += summary.sampler_cpu_s or 0.0
                cpu[1] += summary.client_cpu_s
            if first is not None and counted is not None and last is not None \
                    and not done.is_set():  # whole blocks only
                accounts[0] += last - counted
                accounts[1] += meter.read() - first
            block += 1

    events.phase_started.add_listener(phase_started)
    thread = threading.Thread(target=switcher)
    thread.start()
    try:
        results = run(RunConfig(target=server.target, strategies=("psycopg:pool",), rows=1000,
                                workers=8, pool_min=8, pool_max=8, warmup=0, trials=1,
                                duration_s=seconds, out_dir=None, sample_interval_s=0,
                                mix=(("read", 1),)), events=events)
    finally:
        done.set()
        thread.join()
        reconnects = sampler.reconnects
        sampler.close()
    assert reconnects == 0, "the sampler reconnected: its backend's pid changed"
    ops = {s.second: s.ops for s in results.strategies[0].phase("mix").trials[0].timeline}
    # Each whole block's seconds after its first (the last, cut-short second left out).
    blocks: dict[int, list[int]] = {}
    for second, n in ops.items():
        if second % BLOCK_S and second + 1 < seconds:
            blocks.setdefault(second // BLOCK_S, []).append(n)
    whole = {b: statistics.mean(v) for b, v in blocks.items() if len(v) == BLOCK_S - 1}
    ratios = [whole[b] / ((whole[b - 1] + whole[b + 1]) / 2) for b in whole
              if b % 2 == 0 and b - 1 in whole and b + 1 in whole]
    return ratios, (cpu[0] / cpu[1] if cpu[1] else 0.0), accounts


def describe(cpu: CpuSeconds, verdict: str = "") -> str:
    return (f"process {cpu.sampler:.2f} s + its backend {cpu.sampler_backend:.2f} s of "
            f"{cpu.total:.1f} CPU-s (client {cpu.client:.1f}, server's other processes "
            f"{cpu.server:.1f}) = {cpu.bound:.2%}{verdict}; over {cpu.wall:.1f} s the run kept "
            f"{cpu.total / cpu.wall if cpu.wall else 0:.2f} of {os.cpu_count()} cores busy, "
            f"and the sampler took {cpu.one_core:.2%} of one core")


def interval(ratios: list[float]) -> tuple[float, float, float]:
    mean = statistics.mean(ratios)
    half = stats.t.ppf(0.975, len(ratios) - 1) * statistics.stdev(ratios) / len(ratios) ** 0.5
    return mean, mean - half, mean + half


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 240.0
    report = Report("sampler_cost")
    report.line(f"the sampler looks every {DEFAULT_INTERVAL_S * 1000:.0f} ms (a run's default)")
    with EmbeddedServer(max_connections=100) as server:
        control, _, idle = measure(server, seconds, switch=False)
        ratios, share, busy = measure(server, seconds, switch=True)
    for name, values in (("sampler on / off", ratios), ("A/A control (nothing switched)",
                                                         control)):
        mean, low, high = interval(values)
        report.line(f"{name}: {mean:.3f}x, 95% CI {low:.3f}..{high:.3f} ({len(values)} "
                    f"'on' blocks of {BLOCK_S} s, each against its two neighbours; "
                    f"psycopg:pool reads, 8 workers, one {seconds:g} s phase)")
    report.line("target: within 1% (0.99x..1.01x); met only if the interval lies inside it")
    report.line(f"the sampler's own CPU: {share:.2%} of the client's over the 'on' blocks "
                "(the CPU time of its own process; what its work can take from a CPU-bound "
                "client on shared cores)")
    report.line("CPU accounts over the 'on' blocks' counted seconds (as the ratio: the "
                "switch's second left out): sampler: " + describe(
                    busy[0], " (the most it takes from throughput when the cores are "
                    f"saturated; target 1%: {'met' if busy[0].bound <= 0.01 else 'not met'})")
                + " (its most if all it took came out of the client's one interpreter "
                "while a core idled)")
    report.line(f"the same over the whole 'on' blocks, the sampler's start and stop included "
                f"(a run does them once per strategy, this bench every {2 * BLOCK_S} s): "
                f"{describe(busy[1])}")
    report.line(f"the same in the A/A control (the sampler's process started, idle), counted "
                f"seconds: {describe(idle[0])}")
    report.save()


if __name__ == "__main__":
    main()
