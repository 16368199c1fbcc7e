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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from poolbench.config import ScriptFile
from poolbench.db.workload import ScriptMode, Statement
from poolbench.errors import ConfigError
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
from poolbench.workloads.script.interp import default_seed_of

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


@dataclass(frozen=True)
class ScriptPlan:
    """What a phase of scripts needs, as plain data (it crosses process boundaries: the
    texts travel, each process parses them again): the scripts, how the strategy sends
    their statements, ``:scale``, the run's seed, and whether sessions are read-only."""

    files: tuple[ScriptFile, ...]
    mode: ScriptMode
    scale: int = 1
    seed: int = 0
    read_only: bool = False
    # typed_params modes: per statement ($n text), which parameters go as text
    text_params: tuple[tuple[str, tuple[bool, ...]], ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        """Each script's phase name (``script:NAME``), in the order given."""
        return tuple(f"script:{f.name}" for f in self.files)

    def parse(self) -> tuple[Script, ...]:
        return tuple(parse_script(f.text, name=f.path) for f in self.files)

    @property
    def default_seed(self) -> int:
        """``:default_seed`` (the seed of ``hash()``): one for the whole run."""
        return default_seed_of(self.seed)


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
