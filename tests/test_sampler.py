"""The resource sampler counts processes that start after it: the client's new children
(--processes workers, cluster nodes) and the server's new backends, in the per-second series,
not only once they have ended."""

from __future__ import annotations

import multiprocessing
import threading
import time

import psycopg

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.measure.sampler import Sampler, ServerProcesses

BURN_S = 3.2  # the measured window: readings at about 1 s, 2 s and 3 s lie inside it


def _burn(ready, stop) -> None:  # a child process: one core busy until told to stop
    ready.set()
    while not stop.is_set():
        sum(range(10_000))


def test_a_child_started_after_the_sampler_counts_in_its_second(
        target: ConnectionTarget) -> None:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    sampler = Sampler(target, ("nobody",), 0.1)
    try:
        sampler.start()
        child = context.Process(target=_burn, args=(ready, stop))
        child.start()
        assert ready.wait(30)
        time.sleep(BURN_S)  # the window measured, not a wait for anything
        stop.set()
        child.join()
        summary = sampler.stop()
    finally:
        sampler.close()
    assert summary is not None
    # The second ending at about 2 s lies wholly inside the child's burn (it was ready
    # within a second): this process only waited, so its CPU there is the child's.
    by_second = {s.second: s for s in summary.timeline}
    assert by_second[2].client_cpu_pct >= 40, summary.timeline


def test_backends_opened_after_the_sampler_count_in_their_second(
        server: EmbeddedServer, target: ConnectionTarget) -> None:
    app = "poolbench-sampled"
    stop = threading.Event()
    busy = threading.Barrier(3)

    def work() -> None:
        with psycopg.connect(target.with_params(application_name=app).conninfo(),
                             autocommit=True) as conn:
            busy.wait()
            while not stop.is_set():
                conn.execute("SELECT count(*) FROM generate_series(1, 300000)")

    sampler = Sampler(target, (app,), 0.1,
                      server=ServerProcesses.find(data_dir=str(server.data_dir)))
    try:
        sampler.start()
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        busy.wait(30)
        time.sleep(BURN_S)  # the window measured
        stop.set()
        for t in threads:
            t.join()
        summary = sampler.stop()
    finally:
        sampler.close()
    assert summary is not None and summary.active_max >= 1
    by_second = {s.second: s for s in summary.timeline}
    cpu = by_second[2].server_cpu_pct
    assert cpu is not None and cpu >= 40, summary.timeline
