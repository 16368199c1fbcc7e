"""How long a 6-point pool-size sweep of one strategy at 5 s per point takes, server start
included (target: <= 2 minutes). Runs the real command.
Run: python bench/sweep_time.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from _common import Report

COMMAND = ["sweep", "--strategies", "psycopg:pool", "--pool-sizes", "1,2,4,8,16,32",
           "--workers", "64", "--duration", "5"]


def main() -> None:
    report = Report("sweep_time")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "poolbench", *COMMAND], cwd=tmp,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    recommended = [line for line in proc.stdout.splitlines() if line.startswith("Recommended")]
    report.line(f"poolbench {' '.join(COMMAND)}: exit {proc.returncode}, {seconds:.0f} s "
                "including the embedded server's start (target <= 120 s)")
    for line in recommended:
        report.line(f"  {line}")
    report.save()


if __name__ == "__main__":
    main()
