"""Server cross-check: what PostgreSQL itself counted while a strategy ran.

The server publishes a backend's counters (``pg_stat_database``,
``pg_stat_user_tables``) at most once a second, and an idle backend's only
after about 10 seconds, so a snapshot taken right after a phase would miss
pooled connections' last second of work. poolbench therefore compares per
strategy: it snapshots before the strategy opens and again after its
connections have closed (a backend flushes its counters as it exits, before
it leaves ``pg_stat_activity``). Counters are attributed to phases by kind:
rows inserted are creates, updated are updates, deleted are deletes.

Behind a pooler the user runs (``--via pooler``) the server's connections are the
pooler's and stay open, so there is no closing to wait for: the second snapshot is taken
once the server's counters have reached what poolbench counted (rows, transactions;
:class:`Expected`), which an idle backend publishes on its own within about 10 s on
PostgreSQL 15+ (``IDLE_STATS_UPDATE_TIMEOUT``: ``pgstat_report_stat(true)`` once idle
``PGSTAT_IDLE_INTERVAL``). Counters only grow, so reaching ours is enough for an exact
count to match; what the pool or the pooler adds of its own may still be unpublished, so
transactions per operation is approximate there.

The admin connection's own statements also count as transactions. Each
snapshot first calls ``pg_stat_force_next_flush()`` (PostgreSQL 15+), so every
admin statement is published before the next read, and the exact number of
them between two snapshots is subtracted. On older servers the transaction
count is shown but not checked. ``pg_stat_statements`` calls are added when the
extension is installed in the database.

A run of scripts is checked by transactions instead of rows: each complete script run
commits and rolls back what its statements say (``Script.committed_per_run``), and the
server's counts, less poolbench's own statements and the one transaction every new
session runs as it starts, must be the same. They are compared exactly only where
nothing else can add to them: autovacuum off (its workers' visits count, vacuuming or
not), no other client on the database, no failed run (its statements before the
failure counted), no pooler, and a strategy that sends nothing of its own in its ``-M``
mode; elsewhere they are shown beside ours, with the reason. Each SQL command's calls in
``pg_stat_statements`` are checked against the executions poolbench counted, where the
extension is installed and readable (:mod:`poolbench.check.statement_calls`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg

from poolbench.check.calibrate import PGBENCH_APPLICATION_NAME
from poolbench.check.statement_calls import (
    ScriptStatements,
    StatementCalls,
    read_calls,
    statement_checks,
)
from poolbench.db.admin import ADMIN_APPLICATION_NAME, AdminSession
from poolbench.db.workload import quote_ident
from poolbench.measure.sampler import SAMPLER_APPLICATION_NAME
from poolbench.results import Check, CrossCheck
from poolbench.workloads.base import ScriptCounts

QUIET_TIMEOUT_S = 15.0  # longest wait for closed backends to leave pg_stat_activity
QUIET_POLL_S = 0.01
COUNTED_POLL_S = 0.1  # the server publishes a backend's counters at most once a second

# How the wait before a strategy's second snapshot ended: its backends had closed, or were
# still connected when QUIET_TIMEOUT_S ran out; behind a pooler the user runs, the
# server's counters had reached poolbench's counts, or had not (or could not be known)
# when it ran out.
Settled = Literal["closed", "still connected", "counted", "not counted"]


@dataclass(frozen=True)
class ServerCounters:
    """One snapshot of the server's counters for the run's database and table."""

    xact_commit: int
    xact_rollback: int
    sessions: int | None  # PostgreSQL 14+
    tup_inserted: int
    tup_updated: int
    tup_deleted: int
    taken_at: datetime
    table_inserted: int
    table_updated: int
    table_deleted: int
    maintenance_runs: int  # autovacuum + autoanalyze runs on every table of the database
    statement_calls: dict[str, int] | None  # pg_stat_statements calls by verb, if installed
    admin_statements: int  # statements the admin session had sent before this read
    admin_sessions: int  # connections the admin session had opened again after losing one
    # Client backends on this database that are not poolbench's (another application's)
    other_clients: frozenset[int] = frozenset()
    # Scripts: pg_stat_statements calls of each of their statements (None: not read)
    script_calls: StatementCalls | None = None


class ServerProbe:
    """Takes snapshots through the admin session; knows what this server can report."""

    def __init__(self, admin: AdminSession, table: str, application_name: str) -> None:
        self.admin = admin
        self.table = table
        self.application_name = application_name  # what the benchmark's connections are named
        # Sessions of these names are poolbench's own: the benchmark's, the admin's, pgbench's
        self.own_names = (application_name, ADMIN_APPLICATION_NAME, PGBENCH_APPLICATION_NAME,
                          SAMPLER_APPLICATION_NAME)
        facts = admin.call(lambda c: c.execute(
            "SELECT current_setting('server_version_num')::int, "
            "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'), "
            "current_setting('track_counts')::bool, "
            "current_setting('autovacuum')::bool").fetchone())
        version, self.has_statements, self.track_counts, self.autovacuum = facts
        self.can_flush = version >= 150000
        self.has_sessions = version >= 140000

    def wait_quiet(self, since: ServerCounters, *, any_name: bool = False) -> bool:
        """Block until the strategy's backends are gone (their counters are then published).

        Only backends that started after ``since`` are waited for: another
        session that merely shares the application name is not ours. Behind a pooler
        poolbench started and stopped (``any_name``) the server's backends are the
        pooler's, named as the pooler pleases: every client backend started since then is
        waited for, but poolbench's own admin, sampler and pgbench sessions. (A pooler the
        user runs keeps its connections open: see :meth:`wait_counted`.)
        """
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        if any_name:
            query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND backend_type = 'client backend' AND backend_start >= %s AND "
                     "pid <> pg_backend_pid() AND application_name <> ALL(%s)")
            args: tuple[object, ...] = (since.taken_at, list(self.own_names[1:]))
        else:
            query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND application_name = %s AND backend_start >= %s AND "
                     "pid <> pg_backend_pid()")
            args = (self.application_name, since.taken_at)
        while time.monotonic() < deadline:
            left = self.admin.call(lambda c: c.execute(query, args, prepare=False).fetchone()[0])
            if left == 0:
                return True
            time.sleep(QUIET_POLL_S)
        return False

    def wait_counted(self, since: ServerCounters, expected: Expected | None) -> Settled:
        """Block until the server has published, since ``since``, at least ``expected``
        ("counted"), or QUIET_TIMEOUT_S has run out ("not counted"; at once with
        ``expected`` None: what the server should count is not known, the whole timeout
        is waited for, as for backends that never close)."""
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        while True:
            if expected is not None and expected.reached(since, self.snapshot()):
                return "counted"
            if time.monotonic() >= deadline:
                return "not counted"
            time.sleep(COUNTED_POLL_S)

    def snapshot(self, statements: ScriptStatements | None = None) -> ServerCounters:
        """The counters now, and the calls of a plan's ``statements``. Its queries, and
        the quiet wait's, are never prepared: psycopg prepares a query run more than 5
        times with a request of its own, a transaction the count of the admin's
        statements would not include."""
        if self.can_flush:
            # Reading a catalog gives the admin backend table stats to flush: without any,
            # PostgreSQL (15-17) skips the forced flush, and the transaction counts waiting
            # with it (the flush call's own among them) stay unpublished.
            self.admin.call(lambda c: c.execute(
                "SELECT pg_stat_force_next_flush() FROM pg_database "
                "WHERE datname = current_database()", prepare=False))
        before_read = self.admin.statements
        sessions = "sessions" if self.has_sessions else "NULL::bigint"
        row = self.admin.call(lambda c: c.execute(
            f"SELECT d.xact_commit, d.xact_rollback, d.{sessions}, d.tup_inserted, "
            "d.tup_updated, d.tup_deleted, clock_timestamp(), coalesce(t.n_tup_ins, 0), "
            "coalesce(t.n_tup_upd, 0), "
            "coalesce(t.n_tup_del, 0), (SELECT coalesce(sum(autovacuum_count + "
            "autoanalyze_count), 0) FROM pg_stat_all_tables), "
            "(SELECT coalesce(array_agg(a.pid), '{}') FROM pg_stat_activity a "
            " WHERE a.datname = current_database() AND a.backend_type = 'client backend' "
            " AND a.pid <> pg_backend_pid() AND a.application_name <> ALL(%s)) "
            "FROM pg_stat_database d LEFT JOIN pg_stat_user_tables t ON t.relid = "
            "to_regclass(%s) WHERE d.datname = current_database()",
            (list(self.own_names), quote_ident(self.table)), prepare=False).fetchone())
        *counters, others = row
        calls = self._statement_calls() if self.has_statements else None
        script_calls = read_calls(self.admin.call, statements) if statements else None
        return ServerCounters(*(v if v is None or isinstance(v, datetime) else int(v)
                                for v in counters),
                              statement_calls=calls, admin_statements=before_read,
                              admin_sessions=self.admin.reconnects,
                              other_clients=frozenset(others), script_calls=script_calls)

    def _statement_calls(self) -> dict[str, int] | None:
        """pg_stat_statements calls on the run's table, by verb (no flush lag: counted at once)."""
        try:
            rows = self.admin.call(lambda c: c.execute(
                "SELECT upper(split_part(ltrim(query), ' ', 1)), sum(calls)::bigint "
                "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE "
                "datname = current_database()) AND query LIKE %s GROUP BY 1",
                (f"%{quote_ident(self.table)}%",), prepare=False).fetchall())
        except psycopg.Error:
            return None  # not readable by this role: say nothing rather than guess
        return {verb: int(n) for verb, n in rows}


