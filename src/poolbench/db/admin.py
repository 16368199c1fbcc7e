"""The run's own admin connection: connect with clear errors, check capacity, read facts.

Used for setup, the end-of-run sweep and verification, never for measured work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from poolbench.db.target import ADMIN_APPLICATION_NAME, ConnectionTarget, redact
from poolbench.errors import CapacityError, ConnectError

CONNECT_TIMEOUT_S = "10"
RECONNECT_FOR_S = 60.0  # how long the admin session keeps retrying after the server drops it
RECONNECT_PAUSE_S = 0.25

T = TypeVar("T")


def connect_admin(target: ConnectionTarget) -> psycopg.Connection:
    """An autocommit psycopg connection, or ConnectError naming cause and fix."""
    if "statement_timeout" in target.server_settings():
        # the user's timeout is for the workload: poolbench's own queries (server facts,
        # snapshots, the data check) are not cancelled by it
        target = target.with_settings(statement_timeout="0")
    try:
        return psycopg.connect(target.with_params(
            connect_timeout=target.get("connect_timeout") or CONNECT_TIMEOUT_S,
            application_name=ADMIN_APPLICATION_NAME,
        ).conninfo(), autocommit=True)
    except psycopg.Error as exc:
        raise ConnectError(describe_connect_error(exc, target)) from None


class AdminSession:
    """The run's own connection, reconnected when the server drops it.

    Only idempotent work goes through :meth:`call` (snapshots, counts, the sweep
    by run tag), so running it again on a fresh connection after a backend was
    terminated or the server restarted is safe. ``statements`` counts what this
    session sent, so the server cross-check can subtract the admin's own traffic.
    """

    def __init__(self, target: ConnectionTarget, *, reconnect_for_s: float = RECONNECT_FOR_S):
        self.target = target
        self.reconnect_for_s = reconnect_for_s
        self.reconnects = 0
        self.statements = 0
        self._conn: psycopg.Connection | None = connect_admin(target)

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect_admin(self.target)
            self.reconnects += 1
        return self._conn

    def call(self, work: Callable[[psycopg.Connection], T], *, statements: int = 1) -> T:
        """Run ``work(conn)``; if the connection is lost, retry on a fresh one for a while."""
        deadline = time.monotonic() + self.reconnect_for_s
        while True:
            try:
                result = work(self.conn)
                self.statements += statements
                return result
            except (psycopg.OperationalError, ConnectError):
                if self._conn is not None and not self._conn.closed:
                    raise  # the connection is fine: a real error, not a lost server
                if time.monotonic() > deadline:
                    raise
                self._conn = None
                time.sleep(RECONNECT_PAUSE_S)  # the server is restarting; ask again shortly

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def describe_connect_error(exc: BaseException, target: ConnectionTarget) -> str:
    """One line: what failed, where (masked), and what to do about it."""
    text = redact(str(exc), *target.secrets())
    where = target.masked()
    src = target.source
    if "does not exist" in text and "database" in text:
        return (f"database {target.dbname!r} does not exist on {where}; create it "
                f"(createdb {target.dbname}) or fix the database name ({src})")
    if "password authentication failed" in text or "no password supplied" in text:
        return (f"authentication failed for user {target.get('user', '')!r} on {where}; "
                f"check the password ({src})")
    if "role" in text and "does not exist" in text:
        return f"role {target.get('user', '')!r} does not exist on {where}; fix the user ({src})"
    if "Connection refused" in text or "No such file or directory" in text:
        return (f"connection refused by {where}; is PostgreSQL running and listening there? "
                f"Fix host/port ({src}), or give no database settings to use the embedded server")
    if "timeout" in text.lower():
        return f"timed out connecting to {where}; check host/port and firewalls ({src})"
    if "does not support SSL" in text:
        return (f"the server at {where} does not accept TLS (ssl is off there), but "
                f"sslmode={target.get('sslmode')} asks for it (--tls or {src}): turn ssl on "
                "on the server, or run without --tls and sslmode")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"cannot connect to {where}: {first} ({src})"


def server_facts(conn: psycopg.Connection) -> dict[str, object]:
    """Server version and the settings that shape a connection benchmark."""
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int, "
        "coalesce(current_setting('reserved_connections', true), '0')::int, "
        "current_setting('shared_buffers'), current_setting('synchronous_commit'), "
        "current_setting('fsync'), current_setting('password_encryption'), "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").fetchone()
    keys = ("server_version", "max_connections", "superuser_reserved_connections",
            "reserved_connections", "shared_buffers", "synchronous_commit", "fsync",
            "password_encryption", "is_superuser")
    return dict(zip(keys, row))


def connections_in_use(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE backend_type = 'client backend'").fetchone()[0])


def check_capacity(conn: psycopg.Connection, needs: dict[str, int], workers: int, *,
                   pool_max: int | None = None) -> None:
    """Refuse before the run if a strategy would hold more connections than are free.

    ``needs`` maps strategy name to the connections it can hold at once; the
    admin connection is already counted among those in use. ``pool_max`` (when a
    pooled strategy runs) may not exceed what the server allows at all: a pool
    that could grow past ``max_connections`` is a misconfiguration even when
    this run's workers would not fill it.
    """
    facts = server_facts(conn)
    max_conn = int(facts["max_connections"])
    reserved = 0 if facts["is_superuser"] else (int(facts["superuser_reserved_connections"])
                                                + int(facts["reserved_connections"]))
    if pool_max is not None and pool_max > max_conn - reserved:
        raise CapacityError(
            f"--pool-max {pool_max} is above what the server allows (max_connections="
            f"{max_conn}, {reserved} reserved); lower --pool-max to at most {max_conn - reserved}")
    in_use = connections_in_use(conn)
    free = max_conn - reserved - in_use
    for name, needed in needs.items():
        if needed > free:
            # a PgBouncer route holds its pool of --pooler-size, whatever the workers
            option, fix = ((f"--pooler-size {needed}", "--pooler-size")
                           if "@pgbouncer:" in name
                           else (f"-w/--workers {workers}", "--workers/--pool-max"))
            raise CapacityError(
                f"{option}: {name} needs {needed} connections but the server "
                f"allows max_connections={max_conn} ({reserved} reserved, {in_use} in use, "
                f"{free} free); lower {fix} or raise max_connections")
