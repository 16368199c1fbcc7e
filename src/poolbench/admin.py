"""The run's own admin connection: connect with clear errors, check capacity, read facts.

Used for setup, the end-of-run sweep and verification, never for measured work.
"""

from __future__ import annotations

import psycopg

from poolbench.errors import CapacityError, ConnectError
from poolbench.target import ConnectionTarget, redact

CONNECT_TIMEOUT_S = "10"


def connect_admin(target: ConnectionTarget) -> psycopg.Connection:
    """An autocommit psycopg connection, or ConnectError naming cause and fix."""
    try:
        return psycopg.connect(target.with_params(
            connect_timeout=target.get("connect_timeout") or CONNECT_TIMEOUT_S).conninfo(),
            autocommit=True)
    except psycopg.Error as exc:
        raise ConnectError(describe_connect_error(exc, target)) from None


def describe_connect_error(exc: BaseException, target: ConnectionTarget) -> str:
    """One line: what failed, where (masked), and what to do about it."""
    text = redact(str(exc), target.password)
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


def check_capacity(conn: psycopg.Connection, needs: dict[str, int], workers: int) -> None:
    """Refuse before the run if a strategy would hold more connections than are free.

    ``needs`` maps strategy name to the connections it can hold at once; the
    admin connection is already counted among those in use.
    """
    facts = server_facts(conn)
    max_conn = int(facts["max_connections"])
    reserved = 0 if facts["is_superuser"] else (int(facts["superuser_reserved_connections"])
                                                + int(facts["reserved_connections"]))
    in_use = connections_in_use(conn)
    free = max_conn - reserved - in_use
    for name, needed in needs.items():
        if needed > free:
            raise CapacityError(
                f"-w/--workers {workers}: {name} needs {needed} connections but the server "
                f"allows max_connections={max_conn} ({reserved} reserved, {in_use} in use, "
                f"{free} free); lower --workers/--pool-max or raise max_connections")
