"""pgbench-style scripts as poolbench's workload: ``-f FILE@WEIGHT`` and ``-b NAME@WEIGHT``.

One operation takes a connection, runs one script chosen by weight (an exact shuffled
cycle of the weights, as ``--mix`` deals its kinds), and gives it back; a ``\\sleep``
holds the connection meanwhile. Each script is measured as a kind of its own,
``script:NAME``, beside the whole phase, ``mix``. The language itself (parsing,
``\\set``, the per-client runner) is :mod:`poolbench.workloads.script`; how each driver
sends a statement for ``-M`` is its strategy's :class:`~poolbench.db.workload.ScriptMode`.

What ends a run rather than failing one operation (a script's fault, not the load's):
a ``\\set`` that fails while running, a write the server refuses in a read-only session,
and a statement the server refuses as written (SQLSTATE class 42: a syntax error, a
missing table or column, a missing privilege).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from poolbench.config import Pace, ScriptFile
from poolbench.db.binaries import find_pgbench
from poolbench.db.pgbench_tables import init_tables
from poolbench.db.workload import RunTable, ScriptMode, Statement
from poolbench.errors import ConfigError
from poolbench.workloads.base import ScriptCounts, TrialDriver, WindowWork, Workload
from poolbench.workloads.phase import PhaseSpec
from poolbench.workloads.script import (
    BUILTIN_SCRIPTS,
    ParamStyle,
    Script,
    ScriptError,
    ScriptRunner,
    SetCommand,
    SleepCommand,
    SleepStep,
    TxRole,
    builtin_script,
    parse_script,
    parse_weighted,
)
from poolbench.workloads.script.functions import value_text
from poolbench.workloads.script.plan import ScriptPlan

if TYPE_CHECKING:
    from poolbench.config import RunConfig
    from poolbench.db.admin import AdminSession
    from poolbench.db.target import ConnectionTarget
    from poolbench.strategies.base import StrategyInfo

READ_ONLY_SQL_TRANSACTION = "25006"
# Class 42 but for a prepared statement that exists already: what a transaction pooler
# does to prepared statements (counted as the load's errors, not the script's fault).
NOT_THE_SCRIPTS_FAULT = frozenset({"42P05"})

# (statement, parameters, command index) to send, or (None, seconds, command index) to
# hold the connection; the index is the command's slot in its StatementCounters.
Step = tuple[Statement | None, object, int]
# Parameter types a driver that encodes by type (asyncpg) takes Python numbers and
# booleans for; any other is given pgbench's text of the value.
NUMERIC_TYPES = frozenset({"smallint", "integer", "bigint", "real", "double precision",
                           "numeric", "oid", "boolean"})


def load_scripts(files: Sequence[str], builtins: Sequence[str]) -> tuple[ScriptFile, ...]:
    """``-f FILE[@WEIGHT]`` and ``-b NAME[@WEIGHT]`` arguments, read and parsed: a missing
    or unreadable file, a weight below 1, anything the parser refuses is one line
    (``file:line`` where there is one). A script's name is its file name (``-f
    sql/read.sql``: ``read.sql``), the built-in's own; a name given twice gets ``#2``."""
    loaded: list[ScriptFile] = []
    for arg in files:
        path, weight = parse_weighted(arg)
        _check_weight(f"-f {arg}", weight)
        text = _read(path)
        parse_script(text, name=path)
        loaded.append(ScriptFile(Path(path).name, path, text, weight))
    for arg in builtins:
        name, weight = parse_weighted(arg)
        _check_weight(f"-b {arg}", weight)
        script = builtin_script(name)
        loaded.append(ScriptFile(script.name, f"builtin:{script.name}",
                                 BUILTIN_SCRIPTS[script.name], weight))
    seen: dict[str, int] = {}
    named = []
    for script in loaded:
        seen[script.name] = seen.get(script.name, 0) + 1
        name = script.name if seen[script.name] == 1 else f"{script.name}#{seen[script.name]}"
        named.append(ScriptFile(name, script.path, script.text, script.weight))
    return tuple(named)


def _check_weight(arg: str, weight: int) -> None:
    if weight < 1:
        raise ConfigError(f"{arg}: a weight must be a whole number >= 1 (a script of weight "
                          "0 would never run)")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"-f {path}: no such file; give the path of a pgbench script") \
            from None
    except IsADirectoryError:
        raise ConfigError(f"-f {path}: is a folder; give the path of a pgbench script") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"-f {path}: cannot read it ({type(exc).__name__}); check its "
                          "permissions and that it is UTF-8 text") from None


def per_run(files: Sequence[ScriptFile]) -> dict[str, tuple[int, int]]:
    """Per script kind, the transactions one complete run commits and rolls back (from its
    statements: each outside BEGIN is one, each BEGIN ... COMMIT/ROLLBACK one)."""
    return {f"script:{f.name}": (script.committed_per_run, script.rolled_back_per_run)
            for f, script in zip(files, (parse_script(f.text, name=f.path) for f in files))}