@dataclass(frozen=True)
class Expected:
    """The least the server must have published over a strategy before it is compared:
    the rows poolbench's operations made (inserted, updated, deleted), its transactions
    (commits and rollbacks, poolbench's own statements aside) and, for scripts, their
    rollbacks. Counters only grow: once reached, an exact check can only match."""

    rows: tuple[int, int, int]
    transactions: int
    rolled_back: int = 0
    own_statements: int = 0  # the activity sampler's, besides the admin session's

    def reached(self, before: ServerCounters, now: ServerCounters) -> bool:
        admin = now.admin_statements - before.admin_statements + self.own_statements
        rows = (now.table_inserted - before.table_inserted,
                now.table_updated - before.table_updated,
                now.table_deleted - before.table_deleted)
        transactions = (now.xact_commit - before.xact_commit
                        + now.xact_rollback - before.xact_rollback - admin)
        return (all(n >= want for n, want in zip(rows, self.rows, strict=True))
                and transactions >= self.transactions
                and now.xact_rollback - before.xact_rollback >= self.rolled_back)


def expected(ops: dict[str, int], *, attempts: int, scripts: ScriptCounts | None,
             sampler_statements: int = 0) -> Expected | None:
    """What the server must have published for a strategy's ``ops`` (successful operations
    per phase), or None when that is not known: a failed operation may have committed on
    the server before its connection was lost, so the server may count more than poolbench."""
    if attempts != sum(ops.values()):
        return None
    if scripts is not None:
        return Expected(rows=(0, 0, 0), transactions=scripts.committed + scripts.rolled_back,
                        rolled_back=scripts.rolled_back, own_statements=sampler_statements)
    # Every successful operation is at least one transaction (a statement in autocommit,
    # or BEGIN ... COMMIT/ROLLBACK around it).
    return Expected(rows=(ops.get("create", 0), ops.get("update", 0), ops.get("delete", 0)),
                    transactions=sum(ops.values()), own_statements=sampler_statements)


