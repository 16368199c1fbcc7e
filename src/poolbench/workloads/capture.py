"""``poolbench capture``: the workload a server has been running, as pgbench scripts.

:func:`capture` reads ``pg_stat_statements`` in a read-only session
(``default_transaction_read_only=on``, set as the connection opens), takes the top N
statements by calls or by total time, and writes one pgbench script per statement, a
``workload.txt`` with the ``-f file@weight`` arguments and a ``capture.txt`` summary.
Nothing is written unless the whole capture succeeds (the files are made in a temporary
directory renamed to ``out_dir`` at the end).

Parameters. pg_stat_statements keeps each statement with its constants as ``$1``, ``$2``...
Each ``$n`` becomes a pgbench variable ``:p<n>`` set by ``\\set`` from the values of the
column it is compared with. Finding that column is a small, honest parser, not SQL's
grammar: ``col op $n`` and ``$n op col`` (op one of ``= <> != < <= > >=``; ``UPDATE ...
SET col = $n`` is this form), ``col [NOT] BETWEEN $n AND $m``, ``col [NOT] IN ($n, ...)``
and ``INSERT INTO t [(cols)] VALUES ($n, ...)``; ``col`` may be qualified by a table or
alias of the statement. Anything else (``LIMIT $n``, ``lower(col) = $n``, ``LIKE $n``,
``= ANY($n)``...) is reported as not inferred: the file says so and the statement is left
out of ``workload.txt``. The column's values come from ``pg_stats`` (most common values and
histogram bounds, as of the column's last ANALYZE) or, without statistics, from a
``TABLESAMPLE SYSTEM ... REPEATABLE`` sample of about :data:`SAMPLE_PAGES` pages:

- integers: ``\\set p1 random(min, max)``;
- numeric and floating point: ``random(min*1000, max*1000) / 1000.0`` (a double);
- dates: days since 1970-01-01, the statement reads ``(DATE '1970-01-01' + (:p1)::int)``;
- timestamps: seconds since 1970-01-01 through ``to_timestamp`` (no time zone names: the
  embedded server may know none);
- anything else: up to :data:`MAX_LIST_VALUES` real values the statement indexes,
  ``(ARRAY['a', 'b', ...]::type[])[(:p1)::int]`` with ``\\set p1 random(1, k)``; each value
  is drawn with equal chance (not as often as it occurs), and values pgbench could not
  carry (a backslash, a line break, ``:name`` which pgbench reads as a variable even in
  a literal, over :data:`MAX_VALUE_CHARS` characters) are left out.

Check. For each statement, the captured statement's generic plan (``PREPARE`` and
``EXPLAIN EXECUTE`` under ``plan_cache_mode = force_generic_plan``: the plan its ``$n``
get without values) is compared with the plan of the script's statement with a real value
in each variable: same top node and same scan per table, or not, reported per statement.

Transactions. pg_stat_statements keeps no transactions: each captured statement runs as
its own transaction; ``BEGIN``/``COMMIT``/``ROLLBACK``... and session commands (``SET``,
``SHOW``, ``DISCARD``...) are left out with a note, as are reads of pg_stat_statements
itself and capture's own statements (they carry :data:`CAPTURE_MARK`).

Writes. A statement that writes (INSERT, UPDATE, DELETE, MERGE, DDL...), locks rows
(``FOR UPDATE``/``FOR SHARE``) or calls ``nextval`` is marked ``writes`` (in its header and
the model): such a script fails in a read-only session, and runs only on a clone
(``--clone``) or with ``--allow-writes``. EXPLAIN without ANALYZE runs it nowhere.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

from poolbench.db.admin import CONNECT_TIMEOUT_S, describe_connect_error
from poolbench.db.target import ConnectionTarget, reason
from poolbench.errors import ConfigError, ConnectError, PoolbenchError

DEFAULT_TOP = 20
BY_CHOICES = ("calls", "time")
SAMPLE_INTERVAL_S = 0.25  # --sample: one look at pg_stat_activity every quarter second
SAMPLE_PAGES = 1000  # a TABLESAMPLE reads about this many pages of a table without stats
MAX_LIST_VALUES = 100
MAX_VALUE_CHARS = 100
DECIMAL_SCALE = 1000  # numeric/float variables move in steps of 1/1000
CAPTURE_MARK = "/* poolbench capture */"  # in every statement capture sends: never captured
CAPTURE_APPLICATION_NAME = "poolbench-capture"
WORKLOAD_FILE = "workload.txt"
SUMMARY_FILE = "capture.txt"
ONE_TRANSACTION_EACH = ("pg_stat_statements keeps no transactions: each statement runs as "
                        "its own transaction")


class StatStatementsUnavailable(ConfigError):
    """The database has no usable pg_stat_statements; the message says how to enable it."""


class CaptureError(PoolbenchError):
    """The server refused what capture asked (e.g. a privilege is missing)."""


# --- the result model -----------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One ``$n`` of a captured statement and the pgbench variable that replaces it.

    ``low``/``high`` bound the variable's values (for dates: days since 1970-01-01, for
    timestamps: seconds since 1970-01-01 UTC, for lists: the index 1..k); ``low_text`` and
    ``high_text`` are the same bounds as the column's values. ``problem`` says why the
    parameter could not be inferred (then every other field but the names is None/empty).
    """

    number: int
    variable: str
    column: str | None = None  # schema.table.column
    type_name: str | None = None
    kind: str | None = None  # "integer", "decimal", "date", "timestamp[tz]" or "list"
    low: int | float | None = None
    high: int | float | None = None
    low_text: str | None = None
    high_text: str | None = None
    values: tuple[str, ...] = ()  # kind "list": the values the statement indexes
    source: str | None = None  # where the values came from
    set_line: str | None = None  # the script's \set line
    example: str | None = None  # a real value of the variable (the EXPLAIN check uses it)
    problem: str | None = None

    @property
    def inferred(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class PlanCheck:
    """The captured statement's generic plan against the script's plan with real values.

    ``same`` is None when the check could not be made (``note`` says why)."""

    captured: str | None
    scripted: str | None
    same: bool | None
    note: str


@dataclass(frozen=True)
class CapturedStatement:
    """One statement of pg_stat_statements and the script written for it.

    Times are milliseconds of execution (pg_stat_statements' ``*_exec_time``); entries
    with the same text (e.g. one per user) are merged, their standard deviations pooled.
    ``left_out`` says why the script is not in ``workload.txt`` (None when it is)."""

    file_name: str
    query: str
    sql: str
    queryids: tuple[int, ...]
    calls: int
    total_ms: float
    mean_ms: float
    stddev_ms: float
    rows_per_call: float
    share_pct: float  # of the captured statements' calls
    weight: int
    writes: str | None
    parameters: tuple[Parameter, ...]
    plan: PlanCheck
    left_out: str | None
    text: str  # the script file

    @property
    def included(self) -> bool:
        return self.left_out is None


@dataclass(frozen=True)
class Concurrency:
    """Active backends of the database (capture's own excluded), one count per look.

    ``median`` and ``p95`` (nearest rank) of the counts; ``suggested_workers`` is the p95,
    at least 1."""

    samples: tuple[int, ...]
    interval_s: float
    median: float
    p95: int

    @property
    def suggested_workers(self) -> int:
        return max(1, self.p95)


@dataclass(frozen=True)
class Capture:
    """What :func:`capture` found and wrote."""

    target: str  # masked
    database: str
    by: str
    top: int
    out_dir: Path
    statements: tuple[CapturedStatement, ...]
    skipped: tuple[str, ...]  # notes on statements not captured, and why
    calls_captured: int  # calls of the captured statements (the weights' 100%)
    calls_in_database: int  # calls of every statement of the database
    concurrency: Concurrency | None = None
    files: tuple[str, ...] = field(default=())  # file names written in out_dir

    def workload_lines(self) -> tuple[str, ...]:
        """The lines of ``workload.txt``: ``-f <out_dir>/<file>@<weight>``, one per script
        in the workload, paths as ``out_dir`` was given."""
        return tuple(f"-f {self.out_dir / s.file_name}@{s.weight}"
                     for s in self.statements if s.included)


# --- the entry point --------------------------------------------------------------------


def capture(target: ConnectionTarget, *, out_dir: Path, top: int = DEFAULT_TOP,
            by: str = "calls", sample_s: float = 0.0,
            sample_interval_s: float = SAMPLE_INTERVAL_S) -> Capture:
    """Capture the top ``top`` statements (by ``calls`` or total ``time``) of ``target``'s
    database into ``out_dir`` (a new or empty directory). With ``sample_s`` > 0, also
    count active backends every ``sample_interval_s`` for ``sample_s`` seconds.

    Raises ConfigError (bad option, ``out_dir`` not empty), StatStatementsUnavailable
    (a ConfigError: how to enable pg_stat_statements), ConnectError, CaptureError; on any
    of them nothing is written."""
    _check_options(top=top, by=by, sample_s=sample_s, sample_interval_s=sample_interval_s)
    _check_out_dir(out_dir)
    with connect_read_only(target) as conn:
        try:
            database = str(conn.execute(
                f"SELECT {CAPTURE_MARK} current_database()").fetchone()[0])
            view = stat_statements_view(conn, target)
            entries, skipped, in_database = _read_entries(conn, view)
            chosen, more = _choose(entries, top=top, by=by)
            if more:
                skipped.append(f"{more[0]} more statements beyond --top {top} "
                               f"({more[1]} calls) were not captured")
            total = sum(e.calls for e in chosen)
            catalog = _Catalog(conn, target)
            width = max(2, len(str(len(chosen))))
            statements = tuple(
                _capture_one(catalog, entry, index=i, of=len(chosen), width=width, total=total)
                for i, entry in enumerate(chosen, 1))
            concurrency = (sample_concurrency(conn, seconds=sample_s,
                                              interval_s=sample_interval_s)
                           if sample_s > 0 else None)
        except psycopg.OperationalError as exc:
            raise ConnectError(f"lost the connection to {target.masked()} during capture: "
                               f"{reason(exc, target)}") from None
        except psycopg.Error as exc:
            raise CaptureError(f"capture failed on {target.masked()}: "
                               f"{reason(exc, target)}") from None
    result = Capture(target=target.masked(), database=database, by=by, top=top,
                     out_dir=out_dir, statements=statements, skipped=tuple(skipped),
                     calls_captured=total, calls_in_database=in_database,
                     concurrency=concurrency,
                     files=(*(s.file_name for s in statements), WORKLOAD_FILE, SUMMARY_FILE))
    files = {s.file_name: s.text for s in statements}
    files[WORKLOAD_FILE] = "".join(line + "\n" for line in result.workload_lines())
    files[SUMMARY_FILE] = "".join(line + "\n" for line in summary_lines(result))
    _write_all(out_dir, files)
    return result


def connect_read_only(target: ConnectionTarget) -> psycopg.Connection:
    """An autocommit session whose transactions are read-only from the moment it opens
    (``default_transaction_read_only=on`` in the startup packet, checked once open)."""
    ro = target.with_settings(default_transaction_read_only="on").with_params(
        connect_timeout=target.get("connect_timeout") or CONNECT_TIMEOUT_S,
        application_name=CAPTURE_APPLICATION_NAME)
    try:
        conn = psycopg.connect(ro.conninfo(), autocommit=True, prepare_threshold=None)
    except psycopg.Error as exc:
        raise ConnectError(describe_connect_error(exc, target)) from None
    try:
        # A pooler in front may drop startup options: then set it in the session.
        setting = "current_setting('default_transaction_read_only')"
        if conn.execute(f"SELECT {CAPTURE_MARK} {setting}").fetchone()[0] != "on":
            conn.execute(f"SET {CAPTURE_MARK} default_transaction_read_only = on")
    except psycopg.Error as exc:
        conn.close()
        raise ConnectError(describe_connect_error(exc, target)) from None
    return conn


def sample_concurrency(conn: psycopg.Connection, *, seconds: float,
                       interval_s: float = SAMPLE_INTERVAL_S) -> Concurrency:
    """Count the database's active client backends (this session excluded) every
    ``interval_s`` for ``seconds``: ``max(1, round(seconds / interval_s))`` looks."""
    looks = max(1, round(seconds / interval_s))
    query = (f"SELECT {CAPTURE_MARK} count(*) FROM pg_stat_activity "
             "WHERE datname = current_database() AND state = 'active' "
             "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
    start = time.monotonic()
    samples: list[int] = []
    for i in range(looks):
        wait = start + i * interval_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the sampling interval itself
        samples.append(int(conn.execute(query).fetchone()[0]))
    ranked = sorted(samples)
    p95 = ranked[math.ceil(0.95 * len(ranked)) - 1]
    return Concurrency(samples=tuple(samples), interval_s=interval_s,
                       median=float(statistics.median(ranked)), p95=p95)


def stat_statements_view(conn: psycopg.Connection, target: ConnectionTarget) -> str:
    """The schema-qualified pg_stat_statements view, or StatStatementsUnavailable saying
    in one line what to do (install contrib, preload, CREATE EXTENSION)."""
    where = f"database {target.dbname!r} on {target.masked()}"
    row = conn.execute(
        f"SELECT {CAPTURE_MARK} (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
        "ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'), "
        "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements')"
    ).fetchone()
    schema, available = row
    preload = "set shared_preload_libraries = 'pg_stat_statements' in postgresql.conf"
    if schema is None:
        if not available:
            raise StatStatementsUnavailable(
                f"pg_stat_statements is not available on the server of {where}: install "
                f"PostgreSQL's contrib modules, {preload}, restart the server, then run "
                "CREATE EXTENSION pg_stat_statements in that database")
        preloaded = _preloaded(conn)
        then = ("run CREATE EXTENSION pg_stat_statements there (it is already preloaded)"
                if preloaded else
                f"{preload} (unless it is already there), restart the server, and run "
                "CREATE EXTENSION pg_stat_statements there")
        raise StatStatementsUnavailable(
            f"pg_stat_statements is not installed in {where}: {then}")
    view = f"{_quote_ident(schema)}.pg_stat_statements"
    try:
        conn.execute(f"SELECT {CAPTURE_MARK} 1 FROM {view} LIMIT 1").fetchall()
    except psycopg.errors.ObjectNotInPrerequisiteState:
        raise StatStatementsUnavailable(
            f"pg_stat_statements is installed in {where} but not loaded: {preload} and "
            "restart the server") from None
    return view


def _preloaded(conn: psycopg.Connection) -> bool | None:
    """Whether pg_stat_statements is in shared_preload_libraries; None when this role may
    not read the setting."""
    try:
        value = conn.execute(
            f"SELECT {CAPTURE_MARK} current_setting('shared_preload_libraries')").fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        return None
    return "pg_stat_statements" in str(value)


def _check_options(*, top: int, by: str, sample_s: float, sample_interval_s: float) -> None:
    if by not in BY_CHOICES:
        raise ConfigError(f"--by {by}: choose one of {', '.join(BY_CHOICES)}")
    if top < 1:
        raise ConfigError(f"--top {top}: capture at least 1 statement")
    if sample_s < 0:
        raise ConfigError(f"--sample {sample_s}: seconds to sample, 0 (no sampling) or more")
    if sample_interval_s <= 0:
        raise ConfigError(f"sample interval {sample_interval_s}: must be above 0 seconds")


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"--out {out_dir}: exists and is not an empty directory; capture "
                          "never overwrites: give a new directory")


def _write_all(out_dir: Path, files: dict[str, str]) -> None:
    """Write every file into a new directory beside ``out_dir``, then rename it into place:
    either all files are there or none."""
    parent = out_dir.parent
    staging = parent / f".{out_dir.name}.capture-{secrets.token_hex(4)}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        _check_out_dir(out_dir)  # again: something may have appeared since the start
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"--out {out_dir}: cannot write there ({exc.strerror or exc}); "
                          "give a directory you can write") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --- reading pg_stat_statements -----------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    query: str
    queryids: tuple[int, ...]
    calls: int
    total_ms: float
    mean_ms: float
    stddev_ms: float
    rows: int


