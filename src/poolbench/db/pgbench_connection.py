"""How poolbench points pgbench at a database: its connection flags and environment.

One place for every pgbench poolbench runs (calibration, the script baseline, ``poolbench
init``). The password never goes on the command line, where ``ps`` shows it to every user
of the machine: it goes through the environment (``PGPASSWORD``), as does every other
connection setting but host, port and user, which are pgbench's flags as a person types
them. The database is the positional argument (pgbench's ``-d`` is ``--debug``, not psql's
``--dbname``) and comes last.
"""

from __future__ import annotations

import os

from poolbench.db.target import ConnectionTarget

PGBENCH_APPLICATION_NAME = "poolbench-pgbench"
FLAGS = (("-h", "host"), ("-p", "port"), ("-U", "user"))
# libpq's environment variable for each other connection parameter poolbench passes on
ENVIRONMENT = {"password": "PGPASSWORD", "passfile": "PGPASSFILE", "sslmode": "PGSSLMODE",
               "options": "PGOPTIONS", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
               "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT",
               "hostaddr": "PGHOSTADDR", "target_session_attrs": "PGTARGETSESSIONATTRS"}


def connection_flags(target: ConnectionTarget) -> list[str]:
    """``-h``, ``-p`` and ``-U`` as the target has them (to go before the database)."""
    flags: list[str] = []
    for flag, key in FLAGS:
        if target.get(key):
            flags += [flag, str(target.get(key))]
    return flags


def connection_env(target: ConnectionTarget) -> dict[str, str]:
    """The process environment with the target's password and other settings (``options``:
    read-only sessions, a statement timeout) for libpq, and pgbench's application name."""
    env = {**os.environ, "PGAPPNAME": PGBENCH_APPLICATION_NAME}
    for key, var in ENVIRONMENT.items():
        if target.get(key):
            env[var] = str(target.get(key))
    return env