def compare(before: ServerCounters, after: ServerCounters, *, ops: dict[str, int],
            attempts: int, connections_opened: int, settled: Settled,
            probe: ServerProbe, through_pooler: bool = False,
            sampler_statements: int = 0, sampler_sessions: int = 0,
            scripts: ScriptCounts | None = None,
            statements: ScriptStatements | None = None,
            executions: dict[tuple[str, int], int] | None = None) -> CrossCheck:
    """Deltas between two snapshots against poolbench's counts for the same strategy.

    ``ops`` are successful operations per phase (warm-up included: the server saw
    them too); ``attempts`` counts failed operations as well. ``scripts``: a run of
    scripts, checked by transactions rather than by the CRUD table's rows; with
    ``statements`` (identified before ``before``), each statement's calls against
    ``executions``, its successful executions per (script kind, command index).
    """
    notes: list[str] = []
    checks = [] if scripts is not None else [
        Check("rows inserted", ops.get("create", 0), after.table_inserted - before.table_inserted),
        Check("rows updated", ops.get("update", 0), after.table_updated - before.table_updated),
        Check("rows deleted", ops.get("delete", 0), after.table_deleted - before.table_deleted)]
    admin_sessions = after.admin_sessions - before.admin_sessions + sampler_sessions
    if after.sessions is not None and before.sessions is not None:
        # pg_stat_database counts the whole database: exact only while no other
        # client came or went (pg_stat_activity before and after).
        shared = before.other_clients != after.other_clients
        checks.append(Check("sessions opened", connections_opened,
                            after.sessions - before.sessions - admin_sessions,
                            exact=not shared and not through_pooler))
        if through_pooler:
            notes.append("through a pooler, the server's sessions are the pooler's connections, "
                         "not the strategy's: shown, not checked (see the pooler's counts)")
        elif shared:
            notes.append("other clients connected to or left this database during the strategy: "
                         "sessions are counted database-wide, so they are shown, not checked")
    else:
        notes.append("PostgreSQL < 14 has no pg_stat_database.sessions: connections not checked")
    failed = attempts - sum(ops.values())
    if failed and scripts is None and any(c.server > c.ours for c in checks):
        notes.append(f"{failed} operations failed; some of them committed on the server before "
                     "their connection was lost (the reply never arrived), so the server counts "
                     "more rows than poolbench counts successes")
    # Our own transactions: the admin session's, and the activity sampler's.
    admin = after.admin_statements - before.admin_statements + sampler_statements
    transactions = (after.xact_commit - before.xact_commit
                    + after.xact_rollback - before.xact_rollback - admin)
    exact = probe.can_flush and settled == "closed" and probe.track_counts
    if not probe.can_flush:
        notes.append("PostgreSQL < 15 cannot publish the admin connection's counters on "
                     "demand: transactions per operation are approximate")
    if settled == "still connected":
        notes.append("benchmark backends were still connected after the strategy closed: "
                     "the server may not have published all their counters yet")
    elif settled == "counted":
        notes.append("the pooler you run keeps its server connections open: the server's "
                     "counts were read once they had reached poolbench's (rows, transactions), "
                     "not after those connections closed; what the pool or the pooler adds of "
                     "its own may not all be published yet, so transactions per operation "
                     "are approximate")
    elif settled == "not counted":
        notes.append(f"the pooler you run keeps its server connections open, and within "
                     f"{QUIET_TIMEOUT_S:g} s the server's counts had not reached poolbench's "
                     "(or could not be known: operations failed); an idle connection "
                     "publishes its counters within about 10 s on PostgreSQL 15+, on older "
                     "servers only when it runs again or closes: the server may not have "
                     "published all their counters yet")
    if not probe.track_counts:
        notes.append("track_counts is off on this server: it counted nothing")
    maintenance = after.maintenance_runs - before.maintenance_runs
    if maintenance:
        notes.append(f"autovacuum/autoanalyze ran {maintenance} times meanwhile; their "
                     "transactions are in the server's count")
    if not probe.has_statements and scripts is None:  # scripts: say so per statement
        notes.append("pg_stat_statements is not installed in this database: statement calls "
                     "not checked")
    if scripts is not None:
        checks += _script_checks(before, after, scripts, admin=admin,
                                 sessions_started=connections_opened + admin_sessions,
                                 failed=failed, exact=exact and not maintenance,
                                 through_pooler=through_pooler,
                                 autovacuum=probe.autovacuum, notes=notes)
        why = []
        if before.other_clients or after.other_clients:
            why.append("other clients are connected to this database, and their identical "
                       "statements count too")
        if failed:
            why.append(f"{failed} operations failed, and a statement may have completed on "
                       "the server with its reply lost")
        utility = []
        if scripts.prepared:
            utility.append("they are prepared, and pg_stat_statements counts a prepared "
                           "utility statement at its first execution on each connection only")
        elif scripts.extra is not None:  # e.g. SQLAlchemy's start-up BEGIN ... COMMIT
            utility.append(scripts.extra)
        checks += statement_checks(statements, before.script_calls, after.script_calls,
                                   executions or {}, why_inexact=why, why_utility=utility,
                                   notes=notes)
    calls = None
    if scripts is None and before.statement_calls is not None \
            and after.statement_calls is not None:
        calls = {verb: n - before.statement_calls.get(verb, 0)
                 for verb, n in after.statement_calls.items()
                 if n - before.statement_calls.get(verb, 0)}
        for verb, phase in (("INSERT", "create"), ("UPDATE", "update"), ("DELETE", "delete")):
            checks.append(Check(f"{verb} calls", ops.get(phase, 0), calls.get(verb, 0)))
    database = {name: getattr(after, name) - getattr(before, name)
                for name in ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated",
                             "tup_deleted")}
    return CrossCheck(checks=tuple(checks), transactions=transactions, operations=attempts,
                      transactions_per_operation=round(transactions / attempts, 3)
                      if attempts else 0.0,
                      database_deltas=database, statement_calls=calls, exact=exact,
                      notes=tuple(notes))