TRANSACTION_CONTROL = frozenset({"begin", "start", "commit", "end", "rollback", "abort",
                                 "savepoint", "release"})
SESSION_COMMANDS = frozenset({"set", "reset", "show", "discard", "deallocate", "listen",
                              "unlisten", "load"})


def _read_entries(conn: psycopg.Connection, view: str) -> tuple[list[_Entry], list[str], int]:
    """This database's top-level statements merged by text, the notes on those left out,
    and the calls of every statement of the database."""
    columns = {r[0] for r in conn.execute(
        f"SELECT {CAPTURE_MARK} attname FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0", (view,))}
    time_col = "exec_time" if "total_exec_time" in columns else "time"  # PostgreSQL < 13
    toplevel = "AND toplevel" if "toplevel" in columns else ""
    rows = conn.execute(
        f"SELECT {CAPTURE_MARK} queryid, query, calls, total_{time_col}, mean_{time_col}, "
        f"stddev_{time_col}, rows FROM {view} "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        f"{toplevel} ORDER BY queryid").fetchall()
    merged: dict[str, list[tuple]] = {}
    hidden = 0
    in_database = 0
    for row in rows:
        query = row[1]
        if query is not None and CAPTURE_MARK in query:
            continue
        in_database += int(row[2])
        if query is None or query == "<insufficient privilege>":
            hidden += int(row[2])
            continue
        merged.setdefault(query.strip(), []).append(row)
    notes: list[str] = []
    if hidden:
        notes.append(f"statements of other users ({hidden} calls) are hidden from this role: "
                     "grant it pg_read_all_stats to capture them")
    entries: list[_Entry] = []
    for query, group in merged.items():
        entry = _merge(query, group)
        first = _first_word(query)
        if first in TRANSACTION_CONTROL:
            notes.append(f"left out {_short(query)!r} ({entry.calls} calls): transaction "
                         f"control; {ONE_TRANSACTION_EACH}")
        elif first in SESSION_COMMANDS:
            notes.append(f"left out {_short(query)!r} ({entry.calls} calls): a session "
                         "command, not work on the data")
        elif "pg_stat_statements" in query.lower():
            notes.append(f"left out {_short(query)!r} ({entry.calls} calls): it reads or "
                         "resets pg_stat_statements (monitoring, not the workload)")
        else:
            entries.append(entry)
    return entries, notes, in_database