def describe_parameters(conn: Any, files: Sequence[ScriptFile]
                        ) -> tuple[tuple[str, tuple[bool, ...]], ...]:
    """Per statement with variables (in its ``$n`` form), which of its parameters the
    server types as other than a number or boolean, as a driver that encodes values by
    type (asyncpg) must know: ``PREPARE`` on ``conn`` (an autocommit psycopg connection,
    before the run: nothing is executed), the types read from ``pg_prepared_statements``,
    ``DEALLOCATE``. A statement the server cannot prepare yet (on a table the script
    makes) is left out: its driver asks when it meets it."""
    found: dict[str, tuple[bool, ...]] = {}
    for f in files:
        for command in parse_script(f.text, name=f.path).statements:
            sql = command.render(ParamStyle.DOLLAR)
            if not command.variables or sql in found:
                continue
            try:
                conn.execute(f"PREPARE poolbench_describe AS {sql}")
            except psycopg.Error:
                continue
            try:
                types = conn.execute("SELECT parameter_types::text[] FROM pg_prepared_statements "
                                     "WHERE name = 'poolbench_describe'").fetchone()[0]
            finally:
                conn.execute("DEALLOCATE poolbench_describe")
            found[sql] = tuple(t not in NUMERIC_TYPES for t in types)
    return tuple(found.items())


def check_scripts(files: Sequence[ScriptFile], *, scale: int, seed: int) -> None:
    """Parse and compile every script once, before anything connects: what a client
    would refuse (``random(5, 1)`` folded from constants) is refused now, in one line."""
    plan = ScriptPlan(tuple(files), ScriptMode("extended", "format", False, ""), scale, seed)
    for script in plan.parse():
        ScriptClient(script, plan, client_id=0, trial=0)


def command_labels(script: Script) -> tuple[tuple[int, str, bool], ...]:
    """Each command of ``script`` as pgbench ``-r`` lists it: (line, its first line of
    text, whether it is timed). A ``\\set`` is not timed: a run evaluates all of them
    before its connection is taken (see :mod:`poolbench.workloads.script.interp`)."""
    labels = []
    for c in script.commands:
        if isinstance(c, SetCommand):
            labels.append((c.line, f"\\set {c.variable} {c.text}", False))
        elif isinstance(c, SleepCommand):
            amount = c.amount if c.amount is not None else f":{c.variable}"
            labels.append((c.line, f"\\sleep {amount} {c.unit}", True))
        else:
            labels.append((c.line, c.sql.strip().splitlines()[0].strip(), True))
    return tuple(labels)


class ScriptClient:
    """One worker's compiled script (a ``ScriptRunner`` of its own, as each pgbench client
    has): each run as the steps to send. Trial ``t`` draws from ``seed + t``."""

    __slots__ = ("as_text", "labels", "runner", "simple", "statements")

    def __init__(self, script: Script, plan: ScriptPlan, *, client_id: int,
                 trial: int) -> None:
        mode = plan.mode
        style = ParamStyle(mode.style)
        self.runner = ScriptRunner(script, client_id=client_id, scale=plan.scale,
                                   seed=plan.seed + trial, style=style,
                                   params_as_text=mode.params_as_text,
                                   default_seed=plan.default_seed)
        self.simple = style is ParamStyle.SIMPLE
        self.statements = {
            c.index: Statement(script.name, self.runner.sql[c.index] or c.sql, None,
                               mode.protocol, f"{script.name}:{c.line}",
                               c.tx is TxRole.IN_TRANSACTION)
            for c in script.statements}
        # Statements whose parameters the server types as text (a typed_params mode):
        # which of their values go as pgbench's text.
        typed = dict(plan.text_params) if mode.typed_params else {}
        self.as_text = {index: flags for index, s in self.statements.items()
                        if any(flags := typed.get(s.sql, ()))}
        self.labels = command_labels(script)

    def run(self) -> list[Step]:
        """One run's steps. Raises ScriptRuntimeError (``file:line``) when a ``\\set`` or
        ``\\sleep`` fails: pgbench aborts the client there; poolbench ends the run."""
        steps: list[Step] = []
        statements = self.statements
        for step in self.runner.run():
            if type(step) is SleepStep:
                steps.append((None, step.seconds, step.index))
            elif self.simple:  # values in the text: a statement of this run's own
                s = statements[step.index]
                steps.append((Statement(s.phase, step.sql, None, s.protocol, s.source,
                                        s.in_transaction), (), step.index))
            elif step.index in self.as_text:
                params = tuple(value_text(v) if text else v  # type: ignore[arg-type]
                               for v, text in zip(step.params, self.as_text[step.index]))
                steps.append((statements[step.index], params, step.index))
            else:
                steps.append((statements[step.index], step.params, step.index))
        return steps


