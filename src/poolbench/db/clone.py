"""``--clone``: a copy of the user's database made for one run, and dropped after it.

``CREATE DATABASE poolbench_clone_<run tag> TEMPLATE <the target's database>``, marked
with a comment naming the run (``COMMENT ON DATABASE``), so that ``poolbench cleanup
--run-tag`` can prove a leftover database is one poolbench made before it drops it: a
database is dropped by cleanup only when both its name and its comment say so.

PostgreSQL copies a database only while no other session is connected to it, the
copying session included: every statement here runs from a *maintenance* connection to
another database of the server (``postgres``, else ``template1``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from poolbench.db.admin import connect_admin, describe_connect_error
from poolbench.db.target import ConnectionTarget, reason
from poolbench.errors import (
    CloneBlocked,
    CloneLeftBehind,
    ConnectError,
    PermissionProblem,
    PoolbenchError,
)

PREFIX = "poolbench_clone_"
MAINTENANCE_DATABASES = ("postgres", "template1")
FORCE_DROP_VERSION = 130000  # DROP DATABASE ... WITH (FORCE): PostgreSQL 13


def clone_name(run_tag: str) -> str:
    """The clone's database name for a run tag (``poolbench_clone_pb1a2b3c4d``)."""
    return PREFIX + run_tag


def _comment(run_tag: str, template: str) -> str:
    return (f"poolbench --clone for run {run_tag} (a copy of {template}); poolbench drops "
            "it when the run ends, or: poolbench cleanup --run-tag " + run_tag)


def _is_ours(comment: str | None, run_tag: str) -> bool:
    return bool(comment) and str(comment).startswith(f"poolbench --clone for run {run_tag} ")


@dataclass(frozen=True)
class Clone:
    """The run's copy of the target's database: what results record (``describe``), and
    the target the run connects to instead of the user's."""

    name: str
    template: str
    run_tag: str
    size_bytes: int  # pg_database_size of the copy, just made
    create_s: float  # how long CREATE DATABASE took
    target: ConnectionTarget

    def describe(self) -> dict[str, object]:
        """JSON-ready, for ``environment.clone`` in results."""
        return {"name": self.name, "template": self.template, "run_tag": self.run_tag,
                "size_bytes": self.size_bytes, "create_s": round(self.create_s, 3)}


def _maintenance(target: ConnectionTarget, *, avoid: str) -> psycopg.Connection:
    """An autocommit connection to a database of the server other than ``avoid``: the
    first of ``postgres``, ``template1`` (then the target's own) that lets us in."""
    candidates = [db for db in dict.fromkeys((*MAINTENANCE_DATABASES, target.dbname))
                  if db != avoid]
    failures: list[ConnectError] = []
    for db in candidates:
        try:
            return connect_admin(target.with_params(dbname=db))
        except ConnectError as exc:
            text = str(exc)
            if "does not exist" not in text and "permission denied for database" not in text:
                raise  # the server, not the database: refused, authentication, timeout
            failures.append(exc)
    raise ConnectError(
        f"--clone copies {avoid!r} from a session on another database of the server, and "
        f"none of {', '.join(candidates)} let us in ({failures[0]}); grant CONNECT on "
        "postgres, or run without --clone")


def create_clone(target: ConnectionTarget, run_tag: str) -> Clone:
    """``CREATE DATABASE poolbench_clone_<run_tag> TEMPLATE <target's database>``, marked
    as poolbench's; its size and how long it took.

    Raises :class:`CloneBlocked` (other sessions use the template; the message says how
    many), :class:`PermissionProblem` (no CREATEDB, or the template is not the role's to
    copy), :class:`ConnectError` (no such database); nothing is left behind by any of them.
    """
    template, name = target.dbname, clone_name(run_tag)
    with _maintenance(target, avoid=template) as conn:
        started = time.perf_counter()
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        except pg_errors.ObjectInUse:
            raise CloneBlocked(_blocked_message(conn, template)) from None
        except pg_errors.InsufficientPrivilege as exc:
            raise PermissionProblem(_privilege_message(conn, template, exc, target)) from None
        except pg_errors.InvalidCatalogName as exc:
            raise ConnectError(describe_connect_error(exc, target)) from None
        except pg_errors.DuplicateDatabase:
            raise CloneLeftBehind(
                f"--clone: database {name!r} already exists (left by run {run_tag}?); drop "
                f"it with: poolbench cleanup --run-tag {run_tag}") from None
        create_s = time.perf_counter() - started
        try:  # made: from here on, whatever happens (Ctrl-C included), it goes again
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(_comment(run_tag, template))))
            size = int(conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0])
        except BaseException:
            _drop(conn, name)
            raise
    return Clone(name=name, template=template, run_tag=run_tag, size_bytes=size,
                 create_s=create_s, target=target.with_params(dbname=name))


