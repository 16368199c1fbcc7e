"""A script's statements as ``pg_stat_statements`` counts them: the calls the server saw of
each SQL command, against the successful executions poolbench counted (pgbench ``-r``).

Before a strategy runs, each SQL command of its scripts is identified as the server will
see it in that strategy's ``-M`` mode: its ``queryid``, from ``EXPLAIN (VERBOSE,
GENERIC_PLAN)`` of the text with ``$n`` parameters (``-M extended|prepared``; the server
infers their types, as it does for the values poolbench sends as text or after a
prepare), or of one run's text with the values in it (``-M simple``); a utility statement
(``BEGIN``, ``COMMIT``, DDL), which EXPLAIN refuses, by its text. Commands the server
cannot tell apart (the same statement in two scripts) are one group, compared as one.
The calls are then read before and after the strategy, like every other server counter;
``pg_stat_statements_reset()`` is never called (that would change the user's server).

Calls count successful executions only, top-level ones, of every session on the
database. So a group's calls equal poolbench's count exactly only when: no other client
is connected to the database (its identical statements count too), no script run failed
(a statement may complete on the server and its reply be lost), no entry was evicted
meanwhile (``pg_stat_statements.max``: ``pg_stat_statements_info.dealloc`` unchanged), and
``pg_stat_statements.track`` is ``top`` or ``all`` (``track_utility`` on for utility
statements). A utility statement's calls are exact only where it is not prepared (a
prepared ``BEGIN`` is counted at its first execution on each connection only: measured on
PostgreSQL 17) and the strategy sends none of its own (SQLAlchemy's start-up queries run in
a transaction). A ``-M simple`` value whose literal changes type (an integer beyond 32 bits
is a bigint) makes another entry, which the one run's text does not identify.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from poolbench.results import STATEMENT_CALLS, Check
from poolbench.workloads.script import (
    ParamStyle,
    ScriptError,
    ScriptRunner,
    SqlCommand,
    SqlStep,
    TxRole,
)
from poolbench.workloads.script.plan import ScriptPlan

_QUERY_ID = re.compile(r"Query Identifier: (-?\d+)")
# pg_stat_statements keeps a statement's text without its closing semicolon
_TEXT_SQL = r"lower(regexp_replace(btrim(query), '\s*;\s*$', ''))"

Call = Callable[[Callable[[psycopg.Connection], Any]], Any]  # AdminSession.call


@dataclass(frozen=True)
class StatementGroup:
    """SQL commands the server counts under the same entries: ``members`` are (script
    kind, command index); matched by ``queryids``, or by ``text`` (lower-cased, without
    its semicolon) for a utility statement."""

    name: str  # the commands' file:line, joined with " + "
    members: tuple[tuple[str, int], ...]
    queryids: tuple[int, ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class ScriptStatements:
    """A plan's statements as identified on the server; ``why_not``: why none is measured;
    ``unidentified``: commands left out, each with why."""

    groups: tuple[StatementGroup, ...] = ()
    unidentified: tuple[str, ...] = ()
    why_not: str | None = None
    toplevel: bool = True  # pg_stat_statements has the toplevel column (1.9+)
    has_info: bool = True  # pg_stat_statements_info (1.9+): evictions counted


@dataclass(frozen=True)
class StatementCalls:
    """One snapshot: calls per group name, and the entries evicted so far (None: unknown)."""

    calls: dict[str, int]
    dealloc: int | None


def identify(call: Call, plan: ScriptPlan, *, installed: bool) -> ScriptStatements:
    """Each SQL command of ``plan``'s scripts as the server will count it; where nothing
    can be measured, why (never an error)."""
    if not installed:
        return ScriptStatements(why_not="pg_stat_statements is not installed in this database")
    try:
        version, track, utility, toplevel, info = call(lambda c: c.execute(
            "SELECT current_setting('server_version_num')::int, "
            "current_setting('pg_stat_statements.track', true), "
            "current_setting('pg_stat_statements.track_utility', true), "
            "EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
            "to_regclass('pg_stat_statements') AND attname = 'toplevel'), "
            "to_regclass('pg_stat_statements_info') IS NOT NULL", prepare=False).fetchone())
        call(lambda c: c.execute("SELECT 1 FROM pg_stat_statements LIMIT 1", prepare=False))
    except psycopg.Error as exc:
        return ScriptStatements(why_not=f"pg_stat_statements is not readable "
                                        f"({_first_line(exc)})")
    if version < 160000:
        return ScriptStatements(why_not="PostgreSQL < 16 cannot EXPLAIN a statement with "
                                        "parameters (GENERIC_PLAN) to find its queryid")
    if track in (None, "none"):
        return ScriptStatements(why_not="pg_stat_statements.track is none or unknown: "
                                        "the server counts no statement")
    texts = _texts(plan)
    found: dict[tuple[tuple[int, ...], str | None], list[tuple[str, int, str]]] = {}
    unidentified = []
    for kind, command, sql in texts:
        where = f"{kind.removeprefix('script:')}:{command.line}"
        key: tuple[tuple[int, ...], str | None]
        if command.tx in (TxRole.BEGIN, TxRole.COMMIT, TxRole.ROLLBACK) or not _plannable(sql):
            if utility == "off":
                unidentified.append(f"{where}: a utility statement, and "
                                    "pg_stat_statements.track_utility is off")
                continue
            key = ((), re.sub(r"\s*;\s*$", "", sql.strip()).lower())
        else:
            queryid = _queryid(call, sql)
            if isinstance(queryid, str):
                unidentified.append(f"{where}: {queryid}")
                continue
            key = ((queryid,), None)
        found.setdefault(key, []).append((kind, command.index, where))
    groups = tuple(StatementGroup(" + ".join(w for _, _, w in members),
                                  tuple((k, i) for k, i, _ in members), ids, text)
                   for (ids, text), members in found.items())
    return ScriptStatements(groups, tuple(unidentified), toplevel=bool(toplevel),
                            has_info=bool(info))


def _texts(plan: ScriptPlan) -> list[tuple[str, SqlCommand, str]]:
    """(kind, command, the text EXPLAIN is given) for every SQL command of the plan: with
    ``$n`` parameters, or (``-M simple``) as client 0's first run writes it."""
    found = []
    simple = plan.mode.style == ParamStyle.SIMPLE.value
    for kind, script in zip(plan.kinds, plan.parse()):
        rendered: dict[int, str] = {}
        if simple:
            runner = ScriptRunner(script, client_id=0, scale=plan.scale, seed=plan.seed,
                                  style=ParamStyle.SIMPLE, default_seed=plan.default_seed)
            try:
                rendered = {step.index: step.sql for step in runner.run()
                            if isinstance(step, SqlStep)}
            except ScriptError:
                rendered = {}
        for command in script.statements:
            sql = rendered.get(command.index) if simple else command.render(ParamStyle.DOLLAR)
            if sql is not None:
                found.append((kind, command, sql))
    return found