def run_ending_error(statement: Statement, exc: BaseException, *,
                     read_only: bool) -> ScriptError | None:
    """The one-line error that ends the run, when the statement's failure is the script's
    fault rather than the load's; None otherwise (the operation is counted as failed)."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if not isinstance(code, str):
        return None
    what = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if code == READ_ONLY_SQL_TRANSACTION:
        if read_only:
            return ScriptError(
                f"{statement.source}: the server refused a write ({what}): on a server "
                "poolbench did not start, scripts run in read-only sessions; give --clone "
                "to run them on a copy of the database, or --allow-writes to let them write "
                "here (docs/scripts.md says what that risks)")
        return ScriptError(f"{statement.source}: the server refused a write ({what}): the "
                           "server itself is read-only (a standby?); run writing scripts on "
                           "the primary")
    if code.startswith("42") and code not in NOT_THE_SCRIPTS_FAULT:
        hint = ("pgbench's built-in scripts need its tables: make them first with poolbench "
                "init -s SCALE --allow-writes (same database options)"
                if code == "42P01" and "pgbench_" in what
                else "fix the script")
        return ScriptError(f"{statement.source}: the server refused the statement: {what} "
                           f"(SQLSTATE {code}); {hint}")
    return None


def make_builtin_tables(config: RunConfig, target: ConnectionTarget) -> None:
    """On a server poolbench started (a run's, a sweep's): pgbench's built-ins get
    pgbench's tables at ``--scale``, made as ``poolbench init`` makes them."""
    if any(s.builtin for s in config.scripts):
        init_tables(find_pgbench(), target, scale=config.scale)


class ScriptWork(WindowWork):
    """A window of script runs: one phase per trial (``--rows`` runs, or ``--duration``),
    measured per script (``script:NAME``, in the order given; the summary sums them into
    ``mix``); checked by the transactions their complete runs make."""

    def __init__(self, table: RunTable, plan: ScriptPlan, runs: int) -> None:
        self.table = table
        self.plan = plan
        self.runs = runs

    def run_trial(self, trial: int, pace: Pace, driver: TrialDriver) -> bool:
        plan = self.plan
        assert plan is not None
        outcome = driver.run(PhaseSpec.of_scripts(plan, self.table, trial, runs=self.runs,
                                                  pace=pace))
        if outcome is None:
            return False
        for kind in plan.kinds:
            driver.measured(kind, outcome, [r for r in outcome.recorders if r.kind == kind])
        return True

    def script_counts(self, ops: dict[str, int], *,
                      strategy_extra: str | None) -> ScriptCounts:
        plan = self.plan
        assert plan is not None
        each = per_run(plan.files)
        return ScriptCounts(committed=sum(ops.get(kind, 0) * each[kind][0] for kind in each),
                            rolled_back=sum(ops.get(kind, 0) * each[kind][1] for kind in each),
                            extra=plan.mode.extra or strategy_extra,
                            prepared=plan.mode.protocol == "prepared")


class ScriptWorkload(Workload):
    """``-f FILE@W`` / ``-b NAME@W``: the user's scripts. They work on their own tables:
    poolbench makes no table and no row of its own, so there is no data check; on a server
    poolbench did not start they run in read-only sessions unless the user allows writes
    (``--allow-writes``) or gives a copy (``--clone``)."""

    name = "scripts"
    makes_rows = False
    baseline = "scripts"
    # Per statement with variables ($n form): which parameters go as text (set_up)
    text_params: tuple[tuple[str, tuple[bool, ...]], ...] = ()

    def check(self) -> None:
        """Scripts compile, and their read-only sessions hold on every route."""
        config = self.config
        check_scripts(config.scripts, scale=config.scale, seed=config.script_seed)
        if self.read_only() and config.via != ("direct",):
            raise ConfigError("scripts run in read-only sessions on a server poolbench did "
                              "not start, which a pooler's server connections do not carry: "
                              "use --via direct, or give --allow-writes")

    def read_only(self) -> bool:
        """Scripts on a server poolbench did not start run in read-only sessions, unless the
        user allows writes; on an embedded server (this run's, or one a library caller
        started: its target says so) and in a clone anything goes. A DSN names a server
        poolbench did not start, whoever did: the embedded server's own DSN given to
        ``--dsn`` is read-only too."""
        config = self.config
        return (not config.allow_writes and not config.clone and config.target is not None
                and not config.target.embedded)

    def set_up(self, admin: AdminSession, target: ConnectionTarget, *, run_tag: str,
               embedded: bool, typed_params: bool) -> None:
        """On a server poolbench started for the run, pgbench's tables for its built-ins;
        for drivers that encode values by type, which parameters go as text (asked once, before any
        strategy's window: nothing of it is in a cross-check)."""
        config = self.config
        self.table = RunTable(config.table, run_tag)
        if embedded:
            make_builtin_tables(config, target)
        if typed_params:
            self.text_params = admin.call(lambda c: describe_parameters(c, config.scripts))

    def window(self, admin: AdminSession, strategy: type[StrategyInfo], *,
               prepared_statements: bool) -> ScriptWork:
        config = self.config
        return ScriptWork(self.table, ScriptPlan(
            config.scripts,
            strategy.script_mode(config.protocol, prepared_statements=prepared_statements),
            scale=config.scale, seed=config.script_seed, read_only=self.read_only(),
            text_params=self.text_params), config.rows)

    def protocol_note(self, strategy: type[StrategyInfo], *,
                      prepared_statements: bool) -> str | None:
        return strategy.script_mode(self.config.protocol,
                                    prepared_statements=prepared_statements).note