def _merge(query: str, group: list[tuple]) -> _Entry:
    calls = sum(int(r[2]) for r in group)
    total = sum(float(r[3]) for r in group)
    mean = total / calls if calls else 0.0
    # pooled: E[x^2] of each entry is stddev^2 + mean^2, weighted by its calls
    second = sum(int(r[2]) * (float(r[5]) ** 2 + float(r[4]) ** 2) for r in group)
    stddev = math.sqrt(max(0.0, second / calls - mean ** 2)) if calls else 0.0
    return _Entry(query=query, queryids=tuple(sorted(int(r[0]) for r in group)), calls=calls,
                  total_ms=total, mean_ms=mean, stddev_ms=stddev,
                  rows=sum(int(r[6]) for r in group))


def _choose(entries: list[_Entry], *, top: int, by: str) -> tuple[list[_Entry], tuple | None]:
    def key(e: _Entry) -> tuple:
        return (-(e.calls if by == "calls" else e.total_ms), e.query)

    ranked = sorted(entries, key=key)
    rest = ranked[top:]
    return ranked[:top], ((len(rest), sum(e.calls for e in rest)) if rest else None)


def _short(query: str, limit: int = 60) -> str:
    flat = " ".join(query.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _first_word(query: str) -> str:
    words = [t for t in tokenize(query) if t.kind != "comment"]
    return words[0].word if words and words[0].kind == "word" else ""


# --- one statement ------------------------------------------------------------------------


def _capture_one(catalog: _Catalog, entry: _Entry, *, index: int, of: int, width: int,
                 total: int) -> CapturedStatement:
    analysis = analyze(entry.query)
    parameters = tuple(catalog.parameter(analysis, n) for n in analysis.numbers)
    problems = [f"${p.number} could not be inferred ({p.problem})"
                for p in parameters if not p.inferred]
    script_sql = render_sql(analysis, {p.number: _expression(p, f":{p.variable}")
                                       for p in parameters})
    problems += [f"the statement holds ':{name}', which pgbench would take for a variable"
                 for name in pgbench_variables(script_sql)
                 if name not in {p.variable for p in parameters}]
    if analysis.statements > 1:
        problems.append("the entry holds more than one statement")
    plan = catalog.plan_check(entry.query, analysis, parameters) if not problems else \
        PlanCheck(None, None, None, "not checked: " + "; ".join(problems))
    if plan.same is None and plan.scripted is None and plan.note.startswith("the script's"):
        problems.append(plan.note)
    share = 100.0 * entry.calls / total if total else 0.0
    verb = _file_part(analysis.verb) or "statement"
    statement = CapturedStatement(
        file_name=f"{index:0{width}d}_{verb}_{analysis.label}.sql",
        query=entry.query, sql=script_sql, queryids=entry.queryids, calls=entry.calls,
        total_ms=entry.total_ms, mean_ms=entry.mean_ms, stddev_ms=entry.stddev_ms,
        rows_per_call=entry.rows / entry.calls if entry.calls else 0.0, share_pct=share,
        weight=max(1, round(share)), writes=analysis.writes, parameters=parameters,
        plan=plan, left_out="; ".join(problems) or None, text="")
    return _with_text(statement, index=index, of=of)


def _with_text(s: CapturedStatement, *, index: int, of: int) -> CapturedStatement:
    """The script file: a header of ``--`` comments, the ``\\set`` lines, the statement."""
    head = [
        f"-- poolbench capture: statement {index} of {of}, pg_stat_statements queryid "
        + ", ".join(str(q) for q in s.queryids),
        f"-- calls: {s.calls} ({s.share_pct:.1f}% of the captured statements' calls"
        + (f", weight @{s.weight})" if s.included else ")"),
        f"-- execution time per call: mean {s.mean_ms:.3f} ms, stddev {s.stddev_ms:.3f} ms; "
        f"rows per call: {s.rows_per_call:.2f}",
        f"-- {ONE_TRANSACTION_EACH}",
    ]
    if s.writes:
        head.append(f"-- writes: {s.writes}; runs only on a clone (--clone) or with "
                    "--allow-writes")
    for p in s.parameters:
        head.append(f"-- ${p.number} -> :{p.variable}: " + _describe_parameter(p))
    head.append(f"-- plan check (EXPLAIN): {_describe_plan(s.plan)}")
    if s.left_out:
        head.append(f"-- NOT IN {WORKLOAD_FILE}: {s.left_out}")
        head += [f"-- to run it: add a line '\\set {p.variable} <expression>' above the "
                 f"statement, and the file to {WORKLOAD_FILE}"
                 for p in s.parameters if not p.inferred]
    sets = [p.set_line for p in s.parameters if p.set_line]
    text = "\n".join([*head, *sets, s.sql + ";"]) + "\n"
    return replace(s, text=text)


def _describe_parameter(p: Parameter) -> str:
    if p.problem:
        return f"not inferred: {p.problem}"
    if p.kind == "list":
        what = f"one of {len(p.values)} values of {p.column} ({p.type_name}), picked uniformly"
    else:
        unit = {"date": " days since 1970-01-01", "timestamp": " seconds since 1970-01-01",
                "timestamptz": " seconds since 1970-01-01 UTC",
                "decimal": " in steps of 0.001"}.get(p.kind or "", "")
        what = (f"{p.column} ({p.type_name}) from {p.low_text} to {p.high_text}"
                + (f" ({p.low}..{p.high}{unit})" if unit else ""))
    return f"{what}; values from {p.source}"


def _describe_plan(plan: PlanCheck) -> str:
    if plan.same is None:
        return plan.note
    if plan.same:
        return f"same plan shape as captured: {plan.scripted}"
    return (f"plan differs: captured (generic) {plan.captured}; script with real values "
            f"{plan.scripted}")


def summary_lines(result: Capture) -> list[str]:
    """``capture.txt``: what was captured, where each statement went and why, in lines a
    person reads (the CLI may print the same)."""
    kept = [s for s in result.statements if s.included]
    lines = [
        f"poolbench capture of database {result.database} at {result.target}: "
        f"top {result.top} statements by {result.by}",
        f"{len(result.statements)} statements captured ({result.calls_captured} of the "
        f"database's {result.calls_in_database} calls), {len(kept)} in {WORKLOAD_FILE}",
        ONE_TRANSACTION_EACH + ".",
    ]
    for s in result.statements:
        where = f"@{s.weight}" if s.included else "left out"
        lines.append(f"  {s.file_name}: {where}, {s.calls} calls ({s.share_pct:.1f}%), "
                     f"mean {s.mean_ms:.3f} ms" + (f", writes ({s.writes})" if s.writes else ""))
        lines.append(f"    plan: {_describe_plan(s.plan)}")
        if s.left_out:
            lines.append(f"    not in {WORKLOAD_FILE}: {s.left_out}")
    writers = [s.file_name for s in kept if s.writes]
    if writers:
        lines.append(f"scripts that write ({', '.join(writers)}) run only with --clone or "
                     "--allow-writes")
    lines += [f"note: {note}" for note in result.skipped]
    c = result.concurrency
    if c is not None:
        lines.append(f"concurrency: {len(c.samples)} looks at pg_stat_activity every "
                     f"{c.interval_s:g} s: active backends median {c.median:g}, p95 {c.p95}; "
                     f"suggested --workers {c.suggested_workers}")
    return lines


# --- the catalog: tables, columns, values, plans -------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    declared: str  # format_type of the column (a domain keeps its name)
    base: str  # format_type of its base type
    base_name: str  # pg_type.typname of the base type


@dataclass(frozen=True)
class _Table:
    oid: int
    schema: str
    name: str
    relkind: str
    columns: tuple[_Column, ...]

    @property
    def qualified(self) -> str:
        return f"{_quote_ident(self.schema)}.{_quote_ident(self.name)}"

    def column(self, name: str) -> _Column | None:
        return next((c for c in self.columns if c.name == name), None)


KINDS = {"int2": "integer", "int4": "integer", "int8": "integer", "numeric": "decimal",
         "float4": "decimal", "float8": "decimal", "date": "date", "timestamp": "timestamp",
         "timestamptz": "timestamptz"}
_RANGE_OF = {
    "integer": ("min(v)", "max(v)", "percentile_disc(0.5) WITHIN GROUP (ORDER BY v)"),
    "decimal": ("min(v)", "max(v)", "percentile_disc(0.5) WITHIN GROUP (ORDER BY v)"),
    "date": ("min(v) - DATE '1970-01-01'", "max(v) - DATE '1970-01-01'",
             "percentile_disc(0.5) WITHIN GROUP (ORDER BY v) - DATE '1970-01-01'"),
    "timestamp": ("extract(epoch FROM min(v))", "extract(epoch FROM max(v))",
                  "extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY v))"),
}
_RANGE_OF["timestamptz"] = _RANGE_OF["timestamp"]
_FINITE = {"integer": "true", "decimal": "v::text NOT IN ('NaN', 'Infinity', '-Infinity')",
           "date": "isfinite(v)", "timestamp": "isfinite(v)", "timestamptz": "isfinite(v)"}


class _Catalog:
    """Lookups in the read-only session, each table and column read once."""

    def __init__(self, conn: psycopg.Connection, target: ConnectionTarget) -> None:
        self.conn = conn
        self.target = target
        self._tables: dict[tuple[str | None, str], _Table | None] = {}
        self._values: dict[tuple[int, str], Parameter] = {}

    def table(self, ref: TableRef) -> _Table | None:
        key = (ref.schema, ref.name)
        if key not in self._tables:
            self._tables[key] = self._load_table(ref)
        return self._tables[key]

    def _load_table(self, ref: TableRef) -> _Table | None:
        name = (f"{_quote_ident(ref.schema)}." if ref.schema else "") + _quote_ident(ref.name)
        row = self.conn.execute(
            f"SELECT {CAPTURE_MARK} c.oid, n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
            (name,)).fetchone()
        if row is None:
            return None
        columns = tuple(_Column(*r) for r in self.conn.execute(
            f"SELECT {CAPTURE_MARK} a.attname, format_type(a.atttypid, a.atttypmod), "
            "format_type(b.oid, CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod "
            "END), b.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype "
            "ELSE t.oid END WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", (row[0],)))
        return _Table(oid=int(row[0]), schema=row[1], name=row[2], relkind=row[3],
                      columns=columns)

    # -- parameters --

    def parameter(self, analysis: Analysis, number: int) -> Parameter:
        variable = f"p{number}"
        site = analysis.sites.get(number)
        if site is None or site.column is None:
            problem = site.problem if site else "not compared with a column"
            return Parameter(number=number, variable=variable, problem=problem)
        try:
            found = self._resolve(analysis, site.column)
        except psycopg.Error as exc:
            self._raise_if_lost()
            found = f"the catalog lookup failed: {reason(exc, self.target)}"
        if isinstance(found, str):
            return Parameter(number=number, variable=variable, problem=found)
        table, column = found
        key = (table.oid, column.name)
        if key not in self._values:
            self._values[key] = self._infer(table, column)
        inferred = self._values[key]
        set_line = inferred.set_line.replace("{var}", variable) if inferred.set_line else None
        return replace(inferred, number=number, variable=variable, set_line=set_line)

    def _raise_if_lost(self) -> None:
        """Per-statement failures are reported per statement; a lost session ends it all."""
        if self.conn.closed or self.conn.broken:
            raise psycopg.OperationalError("the connection was lost")

    def _resolve(self, analysis: Analysis, ref: ColumnRef) -> tuple[_Table, _Column] | str:
        where = ref.describe()
        if ref.qualifier is not None:
            table_ref = analysis.aliases.get(ref.qualifier)
            if table_ref is None:
                return f"{where}: {ref.qualifier!r} is no table of the statement"
            candidates = [t for t in [self.table(table_ref)] if t is not None]
            if not candidates:
                return f"{where}: table {table_ref.name!r} not found in this session"
        else:
            candidates = [t for r in analysis.tables if (t := self.table(r)) is not None]
        if ref.position is not None:
            table = candidates[0]
            if ref.position > len(table.columns):
                return f"{where}: {table.name!r} has only {len(table.columns)} columns"
            return table, table.columns[ref.position - 1]
        holders = [(t, c) for t in candidates if (c := t.column(ref.name or "")) is not None]
        unique = {(t.oid, c.name): (t, c) for t, c in holders}
        if len(unique) == 1:
            return next(iter(unique.values()))
        if not unique:
            tables = ", ".join(sorted({t.name for t in candidates})) or "none found"
            return f"{where}: no such column in the statement's tables ({tables})"
        return f"{where}: ambiguous (in {', '.join(sorted(t.name for t, _ in holders))})"

    def _infer(self, table: _Table, column: _Column) -> Parameter:
        base = Parameter(number=0, variable="", column=f"{table.schema}.{table.name}."
                         f"{column.name}", type_name=column.declared)
        kind = KINDS.get(column.base_name, "list")
        try:
            if kind != "list":
                ranged = self._range(table, column, kind, base)
                if ranged is not None:
                    return ranged
            return self._list(table, column, base)
        except psycopg.Error as exc:
            self._raise_if_lost()
            return replace(base, problem=f"reading {base.column}'s values failed: "
                           f"{reason(exc, self.target)}")

    def _range(self, table: _Table, column: _Column, kind: str,
               base: Parameter) -> Parameter | None:
        lo_sql, hi_sql, mid_sql = _RANGE_OF[kind]
        select = sql.SQL(f"SELECT {CAPTURE_MARK} count(*), {lo_sql}, {hi_sql}, {mid_sql}, "
                         f"min(v)::text, max(v)::text FROM ({{rows}}) AS u "
                         f"WHERE v IS NOT NULL AND {_FINITE[kind]}")
        row, source = self._from_stats_or_sample(table, column, select)
        if row is None:
            return None
        _, lo, hi, mid, lo_text, hi_text = row
        base = replace(base, kind=kind, low_text=lo_text, high_text=hi_text, source=source)
        if kind in ("integer", "date"):
            return replace(base, low=int(lo), high=int(hi), example=str(int(mid)),
                           set_line=f"\\set {{var}} random({int(lo)}, {int(hi)})")
        scale = DECIMAL_SCALE if kind == "decimal" else 1
        low, high = math.ceil(Decimal(lo) * scale), math.floor(Decimal(hi) * scale)
        if low > high or max(abs(low), abs(high)) > 2 ** 62:
            return None  # no whole step inside the range, or past pgbench's integers
        example = min(max(math.floor(Decimal(mid) * scale), low), high)
        if kind != "decimal":
            return replace(base, low=low, high=high, example=str(example),
                           set_line=f"\\set {{var}} random({low}, {high})")
        return replace(base, low=low / scale, high=high / scale,
                       example=str(Decimal(example) / scale),
                       set_line=f"\\set {{var}} random({low}, {high}) / {scale}.0")

    def _list(self, table: _Table, column: _Column, base: Parameter) -> Parameter:
        stats = sql.SQL(
            f"SELECT {CAPTURE_MARK} x.v::text, 1 AS part, x.o FROM pg_stats s, "
            "unnest(s.most_common_vals::text::{type}[]) WITH ORDINALITY AS x(v, o) "
            "WHERE s.schemaname = %(schema)s AND s.tablename = %(table)s "
            "AND s.attname = %(column)s UNION ALL "
            "SELECT x.v::text, 2, x.o FROM pg_stats s, "
            "unnest(s.histogram_bounds::text::{type}[]) WITH ORDINALITY AS x(v, o) "
            "WHERE s.schemaname = %(schema)s AND s.tablename = %(table)s "
            "AND s.attname = %(column)s ORDER BY 2, 3").format(type=sql.SQL(column.base))
        rows = self.conn.execute(stats, self._names(table, column)).fetchall()
        source = "pg_stats (most common values, histogram bounds; as of the last ANALYZE)"
        common = [r[0] for r in rows if r[1] == 1]
        bounds = [r[0] for r in rows if r[1] == 2]
        if not rows:
            pct = self._sample_percent(table)
            rows = self.conn.execute(sql.SQL(
                f"SELECT {CAPTURE_MARK} DISTINCT {{col}}::text FROM {{table}} "
                f"TABLESAMPLE SYSTEM ({pct:.6g}) REPEATABLE (1) WHERE {{col}} IS NOT NULL "
                "ORDER BY 1 LIMIT 10000").format(col=sql.Identifier(column.name),
                                                 table=_identifier(table))).fetchall()
            common, bounds = [], [r[0] for r in rows]
            source = f"TABLESAMPLE SYSTEM ({pct:.6g}%) REPEATABLE (1) of {table.name}"
        values = choose_values(common, bounds)
        if not values:
            why = ("it holds no value a script can carry (a backslash, a line break, "
                   f"':name' or over {MAX_VALUE_CHARS} characters)" if common or bounds
                   else "no values found (an empty table, or no rows sampled)")
            return replace(base, problem=f"{base.column}: {why}")
        return replace(base, kind="list", values=values, low=1, high=len(values),
                       low_text=values[0], high_text=values[-1], source=source, example="1",
                       set_line=f"\\set {{var}} random(1, {len(values)})")

    def _from_stats_or_sample(self, table: _Table, column: _Column,
                              select: sql.SQL) -> tuple[tuple | None, str]:
        stats = sql.SQL(
            "SELECT x.v FROM pg_stats s, unnest(s.histogram_bounds::text::{type}[]) AS x(v) "
            "WHERE s.schemaname = %(schema)s AND s.tablename = %(table)s "
            "AND s.attname = %(column)s UNION ALL "
            "SELECT x.v FROM pg_stats s, unnest(s.most_common_vals::text::{type}[]) AS x(v) "
            "WHERE s.schemaname = %(schema)s AND s.tablename = %(table)s "
            "AND s.attname = %(column)s").format(type=sql.SQL(column.base))
        row = self.conn.execute(select.format(rows=stats), self._names(table, column)).fetchone()
        if row and row[0]:
            return row, ("pg_stats (histogram bounds, most common values; as of the last "
                         "ANALYZE)")
        pct = self._sample_percent(table)
        sample = sql.SQL(f"SELECT {{col}} AS v FROM {{table}} TABLESAMPLE SYSTEM ({pct:.6g}) "
                         "REPEATABLE (1)").format(col=sql.Identifier(column.name),
                                                  table=_identifier(table))
        row = self.conn.execute(select.format(rows=sample)).fetchone()
        if row and row[0]:
            return row, (f"TABLESAMPLE SYSTEM ({pct:.6g}%) REPEATABLE (1) of {table.name}: "
                         f"{row[0]} values")
        return None, ""

    def _sample_percent(self, table: _Table) -> float:
        size = ("(SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM "
                "pg_partition_tree(%s::regclass))" if table.relkind == "p"
                else "pg_relation_size(%s::regclass)")
        pages = self.conn.execute(
            f"SELECT {CAPTURE_MARK} {size} / current_setting('block_size')::int",
            (table.oid,)).fetchone()[0]
        return 100.0 if int(pages) <= SAMPLE_PAGES else 100.0 * SAMPLE_PAGES / int(pages)

    @staticmethod
    def _names(table: _Table, column: _Column) -> dict[str, str]:
        return {"schema": table.schema, "table": table.name, "column": column.name}

    # -- plans --

    def plan_check(self, query: str, analysis: Analysis,
                   parameters: Sequence[Parameter]) -> PlanCheck:
        """The generic plan of ``query`` against the plan of the script's statement with
        each variable's example value, compared by :func:`plan_shape`."""
        if not analysis.explainable:
            return PlanCheck(None, None, None,
                             f"not checked: EXPLAIN does not apply to {analysis.verb.upper()}")
        concrete = render_sql(analysis, {p.number: _expression(p, _literal(p.example or ""))
                                         for p in parameters})
        try:
            scripted = plan_shape(self.conn.execute(
                f"EXPLAIN {CAPTURE_MARK} (FORMAT JSON) {concrete}").fetchone()[0])
        except psycopg.Error as exc:
            self._raise_if_lost()
            return PlanCheck(None, None, None,
                             f"the script's statement does not plan: {reason(exc, self.target)}")
        try:
            captured = self._generic_shape(query)
        except psycopg.Error as exc:
            self._raise_if_lost()
            return PlanCheck(None, scripted, None, "not checked: the captured statement's "
                             f"generic plan failed: {reason(exc, self.target)}")
        return PlanCheck(captured, scripted, captured == scripted,
                         "same" if captured == scripted else "differs")

    def _generic_shape(self, query: str) -> str:
        name = "pb_capture_check"
        self.conn.execute(f"PREPARE {CAPTURE_MARK} {name} AS {query}")
        try:
            count = self.conn.execute(
                f"SELECT {CAPTURE_MARK} coalesce(cardinality(parameter_types), 0) "
                "FROM pg_prepared_statements WHERE name = %s", (name,)).fetchone()[0]
            args = f"({', '.join(['NULL'] * count)})" if count else ""
            self.conn.execute(f"SET {CAPTURE_MARK} plan_cache_mode = force_generic_plan")
            try:
                plan = self.conn.execute(
                    f"EXPLAIN {CAPTURE_MARK} (FORMAT JSON) EXECUTE {name}{args}").fetchone()[0]
            finally:
                self.conn.execute(f"RESET {CAPTURE_MARK} plan_cache_mode")
        finally:
            self.conn.execute(f"DEALLOCATE {CAPTURE_MARK} {name}")
        return plan_shape(plan)


def plan_shape(plan: object) -> str:
    """An EXPLAIN (FORMAT JSON) plan as its top node and the scan of each table:
    ``"ModifyTable Update [Index Scan on items]"``."""
    root = plan[0]["Plan"] if isinstance(plan, list) else plan["Plan"]  # type: ignore[index]
    top = root["Node Type"] + (f" {root['Operation']}" if "Operation" in root else "")
    scans: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if "Relation Name" in node and node["Node Type"] != "ModifyTable":
            scans.append(f"{node['Node Type']} on {node['Relation Name']}")
        stack.extend(node.get("Plans", ()))
    return f"{top} [{', '.join(sorted(scans))}]" if scans else top


def choose_values(common: Sequence[str], bounds: Sequence[str]) -> tuple[str, ...]:
    """Up to MAX_LIST_VALUES distinct values a script can carry: the most common first,
    then histogram bounds (or sampled values) spread evenly over their order."""
    def carriable(v: str) -> bool:
        return (len(v) <= MAX_VALUE_CHARS and "\\" not in v and "\n" not in v
                and "\r" not in v and not pgbench_variables(v))

    chosen: dict[str, None] = dict.fromkeys(v for v in common if carriable(v))
    rest = [v for v in dict.fromkeys(bounds) if carriable(v) and v not in chosen]
    room = MAX_LIST_VALUES - len(chosen)
    if room > 0 and rest:
        step = max(1.0, len(rest) / room)
        picks = sorted({min(len(rest) - 1, int(i * step)) for i in range(min(room, len(rest)))})
        chosen.update(dict.fromkeys(rest[i] for i in picks))
    return tuple(list(chosen)[:MAX_LIST_VALUES])


def _expression(p: Parameter, ref: str) -> str:
    """What stands for ``$n`` in the script: the variable (``:p1``) or a value literal,
    turned into the column's type where pgbench's numbers cannot say it directly."""
    if not p.inferred or p.kind in ("integer", "decimal"):
        return ref
    if p.kind == "date":
        return f"(DATE '1970-01-01' + ({ref})::int)"
    if p.kind == "timestamptz":
        return f"to_timestamp(({ref})::float8)"
    if p.kind == "timestamp":
        return f"(TIMESTAMP '1970-01-01' + ({ref})::float8 * INTERVAL '1 second')"
    items = ", ".join(_literal(v) for v in p.values)
    return f"(ARRAY[{items}]::{p.type_name}[])[({ref})::int]"


def _literal(value: str) -> str:
    # Values with a backslash never get here (choose_values), so doubling quotes is a
    # correct literal whatever standard_conforming_strings says.
    return "'" + value.replace("'", "''") + "'"


def _file_part(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")[:30]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _identifier(table: _Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


_PGBENCH_VARIABLE = re.compile(
    r"(?<!:):([A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9\u0080-\U0010ffff]*)")


def pgbench_variables(text: str) -> list[str]:
    """Names pgbench reads as ``:variables`` in ``text`` (it looks everywhere, literals
    included; a run of colons, as in ``::int``, is none)."""
    return _PGBENCH_VARIABLE.findall(text)


# --- SQL text: tokens, tables and what each $n is compared with ------------------------------


@dataclass(frozen=True)
class Token:
    """A lexeme of SQL text. ``kind``: word (an unquoted name or keyword), qident (a
    quoted name), param ($n), op, punct, number, literal, comment."""

    kind: str
    text: str
    start: int
    end: int

    @property
    def word(self) -> str:
        """A name as PostgreSQL reads it: unquoted folded to lower case, quoted unquoted."""
        if self.kind == "qident":
            return self.text[1:-1].replace('""', '"')
        return self.text.lower() if self.kind == "word" else self.text

    @property
    def number(self) -> int:
        return int(self.text[1:])


_OP_CHARS = "+-*/<>=~!@#%^&|`?"
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9\u0080-\U0010ffff]*)?\$")
_NUMBER = re.compile(r"(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9$\u0080-\U0010ffff]*")


