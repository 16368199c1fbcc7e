"""How soon a run exits after SIGINT or SIGTERM mid-phase: workers stop, the run's rows are
deleted, partial results written. The tests check the exit code, the partial results and
the rows (tests/test_interrupt.py); the time it takes is the machine's, measured here.

Target: exit within 5 s of the signal.
Run: python bench/interrupt_time.py [rounds per signal, default 5]
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from _common import Report

from poolbench.db.server import EmbeddedServer

TABLE = "users"


def one(target, sig: signal.Signals, cwd: str) -> float:
    """Seconds from the signal to the exit of a run caught while it creates rows."""
    errors = Path(cwd) / "stderr"
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "poolbench", "run", "--dsn", target.conninfo(), "--table",
             TABLE, "-n", "100000", "-w", "8", "--pool-max", "8", "--strategies",
             "psycopg:pool", "--no-chart"], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        with psycopg.connect(target.with_params(application_name="bench-admin").conninfo(),
                             autocommit=True) as conn:
            while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                   "application_name = 'poolbench' AND state = 'active'"
                                   ).fetchone()[0]:
                if proc.poll() is not None:
                    raise RuntimeError(f"the run ended first: {errors.read_text()[-500:]}")
                time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=300)
        return time.monotonic() - sent
    finally:
        proc.kill()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    report = Report("interrupt_time")
    report.line(f"psycopg:pool, 8 workers, 100,000 rows, signal once its backends work; "
                f"{rounds} rounds per signal")
    with EmbeddedServer(max_connections=40) as server, \
            tempfile.TemporaryDirectory(prefix="bench-interrupt-") as cwd:
        for sig in (signal.SIGINT, signal.SIGTERM):
            times = sorted(one(server.target, sig, cwd) for _ in range(rounds))
            report.line(f"  {sig.name}: median {times[len(times) // 2]:.2f} s, max "
                        f"{times[-1]:.2f} s (target: within 5 s, "
                        f"{'met' if times[-1] < 5 else 'NOT met'})")
    report.save()


if __name__ == "__main__":
    main()
