"""The resource sampler counts processes that start after it: the client's new children
(--processes workers, cluster nodes) and the server's new backends, in the per-second series,
not only once they have ended.

The sampler's own thread is kept out of the way (an interval of an hour) and the test takes
each reading itself, so what is checked is what the sampler decided (which processes it
reads) and CPU a process is known to have spent, never how busy a loaded machine let it be."""

from __future__ import annotations

import multiprocessing
import time

import psutil
import psycopg

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.measure.sampler import RESOURCES_EVERY_S, Sampler, ServerProcesses
from poolbench.results import ActivitySummary

CPU_S = 0.5  # CPU seconds the new process spends before the reading that must count them
NO_OWN_READINGS_S = 3600.0


def _burn(cpu_s: float, burnt, stop) -> None:  # a child process: CPU spent, then idle
    while time.process_time() < cpu_s:
        sum(range(10_000))
    burnt.set()
    stop.wait()


def _after(instant: float) -> None:
    """Return once the monotonic clock is past ``instant``: the sampler reads resources at
    most once a second, so a reading is due only then."""
    while (left := instant - time.monotonic()) > 0:
        time.sleep(left)


def _cpu_s_in_first_reading(summary: ActivitySummary | None, took_s: float,
                            which: str) -> float:
    """CPU seconds between the sampler's first two readings, at most: their second's share
    of a core times an upper bound of the time between them (the rounding of the share
    aside). The final reading lies a second later, so that second holds this pair only."""
    assert summary is not None and len(summary.timeline) == 3  # the seconds of 3 readings
    assert summary.timeline[0].second == 0, summary.timeline
    pct = getattr(summary.timeline[1], which)
    assert pct is not None, summary.timeline
    return pct / 100 * took_s


def test_a_child_started_after_the_sampler_counts_in_its_second(
        target: ConnectionTarget) -> None:
    context = multiprocessing.get_context("spawn")
    burnt, stop = context.Event(), context.Event()
    sampler = Sampler(target, ("nobody",), NO_OWN_READINGS_S)
    child = context.Process(target=_burn, args=(CPU_S, burnt, stop))
    try:
        before = time.monotonic()
        sampler.start()  # the first reading: no child yet
        started = time.monotonic()
        child.start()
        assert burnt.wait(120), "the child never spent its CPU"
        _after(started + RESOURCES_EVERY_S)
        sampler.sample()  # the child is new since the last reading, and alive
        took_s = time.monotonic() - before
        listed = {p.pid for p in sampler.client_tree.descendants() or ()}
        _after(time.monotonic() + 1.0)
        summary = sampler.stop()
    finally:
        stop.set()
        if child.pid is not None:
            child.join()
        sampler.close()
    assert child.pid in listed
    # The child's CPU is in the second it was spent, not only once the child ended.
    assert _cpu_s_in_first_reading(summary, took_s, "client_cpu_pct") >= 0.9 * CPU_S, \
        summary.timeline


def test_backends_opened_after_the_sampler_count_in_their_second(
        server: EmbeddedServer, target: ConnectionTarget) -> None:
    app = "poolbench-sampled"
    sampler = Sampler(target, (app,), NO_OWN_READINGS_S,
                      server=ServerProcesses.find(data_dir=str(server.data_dir)))
    assert sampler.server is not None and sampler.server.tree is not None
    try:
        before = time.monotonic()
        sampler.start()  # the first reading: the server's processes, this backend not yet
        started = time.monotonic()
        with psycopg.connect(target.with_params(application_name=app).conninfo(),
                             autocommit=True) as conn:
            backend = psutil.Process(conn.info.backend_pid)
            while sum(backend.cpu_times()[:2]) < CPU_S:
                conn.execute("SELECT count(*) FROM generate_series(1, 300000)")
            _after(started + RESOURCES_EVERY_S)
            sampler.sample()  # a backend of the run it had not seen: the list is read again
            took_s = time.monotonic() - before
            listed = {p.pid for p in sampler.server.tree.descendants() or ()}
            _after(time.monotonic() + 1.0)
            summary = sampler.stop()
    finally:
        sampler.close()
    assert backend.pid in listed
    assert _cpu_s_in_first_reading(summary, took_s, "server_cpu_pct") >= 0.9 * CPU_S, \
        summary.timeline