def tokenize(text: str) -> list[Token]:
    """SQL lexemes, whitespace dropped; an unterminated literal or comment runs to the end."""
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if text.startswith("--", i):
            end = text.find("\n", i)
            j, kind = (n if end < 0 else end), "comment"
        elif text.startswith("/*", i):
            j, depth = i + 2, 1
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            kind = "comment"
        elif c == "'" or (c in "eEbBxXnN" and text[i + 1:i + 2] == "'") or (
                c in "uU" and text[i + 1:i + 3] in ("&'", '&"')):
            start = i + (1 if c != "'" else 0) + (1 if c in "uU" else 0)
            quote = text[start]
            j = _quoted_end(text, start, quote, backslash=c in "eE")
            kind = "literal" if quote == "'" else "qident"
        elif c == '"':
            j, kind = _quoted_end(text, i, '"', backslash=False), "qident"
        elif c == "$" and text[i + 1:i + 2].isdigit():
            j = i + 1
            while j < n and text[j].isdigit():
                j += 1
            kind = "param"
        elif c == "$" and (m := _DOLLAR_TAG.match(text, i)):
            close = text.find(m.group(), m.end())
            j, kind = (n if close < 0 else close + len(m.group())), "literal"
        elif c.isdigit() or (c == "." and text[i + 1:i + 2].isdigit()):
            m = _NUMBER.match(text, i)
            j, kind = (m.end() if m else i + 1), "number"
        elif m := _NAME.match(text, i):
            j, kind = m.end(), "word"
        elif text.startswith("::", i):
            j, kind = i + 2, "punct"
        elif c in _OP_CHARS:
            j = i + 1
            while j < n and text[j] in _OP_CHARS and not text.startswith(("--", "/*"), j):
                j += 1
            kind = "op"
        else:
            j, kind = i + 1, "punct"
        out.append(Token(kind, text[i:j], i, j))
        i = j
    return out