_PLANNABLE = re.compile(r"^\s*(\(\s*)*(SELECT|INSERT|UPDATE|DELETE|MERGE|WITH|VALUES|TABLE)\b",
                        re.IGNORECASE)


def _plannable(sql: str) -> bool:
    """Whether EXPLAIN takes the statement (a utility statement it refuses)."""
    return bool(_PLANNABLE.match(re.sub(r"^(\s*(--[^\n]*\n|/\*.*?\*/))*", "", sql,
                                        flags=re.DOTALL)))


def _queryid(call: Call, sql: str) -> int | str:
    """The statement's queryid, from EXPLAIN (nothing is executed); or why not."""
    try:
        rows = call(lambda c: c.execute(
            f"EXPLAIN (VERBOSE, COSTS OFF, GENERIC_PLAN) {sql}", prepare=False).fetchall())
    except psycopg.Error as exc:
        return f"EXPLAIN refused it ({_first_line(exc)})"
    for (line,) in rows:
        if m := _QUERY_ID.search(line):
            return int(m.group(1))
    return "EXPLAIN shows no query identifier (compute_query_id is off)"


def read_calls(call: Call, statements: ScriptStatements) -> StatementCalls | None:
    """The calls of each group now (None: not readable)."""
    if statements.why_not is not None or not statements.groups:
        return None
    ids = [i for g in statements.groups for i in g.queryids]
    texts = [g.text for g in statements.groups if g.text is not None]
    toplevel = " AND toplevel" if statements.toplevel else ""
    try:
        rows = call(lambda c: c.execute(
            f"SELECT queryid, {_TEXT_SQL}, calls FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            f"{toplevel} AND (queryid = ANY(%s) OR {_TEXT_SQL} = ANY(%s))",
            (ids, texts), prepare=False).fetchall())
        dealloc = call(lambda c: c.execute("SELECT dealloc FROM pg_stat_statements_info",
                                           prepare=False).fetchone()[0]) \
            if statements.has_info else None
    except psycopg.Error:
        return None
    calls = {g.name: sum(int(n) for queryid, text, n in rows if queryid in g.queryids
                         or (g.text is not None and text == g.text))
             for g in statements.groups}
    return StatementCalls(calls, None if dealloc is None else int(dealloc))


def statement_checks(statements: ScriptStatements | None, before: StatementCalls | None,
                     after: StatementCalls | None, ours: dict[tuple[str, int], int], *,
                     why_inexact: Sequence[str], why_utility: Sequence[str],
                     notes: list[str]) -> list[Check]:
    """One check per group: the calls the server counted against poolbench's successful
    executions (warm-up included); ``why_utility``: what else makes a utility statement's
    calls inexact. Where nothing can be measured, a note saying why."""
    if statements is None:
        return []
    if statements.why_not is not None:
        notes.append(f"statement calls not measured: {statements.why_not}")
        return []
    for missing in statements.unidentified:
        notes.append(f"statement calls not measured for {missing}")
    if not statements.groups:
        return []
    if before is None or after is None:
        notes.append("statement calls not measured: pg_stat_statements could not be read")
        return []
    why = list(why_inexact)
    if before.dealloc is None or after.dealloc is None:
        why.append("pg_stat_statements < 1.9 does not count evicted entries")
    elif after.dealloc != before.dealloc:
        why.append(f"pg_stat_statements evicted entries {after.dealloc - before.dealloc} "
                   "times meanwhile (pg_stat_statements.max)")
    if why:
        notes.append("statement calls are shown, not checked: " + "; ".join(why))
    utility = any(g.text is not None for g in statements.groups)
    if why_utility and utility and not why:
        notes.append("calls of utility statements (BEGIN, COMMIT...) are shown, not "
                     "checked: " + "; ".join(why_utility))
    return [Check(f"{STATEMENT_CALLS}{g.name}", sum(ours.get(m, 0) for m in g.members),
                  after.calls.get(g.name, 0) - before.calls.get(g.name, 0),
                  exact=not why and not (g.text is not None and why_utility))
            for g in statements.groups]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
