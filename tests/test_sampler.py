"""The resource sampler counts processes that start after it: the client's new children
(--processes workers, cluster nodes) and the server's new backends, in the per-second series,
not only once they have ended.

The sampler's own regular readings are kept out of the way (an interval of an hour) and the
test takes each reading itself, so what is checked is what the sampler decided (which processes
it reads) and CPU a process is known to have spent, never how busy a loaded machine let it be.

The sampler runs in a process of its own: it reads the client's processes, not its own, ends
when it is closed or when its client dies, and a sampler killed mid-run is "not measured"
in a run that completes."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import psutil
import psycopg
from conftest import clean_env, has_ended

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.events import RunEvents
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
        listed = sampler.sample().client  # the child is new since the last reading, alive
        took_s = time.monotonic() - before
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
    assert sampler.server is not None and sampler.server.postmaster is not None
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
            # A backend of the run it had not seen: the list is read again.
            listed = sampler.sample().server
            took_s = time.monotonic() - before
            _after(time.monotonic() + 1.0)
            summary = sampler.stop()
    finally:
        sampler.close()
    assert backend.pid in listed
    assert _cpu_s_in_first_reading(summary, took_s, "server_cpu_pct") >= 0.9 * CPU_S, \
        summary.timeline


def _secret_free(process: psutil.Process, target: ConnectionTarget) -> bool:
    """Nothing of the target's password on the process's command line or in its environment."""
    shown = " ".join([*process.cmdline(), *process.environ().values()])
    return not target.password or target.password not in shown


def test_the_sampler_reads_the_client_from_a_process_of_its_own(
        target: ConnectionTarget) -> None:
    """Its process is the client's child, told the password through its pipe only; the
    client's CPU is counted (CPU spent here, between start and stop), its own process is
    not among the client's, and it is gone once closed."""
    sampler = Sampler(target, ("nobody",), NO_OWN_READINGS_S)
    try:
        process = psutil.Process(sampler.pid)
        assert sampler.pid != os.getpid() and process.ppid() == os.getpid()
        assert _secret_free(process, target)
        sampler.start()
        spent = time.process_time()
        while time.process_time() - spent < CPU_S:  # the client's CPU, in this process
            sum(range(10_000))
        listed = sampler.sample()
        summary = sampler.stop()
    finally:
        sampler.close()
    assert sampler.pid not in listed.client
    assert summary is not None and summary.client_cpu_s >= 0.9 * CPU_S, summary
    assert not psutil.pid_exists(sampler.pid)  # ended, and reaped by close()


CLIENT = """
import sys
from poolbench.db.target import ConnectionTarget
from poolbench.measure.sampler import Sampler
sampler = Sampler(ConnectionTarget.from_dsn(sys.stdin.readline().strip(), source="test"),
                  ("nobody",), 3600.0)
sampler.start()
print(sampler.pid, flush=True)
sys.stdin.readline()  # until killed
"""


def test_the_samplers_process_ends_when_its_client_dies(target: ConnectionTarget) -> None:
    client = subprocess.Popen([sys.executable, "-c", CLIENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=clean_env())
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write(target.conninfo() + "\n")
        client.stdin.flush()
        sampler = psutil.Process(int(client.stdout.readline()))
        assert sampler.ppid() == client.pid and _secret_free(sampler, target)
        client.kill()  # no clean-up of its own: SIGKILL
        client.wait()
        assert has_ended(sampler), "the sampler's process outlived its client"
    finally:
        client.kill()
        client.wait()


def test_a_sampler_killed_mid_run_is_not_measured_and_the_run_completes(
        target: ConnectionTarget, table: str) -> None:
    events, killed = RunEvents(), []

    def kill_the_sampler(**_: object) -> None:
        for child in psutil.Process().children():
            if not killed and "sampler_process" in " ".join(child.cmdline()):
                child.kill()
                killed.append(child.pid)

    events.phase_started.add_listener(kill_the_sampler)
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=20, workers=2,
                            pool_min=2, pool_max=2, warmup=0, trials=1, table=table,
                            out_dir=None), events=events)
    assert len(killed) == 1
    assert not results.partial and results.verification is not None \
        and results.verification.ok
    assert "killed by SIGKILL" in results.not_measured["server activity sampler"]
    strategy = results.strategies[0]
    assert strategy.activity is None
    # Its statements before the kill are known still, and subtracted.
    assert strategy.server is not None and strategy.server.ok, strategy.server