def _quoted_end(text: str, start: int, quote: str, *, backslash: bool) -> int:
    """The index after the quote closing the literal or name that opens at ``start``."""
    j = start + 1
    while j < len(text):
        if backslash and text[j] == "\\":
            j += 2
            continue
        if text[j] == quote:
            if text[j + 1:j + 2] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return len(text)


@dataclass(frozen=True)
class TableRef:
    schema: str | None
    name: str
    alias: str | None


@dataclass(frozen=True)
class ColumnRef:
    """A column named in the statement (``qualifier.name``), or for ``INSERT INTO t
    VALUES (...)`` without a column list, the ``position``-th column of ``qualifier``."""

    qualifier: str | None
    name: str | None
    position: int | None = None

    def describe(self) -> str:
        if self.position is not None:
            return f"column {self.position} of {self.qualifier}"
        return f"{self.qualifier}.{self.name}" if self.qualifier else str(self.name)


@dataclass(frozen=True)
class Site:
    """Where ``$number`` stands: the column it is compared with, or why none was found."""

    number: int
    column: ColumnRef | None
    problem: str | None = None


@dataclass(frozen=True)
class Analysis:
    """What the parser read from one statement's text."""

    text: str
    tokens: tuple[Token, ...]  # comments included
    verb: str
    tables: tuple[TableRef, ...]
    aliases: dict[str, TableRef]
    numbers: tuple[int, ...]  # every $n, ascending
    sites: dict[int, Site]
    writes: str | None
    explainable: bool
    statements: int

    @property
    def label(self) -> str:
        """The first table's name, for file names."""
        return _file_part(self.tables[0].name if self.tables else "") or "statement"


