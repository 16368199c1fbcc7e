"""Shared by the benchmark scripts: the machine's facts, and a report that is printed and
kept in ``bench/results/NAME.txt`` (with date, machine, versions and commit), so every
figure the docs quote (docs/performance.md and others) can be traced to the run that produced it."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from poolbench.db import binaries
from poolbench.environment import package_versions

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
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
