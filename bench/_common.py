"""Shared by the benchmark scripts: one embedded server per script, the machine's facts."""

from __future__ import annotations

import os
import platform

from poolbench.environment import package_versions


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"pgserver {package_versions().get('pgserver', '?')}")