COMPARISONS = frozenset({"=", "<>", "!=", "<", "<=", ">", ">="})
WRITE_VERBS = frozenset({"insert", "update", "delete", "merge", "truncate", "copy", "create",
                         "alter", "drop", "grant", "revoke", "comment", "vacuum", "analyze",
                         "analyse", "cluster", "reindex", "refresh", "lock", "security",
                         "import", "reassign"})
EXPLAINABLE = frozenset({"select", "insert", "update", "delete", "merge", "values", "with",
                         "table"})
# Words after which a name is not a table's alias, and which are never a column.
_CLAUSE_WORDS = frozenset({
    "where", "set", "join", "on", "left", "right", "inner", "outer", "full", "cross",
    "natural", "group", "order", "limit", "offset", "values", "returning", "using", "window",
    "having", "union", "except", "intersect", "for", "tablesample", "default", "select",
    "lateral", "fetch", "into", "do", "overriding", "as", "when", "then", "else", "end",
    "from", "and", "or", "not", "with", "is", "in", "between", "like", "ilike", "similar",
    "null", "true", "false", "any", "all", "some", "case", "exists", "distinct", "only",
    "array", "row", "interval", "date", "timestamp", "time", "cast", "asc", "desc",
    "nulls", "first", "last", "by", "partition", "over", "filter", "within", "insert",
    "update", "delete", "merge", "conflict", "nothing", "symmetric", "asymmetric", "escape",
})
# Reserved words: never a column (an unreserved one like "date" may be).
_NOT_COLUMNS = frozenset({
    "null", "true", "false", "and", "or", "not", "select", "where", "when", "then", "else",
    "end", "case", "any", "all", "some", "in", "is", "between", "like", "ilike", "exists",
    "distinct", "array", "as", "from", "on", "default", "current_date", "current_time",
    "current_timestamp", "localtime", "localtimestamp", "current_user", "session_user",
    "user", "using", "values", "set", "limit", "offset", "returning", "having", "order",
    "group", "join", "by",
})
_LOCK_WORDS = frozenset({"for", "key", "on", "do"})  # ... UPDATE that is not a statement
_TYPE_WORDS = frozenset({"precision", "varying", "with", "without", "time", "zone"})


