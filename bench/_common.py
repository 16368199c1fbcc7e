"""Shared by the benchmark scripts: the machine's facts, and a report that is printed and
kept in ``bench/results/NAME.txt`` (with date, machine, versions and commit), so every
figure the docs quote (docs/performance.md and others) can be traced to the run that produced it."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from poolbench.analysis.intervals import Interval
from poolbench.db import binaries
from poolbench.environment import package_versions

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu() -> str:
    """The processor's model name, family, model and stepping (Linux; a VM's name alone can
    be generic), so runs on different hardware are told apart."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                          if ":" in line)
    except OSError:
        fields = {}
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" not in fields:
        return platform.processor() or "processor unknown"
    return (f"{fields['model name']}, family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')} stepping {fields.get('stepping', '?')}")


def machine() -> str:
    return (f"{platform.machine()} ({_cpu()}), {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, "
            f"{binaries.DISTRIBUTION} {package_versions().get(binaries.DISTRIBUTION, '?')}")


def _commit() -> str:
    root = RESULTS.parent.parent
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=root)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True, cwd=root).stdout.strip()
    return (proc.stdout.strip() or "unknown") + (" (src modified)" if dirty else "")


class Report:
    """Lines printed as they come and written to ``bench/results/<name>.txt`` at the end."""

    def __init__(self, name: str) -> None:
        self.path = RESULTS / f"{name}.txt"
        versions = ", ".join(f"{k} {v}" for k, v in sorted(package_versions().items()))
        self.lines: list[str] = []
        self.line(f"# {name}: {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
                  f"commit {_commit()}")
        self.line(f"# machine: {machine()}, {platform.platform()}")
        self.line(f"# packages: {versions}")

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> None:
        RESULTS.mkdir(exist_ok=True)
        self.path.write_text("\n".join(self.lines) + "\n")
        print(f"written to {self.path}")


def seeded_reads(target, rows: int = 10_000):
    """The seed's table on ``target`` with ``rows`` rows of a run tag of its own, for point
    reads by id: (admin session, the run's table, the ids)."""
    from poolbench.check.calibrate import create_rows
    from poolbench.db.admin import AdminSession
    from poolbench.db.workload import RunTable, ensure_table, new_run_tag

    admin = AdminSession(target)
    admin.call(lambda c: ensure_table(c, "users"))
    workload = RunTable("users", new_run_tag())
    first, last = create_rows(admin, workload, rows)
    return admin, workload, list(range(first, last + 1))


def pieces_alone(workload, ids):
    """poolbench's per-operation pieces, each as ``fn(k)`` doing it k times without I/O:
    an empty loop (the base), ``record``, the source's ``next``, the worker's ``settle``,
    the stop flag's ``is_set``, one clock read."""
    import threading

    from poolbench.config import Pace
    from poolbench.measure.executor import _Worker
    from poolbench.measure.metrics import OperationRecorder, PhaseSink, now_ns
    from poolbench.workloads.phase import PhaseSpec, WorkSource

    rec = OperationRecorder(30.0, "", PhaseSink())
    t0 = rec.origin_ns = now_ns()
    src = WorkSource(PhaseSpec("read", workload.statements()["read"], workload, 0, count=None,
                               ids=tuple(ids), pace=Pace(duration_s=3600)))
    src.start()
    worker = _Worker(src, 30.0, {"": PhaseSink()})
    stop = threading.Event()

    def empty(k):
        for _ in range(k):
            pass

    def record(k):
        for j in range(k):
            b = t0 + j * 150_000
            rec.record(b, b + 20_000, b + 120_000, b + 140_000, None)

    def nxt(k):
        for _ in range(k):
            src.next()

    def settle(k):
        for _ in range(k):
            worker.settle(1, lambda m: None)

    def is_set(k):
        for _ in range(k):
            stop.is_set()

    def clock(k):
        for _ in range(k):
            now_ns()
    return {"empty loop": empty, "record": record, "source.next": nxt, "settle": settle,
            "stop.is_set": is_set, "now_ns": clock}


def interval_verdict(iv: Interval, target: float, *, at_most: bool = False) -> str:
    """Whether the median, and the end of its interval on the target's side (the lower end
    for a target to reach, the upper end for a bound, ``at_most``), meet ``target``: met
    when that end does, not met when the interval's other end misses too, else not
    settled."""
    def meets(x: float) -> bool:
        return x <= target if at_most else x >= target
    median = "meets" if meets(iv.value) else "misses"
    if iv.low is None or iv.high is None:
        return f"median {median} it; no interval"
    near, far = (iv.high, iv.low) if at_most else (iv.low, iv.high)
    end = "meets" if meets(near) else "misses"
    overall = "met" if meets(near) else "not met" if not meets(far) else "not settled"
    return (f"median {median} it, the interval's {'upper' if at_most else 'lower'} end {end} "
            f"it: {overall}")
