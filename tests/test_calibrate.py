"""poolbench's pgbench figure is what pgbench gives when run by hand: poolbench runs pgbench
with the command line and script a person would type (plus only the per-transaction log),
and its figures are the very numbers that pgbench printed.

Whether a run of pgbench by hand lands near poolbench's run of it is a question of the
machine's speed from second to second, measured in bench/calibration_by_hand.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import recording_pgbench

from poolbench.check.calibrate import (
    count_log_latencies,
    create_rows,
    run_pgbench,
    script_rate,
    scripts,
)
from poolbench.db.admin import AdminSession
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import RunTable, delete_own_rows, ensure_table, new_run_tag
from poolbench.measure.metrics import BucketCounts, bucket_index

# A transparent stand-in for pgbench: it runs the real one with the same arguments and
# environment, passes its output and exit code on, and keeps what it saw for the test
# (the arguments, the script, the output; whether a password came through the
# environment, never the password itself).
RECORDING_PGBENCH = """\
import os, shutil, subprocess, sys
from pathlib import Path

keep = Path({keep!r})
args = sys.argv[1:]
(keep / "argv").write_text("\\n".join(args))
shutil.copy(args[args.index("-f") + 1], keep / "script.sql")
(keep / "env").write_text("PGPASSWORD set" if os.environ.get("PGPASSWORD") else "")
proc = subprocess.run([{real!r}, *args], capture_output=True, text=True)
(keep / "stdout").write_text(proc.stdout)
(keep / "stderr").write_text(proc.stderr)
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
sys.exit(proc.returncode)
"""

LOG_FLAGS = ("-l", "--log-prefix=", "--sampling-rate=")  # the per-transaction log: latencies


def _printed(pattern: str, output: str) -> str:
    found = re.search(pattern, output, re.MULTILINE)
    assert found is not None, (pattern, output)
    return found.group(1)


@pytest.mark.parametrize("connect_each", [False, True])
def test_calibration_runs_pgbench_as_typed_by_hand_and_keeps_its_figures(
        connect_each: bool, tmp_path: Path, target: ConnectionTarget, table: str) -> None:
    recorder, keep = recording_pgbench(tmp_path, RECORDING_PGBENCH)
    admin = AdminSession(target)
    workload = RunTable(table, new_run_tag())
    try:
        admin.call(lambda c: ensure_table(c, table))
        first, last = create_rows(admin, workload, 1000)
        script = scripts(workload, first, last)["read"]
        figure = run_pgbench(recorder, target, script, "read", clients=1, seconds=1,
                             connect_each=connect_each)
    finally:
        admin.call(lambda c: delete_own_rows(c, table, workload.prefix))
        admin.close()
    assert figure is not None
    argv = (keep / "argv").read_text().splitlines()

    # What a person types (-d is pgbench's --debug: the database is the positional
    # argument), with the script poolbench wrote for it; the password in the environment.
    mode = "simple -C" if connect_each else "prepared"
    by_hand = [*shlex.split(f"-n -f SCRIPT -c 1 -j 1 -T 1 -M {mode} -h {target.get('host')} "
                            f"-p {target.get('port')} -U {target.get('user')}"), target.dbname]
    typed = [a for a in argv if not a.startswith(LOG_FLAGS)]
    typed[typed.index("-f") + 1] = "SCRIPT"
    assert typed == by_hand, argv
    assert "-d" not in argv and "--debug" not in argv
    assert (keep / "script.sql").read_text() == script
    if target.password:
        assert target.password not in " ".join(argv)
        assert (keep / "env").read_text() == "PGPASSWORD set"
    assert len((keep / "stderr").read_text()) < 1000  # no --debug trace on stderr

    # poolbench's figures are the numbers pgbench printed, not a re-run or a recount.
    out = (keep / "stdout").read_text()
    assert figure.tps == float(_printed(r"^tps = ([\d.]+) ", out))
    assert figure.transactions == int(_printed(
        r"^number of transactions actually processed: (\d+)", out))
    assert figure.connection_ms == float(_printed(
        r"^(?:average|initial) connection time = ([\d.]+) ms", out))
    assert figure.connect_each == connect_each and figure.clients == 1


def test_under_rate_each_crud_script_runs_paced_per_operation(
        tmp_path: Path, target: ConnectionTarget, table: str) -> None:
    """--rate R paces each CRUD phase at R operations per second: pgbench gets -R R for the
    read and update scripts, R/2 for insert+delete (one run: a create and a delete)."""
    assert [script_rate(name, 300) for name in ("read", "update", "insert+delete")] == \
        [300, 300, 150]
    assert script_rate("read", None) is None
    recorder, keep = recording_pgbench(tmp_path, RECORDING_PGBENCH)
    admin = AdminSession(target)
    workload = RunTable(table, new_run_tag())
    try:
        admin.call(lambda c: ensure_table(c, table))
        first, last = create_rows(admin, workload, 1000)
        figure = run_pgbench(recorder, target, scripts(workload, first, last)["read"], "read",
                             clients=1, seconds=1, connect_each=False,
                             rate=script_rate("insert+delete", 300))
    finally:
        admin.call(lambda c: delete_own_rows(c, table, workload.prefix))
        admin.close()
    assert figure is not None and figure.rate == 150
    argv = (keep / "argv").read_text().splitlines()
    assert argv[argv.index("-R") + 1] == "150"


def test_pgbench_log_lines_without_a_latency_are_left_out_of_it() -> None:
    """pgbench's per-transaction log writes ``failed`` (a transaction that ended in an error,
    pgbench 15+) or ``skipped`` (--latency-limit) where the time goes; like pgbench's own
    latency figures, those have none, and the rest are counted as they are."""
    log = ["0 1 1500 0 1700000000 100",
           "0 2 failed 0 1700000000 200 0",
           "1 1 250000 0 1700000000 300 17",
           "1 2 skipped 0 1700000000 400 900",
           "1 3 0 0 1700000000 500"]
    counts = BucketCounts()
    assert count_log_latencies(log, counts) == 2
    expected = BucketCounts()
    for us in (1500, 250000, 1):
        expected[bucket_index(us)] += 1
    assert counts == expected


def test_pgbench_is_waited_for_without_polling_and_ended_by_stop_or_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_quietly: a process that ends is "done"; one still running when the stop flag is
    set, or when the deadline passes, is killed and said "stopped" or "late". Nothing polls
    meanwhile: the process is waited for with no timeout, and the stop flag is waited on
    once, never looked at in a loop."""
    import subprocess
    import sys
    import threading

    from poolbench.check.calibrate import wait_quietly

    class Watched(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, float | None]] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.calls.append(("wait", timeout))
            return super().wait(timeout)

        def is_set(self) -> bool:
            self.calls.append(("is_set", None))
            return super().is_set()

    timeouts: list[float | None] = []
    real_wait = subprocess.Popen.wait
    monkeypatch.setattr(subprocess.Popen, "wait", lambda self, timeout=None: (
        timeouts.append(timeout), real_wait(self, timeout))[1])

    def started(seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"],
                                text=True)

    assert wait_quietly(started(0), None, 600) == "done"
    stop = Watched()
    stop.set()
    stopped = started(600)
    assert wait_quietly(stopped, stop, 600) == "stopped" and stopped.returncode < 0
    late = started(600)
    assert wait_quietly(late, Watched(), 0) == "late" and late.returncode < 0
    assert stop.calls == [("wait", 600)]  # once, by the watcher
    assert timeouts == [None, None, None]  # blocking waits, no poll with a timeout