def analyze(text: str) -> Analysis:
    """Read a statement: its tables and aliases, each ``$n``'s column (see the module's
    docstring for the forms understood), whether it writes."""
    tokens = tuple(tokenize(text))
    toks = [t for t in tokens if t.kind != "comment"]
    verb = toks[0].word if toks and toks[0].kind == "word" else ""
    found, ctes = _tables(toks)
    tables = [r for r in found if r.schema is not None or r.name not in ctes]
    aliases: dict[str, TableRef] = {}
    for ref in tables:
        aliases.setdefault(ref.name, ref)
    for ref in tables:
        if ref.alias:
            aliases[ref.alias] = ref
    numbers = tuple(sorted({t.number for t in toks if t.kind == "param"}))
    sites = _sites(toks)
    for n in numbers:
        if n not in sites:
            first = next(k for k, t in enumerate(toks) if t.kind == "param" and t.number == n)
            sites[n] = Site(n, None, _why_not(toks, first))
    body = toks[:-1] if toks and toks[-1].text == ";" else toks
    return Analysis(text=text, tokens=tokens, verb=verb,
                    tables=tuple(tables), aliases=aliases,
                    numbers=numbers, sites=sites, writes=_writes(toks, verb),
                    explainable=verb in EXPLAINABLE or (bool(toks) and toks[0].text == "("),
                    statements=1 + sum(1 for t in body if t.text == ";"))


def render_sql(analysis: Analysis, values: dict[int, str]) -> str:
    """The statement with comments dropped (pgbench would read ``:name`` in them too) and
    each ``$n`` in ``values`` replaced by its text, without its final semicolon."""
    text, out, pos = analysis.text, [], 0
    for t in analysis.tokens:
        if t.kind == "comment" or (t.kind == "param" and t.number in values):
            out.append(text[pos:t.start])
            out.append(" " if t.kind == "comment" else values[t.number])
            pos = t.end
    out.append(text[pos:])
    return "".join(out).strip().rstrip(";").rstrip()


def _tables(toks: list[Token]) -> tuple[list[TableRef], set[str]]:
    """Tables after FROM, JOIN, UPDATE, INTO and USING, and the names WITH defines."""
    refs: list[TableRef] = []
    ctes: set[str] = set()
    queries_at: list[bool] = [False]  # per parenthesis depth: a SELECT/DELETE seen there
    for k, t in enumerate(toks):
        if t.text == "(":
            queries_at.append(False)
            continue
        if t.text == ")":
            if len(queries_at) > 1:
                queries_at.pop()
            continue
        if t.kind != "word":
            continue
        word = t.word
        prev = toks[k - 1].word if k > 0 else ""
        if word in ("select", "delete") or (word == "update" and prev not in _LOCK_WORDS):
            queries_at[-1] = True
        if word == "as" and k > 0 and toks[k - 1].kind in ("word", "qident") and (
                _next_text(toks, k + 1) == "(" or _next_word(toks, k + 1) in (
                    "materialized", "not")):
            ctes.add(toks[k - 1].word)
        starts = (
            (word == "from" and queries_at[-1] and prev != "distinct")
            or word == "join"
            or (word == "update" and prev not in _LOCK_WORDS)
            or (word == "into" and prev in ("insert", "merge"))
            or (word == "using" and _next_text(toks, k + 1) != "("))
        if starts:
            refs += _table_list(toks, k + 1, many=word in ("from", "using"),
                                columns_follow=word == "into")
    return refs, ctes


def _table_list(toks: list[Token], k: int, *, many: bool,
                columns_follow: bool = False) -> list[TableRef]:
    """Table references from ``k``: ``[ONLY] [schema.]name [[AS] alias]``, several
    separated by commas when ``many``; after INTO (``columns_follow``) a parenthesis opens
    the column list, elsewhere it makes the name a function (not a table)."""
    refs: list[TableRef] = []
    while k < len(toks):
        while _next_word(toks, k) in ("only", "lateral"):
            k += 1
        if k >= len(toks) or toks[k].kind not in ("word", "qident") or (
                toks[k].kind == "word" and toks[k].word in _CLAUSE_WORDS):
            break
        parts = [toks[k].word]
        k += 1
        while _next_text(toks, k) == "." and k + 1 < len(toks) and \
                toks[k + 1].kind in ("word", "qident"):
            parts.append(toks[k + 1].word)
            k += 2
        if _next_text(toks, k) == "(" and not columns_follow:  # a function in FROM
            break
        if _next_word(toks, k) == "as":
            k += 1
        alias = None
        if k < len(toks) and toks[k].kind in ("word", "qident") and not (
                toks[k].kind == "word" and toks[k].word in _CLAUSE_WORDS):
            alias = toks[k].word
            k += 1
        refs.append(TableRef(schema=parts[-2] if len(parts) > 1 else None, name=parts[-1],
                             alias=alias))
        if not (many and _next_text(toks, k) == ","):
            break
        k += 1
    return refs


def _sites(toks: list[Token]) -> dict[int, Site]:
    sites: dict[int, Site] = {}

    def add(k: int, column: ColumnRef | None) -> None:
        if column is not None and toks[k].number not in sites:
            sites[toks[k].number] = Site(toks[k].number, column)

    for k, t in enumerate(toks):
        if t.kind != "word":
            continue
        if t.word == "between":
            left = _column_before(toks, k - 1 - (_word_at(toks, k - 1) == "not"))
            j = k + 1 + (_word_at(toks, k + 1) in ("symmetric", "asymmetric"))
            if left and _is_param(toks, j):
                end = _param_end(toks, j)
                if _word_at(toks, end + 1) == "and" and _is_param(toks, end + 2) and \
                        _value_ends(toks, _param_end(toks, end + 2) + 1):
                    add(j, left)
                    add(end + 2, left)
        elif t.word == "in" and _next_text(toks, k + 1) == "(" and \
                _word_at(toks, k + 2) != "select":
            left = _column_before(toks, k - 1 - (_word_at(toks, k - 1) == "not"))
            if left:
                for j in _list_items(toks, k + 1):
                    add(j, left)
        elif t.word == "insert" and _word_at(toks, k + 1) == "into":
            _insert_sites(toks, k + 2, add)
    for k, t in enumerate(toks):
        if t.kind != "param" or t.number in sites:
            continue
        end = _param_end(toks, k)
        if _next_text(toks, k - 1) in COMPARISONS and _value_ends(toks, end + 1):
            left = _column_before(toks, k - 2)
            if left and _value_starts(toks, _column_start(toks, k - 2) - 1):
                add(k, left)
        elif _next_text(toks, end + 1) in COMPARISONS and _value_starts(toks, k - 1):
            right = _column_after(toks, end + 2)
            if right:
                add(k, right)
    return sites


