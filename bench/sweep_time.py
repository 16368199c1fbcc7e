"""How long the default 6-point pool-size sweep of one strategy takes with its intervals
(6 rounds of 1-s trials, each point's run warmed up for 1 s), server start included
(target: <= 2 minutes). Runs the real command.
Run: python bench/sweep_time.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from _common import Report

COMMAND = ["sweep", "--strategies", "psycopg:pool", "--pool-sizes", "1,2,4,8,16,32",
           "--workers", "64"]


def main() -> None:
    report = Report("sweep_time")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "poolbench", *COMMAND], cwd=tmp,
                              capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "2000"})  # a line per finding, whole
        seconds = time.perf_counter() - t0
    recommended = [line for line in proc.stdout.splitlines()
                   if line.startswith(("Recommended", "  no interval"))]
    report.line(f"poolbench {' '.join(COMMAND)}: exit {proc.returncode}, {seconds:.0f} s "
                "including the embedded server's start (target <= 120 s)")
    for line in recommended:
        report.line(f"  {line}")
    report.save()


if __name__ == "__main__":
    main()