def _script_checks(before: ServerCounters, after: ServerCounters, scripts: ScriptCounts, *,
                   admin: int, sessions_started: int, failed: int, exact: bool,
                   through_pooler: bool, autovacuum: bool, notes: list[str]) -> list[Check]:
    """Transactions committed and rolled back by the scripts' complete runs, against the
    server's: its commits less poolbench's own statements and one per session started."""
    alone = not before.other_clients and not after.other_clients
    why = []
    if autovacuum:
        # An autovacuum worker visits each database every autovacuum_naptime and runs a
        # few transactions there even when it vacuums nothing: no counter tells them apart.
        why.append("autovacuum is on, and a worker's visit to the database (one every "
                   "autovacuum_naptime, vacuuming or not) adds transactions of its own")
    if not alone:
        why.append("other clients are connected to this database and pg_stat_database "
                    "counts their transactions too")
    if through_pooler:
        why.append("through a pooler, the server's sessions, and what they run as they start "
                   "and are reset, are the pooler's")
    if failed:
        why.append(f"{failed} operations failed, and a script run that failed part-way "
                   "committed or rolled back its statements before the failure")
    if scripts.extra is not None:
        why.append(scripts.extra)
    checked = exact and not why
    if why:
        notes.append("script transactions are shown, not checked: " + "; ".join(why))
    committed = after.xact_commit - before.xact_commit - admin - sessions_started
    return [Check("script transactions committed", scripts.committed, committed,
                  exact=checked),
            Check("script transactions rolled back", scripts.rolled_back,
                  after.xact_rollback - before.xact_rollback, exact=checked)]