def _insert_sites(toks: list[Token], k: int, add: Callable[[int, ColumnRef], None]) -> None:
    refs = _table_list(toks, k, many=False, columns_follow=True)
    if not refs:
        return
    qualifier = refs[0].alias or refs[0].name
    while k < len(toks) and toks[k].text != "(" and toks[k].word not in ("values",
                                                                         "overriding"):
        k += 1
    columns: list[str] | None = None
    if _next_text(toks, k) == "(":
        items = _list_elements(toks, k)
        if any(len(item) != 1 or toks[item[0]].kind not in ("word", "qident")
               for item in items):
            return
        columns = [toks[item[0]].word for item in items]
        k = _matching(toks, k) + 1
    while k < len(toks) and toks[k].word != "values":
        if toks[k].word == "select":
            return
        k += 1
    k += 1
    while _next_text(toks, k) == "(":
        for position, item in enumerate(_list_elements(toks, k), 1):
            if _is_param(toks, item[0]) and _param_end(toks, item[0]) == item[-1]:
                if columns is None:
                    add(item[0], ColumnRef(qualifier, None, position))
                elif position <= len(columns):
                    add(item[0], ColumnRef(qualifier, columns[position - 1]))
        k = _matching(toks, k) + 1
        if _next_text(toks, k) != ",":
            break
        k += 1


def _why_not(toks: list[Token], k: int) -> str:
    n = toks[k].number
    prev = _word_at(toks, k - 1)
    if prev in ("limit", "offset", "fetch", "first", "next"):
        return f"{prev.upper()} ${n} is a row count, not a column's value"
    if prev in ("like", "ilike") or (prev == "to" and _word_at(toks, k - 2) == "similar"):
        return f"${n} is a pattern, not a column's value"
    if _next_text(toks, k - 1) == "(" and _word_at(toks, k - 2) in ("any", "all", "some"):
        return f"${n} is an array (= ANY(${n})), not one column's value"
    around = " ".join(t.text for t in toks[max(0, k - 3):k + 3])
    return f"${n} is not compared with a column in a form capture reads ({around!r})"


def _writes(toks: list[Token], verb: str) -> str | None:
    if verb in WRITE_VERBS:
        return verb.upper()
    if verb in ("call", "do"):
        return f"{verb.upper()} (may write)"
    locks = None
    for k, t in enumerate(toks):
        if t.kind != "word":
            continue
        prev = _word_at(toks, k - 1)
        if t.word in ("insert", "delete", "merge") and verb == "with":
            return f"{t.word.upper()} (in WITH)"
        if t.word == "update" and prev not in _LOCK_WORDS and verb == "with":
            return "UPDATE (in WITH)"
        if t.word in ("update", "share") and prev in ("for", "key"):
            locks = f"{verb.upper()} ... FOR {'NO KEY ' if prev == 'key' else ''}" \
                    f"{t.word.upper()} (locks rows)"
        if t.word in ("nextval", "setval") and _next_text(toks, k + 1) == "(":
            return f"{t.word}() (changes a sequence)"
    return locks


# -- token helpers --


def _next_text(toks: list[Token], k: int) -> str:
    return toks[k].text if 0 <= k < len(toks) else ""


def _word_at(toks: list[Token], k: int) -> str:
    return toks[k].word if 0 <= k < len(toks) and toks[k].kind == "word" else ""


def _next_word(toks: list[Token], k: int) -> str:
    return _word_at(toks, k)


def _is_param(toks: list[Token], k: int) -> bool:
    return 0 <= k < len(toks) and toks[k].kind == "param"


def _param_end(toks: list[Token], k: int) -> int:
    """The last token of ``$n`` and the casts that follow it (``$1::int``,
    ``$2::timestamp with time zone``, ``$3::varchar(10)[]``)."""
    while _next_text(toks, k + 1) == "::":
        k += 2
        while _next_text(toks, k + 1) == "." or _word_at(toks, k + 1) in _TYPE_WORDS:
            k += 2 if _next_text(toks, k + 1) == "." else 1
        if _next_text(toks, k + 1) == "(":
            k = _matching(toks, k + 1)
        while _next_text(toks, k + 1) == "[" and _next_text(toks, k + 2) == "]":
            k += 2
    return k


def _matching(toks: list[Token], k: int) -> int:
    """The index of the parenthesis closing the one at ``k`` (or the last token)."""
    depth = 0
    for j in range(k, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[j].text, 0)
        if depth == 0:
            return j
    return len(toks) - 1


def _list_elements(toks: list[Token], k: int) -> list[list[int]]:
    """Token indexes of each comma-separated element inside the parentheses at ``k``."""
    end = _matching(toks, k)
    items: list[list[int]] = [[]]
    depth = 0
    for j in range(k + 1, end):
        text = toks[j].text
        if text == "," and depth == 0:
            items.append([])
            continue
        depth += {"(": 1, ")": -1, "[": 1, "]": -1}.get(text, 0)
        items[-1].append(j)
    return [item for item in items if item]


def _list_items(toks: list[Token], k: int) -> Iterable[int]:
    """The parameters that are whole elements of the list at ``k``."""
    for item in _list_elements(toks, k):
        if _is_param(toks, item[0]) and _param_end(toks, item[0]) == item[-1]:
            yield item[0]


def _column_start(toks: list[Token], e: int) -> int:
    start = e
    while start >= 2 and toks[start - 1].text == "." and \
            toks[start - 2].kind in ("word", "qident"):
        start -= 2
    return start


def _is_name(toks: list[Token], k: int) -> bool:
    return 0 <= k < len(toks) and (toks[k].kind == "qident" or (
        toks[k].kind == "word" and toks[k].word not in _NOT_COLUMNS))


def _column_before(toks: list[Token], e: int) -> ColumnRef | None:
    """The column reference ending at token ``e`` (``col``, ``t.col``, ``s.t.col``)."""
    if not _is_name(toks, e):
        return None
    start = _column_start(toks, e)
    if _next_text(toks, start - 1) in (".", "::"):
        return None
    qualifier = toks[e - 2].word if start < e else None
    return ColumnRef(qualifier, toks[e].word)


def _column_after(toks: list[Token], s: int) -> ColumnRef | None:
    """The column reference starting at ``s``, if nothing binds to it on the right."""
    if not _is_name(toks, s):
        return None
    e = s
    while _next_text(toks, e + 1) == "." and 0 <= e + 2 < len(toks) and \
            toks[e + 2].kind in ("word", "qident"):
        e += 2
    if _next_text(toks, e + 1) in ("(", "::", "[") or not _value_ends(toks, e + 1):
        return None
    qualifier = toks[e - 2].word if e > s else None
    return ColumnRef(qualifier, toks[e].word)


def _value_starts(toks: list[Token], before: int) -> bool:
    """Nothing binds to the operand from the left (no arithmetic operator)."""
    if before < 0:
        return True
    t = toks[before]
    return t.kind == "word" or t.text in ("(", ",")


def _value_ends(toks: list[Token], after: int) -> bool:
    """Nothing binds to the operand from the right (no arithmetic, no further operator)."""
    if after >= len(toks):
        return True
    t = toks[after]
    return t.kind == "word" or t.text in (")", ",", ";")