def _blocked_message(conn: psycopg.Connection, template: str) -> str:
    # Autovacuum workers do not block a copy: PostgreSQL stops them for it.
    others = int(conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
        "AND backend_type IS DISTINCT FROM 'autovacuum worker'", (template,)).fetchone()[0])
    who = (f"{others} other session{'s are' if others != 1 else ' is'} connected to it"
           if others else "other sessions were connected to it (none are now: run again)")
    return (f"--clone: PostgreSQL copies database {template!r} only while no other session "
            f"uses it, and {who} (pg_stat_activity); close them (applications, psql, "
            "poolers' server connections) or wait for them, or run without --clone; nothing "
            "was created")


def _privilege_message(conn: psycopg.Connection, template: str, exc: Exception,
                       target: ConnectionTarget) -> str:
    user = conn.execute("SELECT current_user").fetchone()[0]
    what = reason(exc, target)
    if "copy" in what:  # PostgreSQL: "permission denied to copy database"
        fix = (f"only {template!r}'s owner or a superuser may copy it: connect as its owner, "
               f"or ALTER DATABASE {template} IS_TEMPLATE true")
    else:
        fix = f"ALTER ROLE {user} CREATEDB, or connect as a role that has it"
    return (f"--clone: role {user!r} may not create a copy of database {template!r} "
            f"({what}); {fix}; or run without --clone")


def _drop(conn: psycopg.Connection, name: str) -> None:
    """DROP DATABASE, forcing out any session still on it (every one is the run's own: a
    PgBouncer's server connection, a worker process's pool) where the server can."""
    force = " WITH (FORCE)" if conn.info.server_version >= FORCE_DROP_VERSION else ""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}" + force).format(sql.Identifier(name)))


def drop_clone(clone: Clone) -> None:
    """Drop the run's clone (made by :func:`create_clone` in this process)."""
    with _maintenance(clone.target, avoid=clone.name) as conn:
        _drop(conn, clone.name)


class ClonedDatabase:
    """``with ClonedDatabase(target, run_tag) as clone``: the clone for the block, dropped
    when it ends, however it ends (an error, KeyboardInterrupt). A clone that cannot be
    dropped is reported: :class:`CloneLeftBehind`, or, when the block raised a poolbench
    error, in that error's message."""

    def __init__(self, target: ConnectionTarget, run_tag: str) -> None:
        self.target, self.run_tag = target, run_tag
        self.clone: Clone | None = None

    def __enter__(self) -> Clone:
        self.clone = create_clone(self.target, self.run_tag)
        return self.clone

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.clone is not None
        try:
            drop_clone(self.clone)
        except Exception as failure:
            left = (f"the clone database {self.clone.name!r} was not dropped "
                    f"({reason(failure, self.target)}); drop it with: poolbench cleanup "
                    f"--run-tag {self.run_tag} (same database settings as the run)")
            if exc is None:
                raise CloneLeftBehind(left) from failure
            if isinstance(exc, PoolbenchError) and len(exc.args) == 1:
                exc.args = (f"{exc.args[0]}; and {left}",)


def drop_leftover_clone(target: ConnectionTarget,
                        run_tag: str) -> Literal["dropped", "absent", "not ours"]:
    """``poolbench cleanup``: drop run ``run_tag``'s clone if it is still there, and only if
    its comment proves poolbench made it for that run ("not ours": left as it is)."""
    name = clone_name(run_tag)
    with _maintenance(target, avoid=name) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                           "WHERE datname = %s", (name,)).fetchone()
        if row is None:
            return "absent"
        if not _is_ours(row[0], run_tag):
            return "not ours"
        _drop(conn, name)
    return "dropped"
