"""How both asyncpg strategies (and SQLAlchemy on asyncpg) run a statement (asyncpg is
autocommit by default).

A script's values are Python numbers (``\\set`` makes integers, doubles and booleans).
asyncpg prepares each statement, learns the parameter types the server inferred, and
encodes each value by its type, refusing a number where the server wants text (an
untyped ``SELECT :x``, a comparison with a text column). The run asks the server for
each script statement's parameter types before it starts, so values arrive as numbers
where the server types a parameter as a number or boolean and as pgbench's text
elsewhere. A statement it could not ask about (one on a table the script itself makes)
is sent with numbers; when asyncpg refuses one on the client (nothing reached the
server), its types are asked for here, once per strategy (``Connection.prepare``).
"""

from __future__ import annotations

import asyncpg

from poolbench.db.workload import ScriptMode, Statement

# Parameter types asyncpg encodes from Python numbers and booleans; any other is sent as text.
NATIVE_TYPES = frozenset({"int2", "int4", "int8", "float4", "float8", "numeric", "oid", "bool"})


async def execute(conn: asyncpg.Connection, statement: Statement,
                  params: tuple[object, ...], types: ParameterTypes | None = None) -> int | None:
    if statement.returns_row:
        return await conn.fetchval(statement.numbered_sql, *params)
    if statement.returns_row is None:
        await run_script_statement(conn, statement, params, types or ParameterTypes())
        return None
    status = await conn.execute(statement.numbered_sql, *params)  # e.g. "UPDATE 1"
    return int(status.rsplit(" ", 1)[1])


def script_mode(protocol: str, *, prepared_statements: bool) -> ScriptMode:
    """-M on asyncpg: ``simple`` is its simple query protocol (``execute`` without
    arguments); asyncpg prepares every statement it binds, so ``extended`` runs as
    ``prepared`` (unnamed statements, parsed each time, when its statement cache is off
    behind a transaction pooler)."""
    if protocol == "simple":
        return ScriptMode("simple", "simple", False,
                          "values put in the text as pgbench -M simple puts them; "
                          "Connection.execute() without arguments: asyncpg's simple query "
                          "protocol")
    typed = ("; values sent as numbers where the server types a parameter as a number or "
             "boolean, as pgbench's text elsewhere (the types asked for before the run)")
    if not prepared_statements:
        return ScriptMode("extended", "dollar", False,
                          f"$n bind parameters; asyncpg's statement cache is off on this route "
                          f"(a transaction pooler): unnamed statements, parsed on each "
                          f"execution, so -M {protocol} runs as extended{typed}",
                          typed_params=True)
    runs = " (-M extended runs as prepared)" if protocol == "extended" else ""
    return ScriptMode("prepared", "dollar", False,
                      f"$n bind parameters; asyncpg prepares every statement it binds (named, "
                      f"kept in its statement cache per connection){runs}{typed}",
                      typed_params=True)


class ParameterTypes:
    """Per statement text: which parameters asyncpg must be given as text (learnt once per
    statement, for the statements that need it; one per strategy, as types are the
    server's, whatever the connection)."""

    def __init__(self) -> None:
        self.as_text: dict[str, tuple[bool, ...]] = {}

    async def learn(self, conn: asyncpg.Connection, sql: str) -> tuple[bool, ...]:
        prepared = await conn.prepare(sql)
        found = tuple(t.name not in NATIVE_TYPES for t in prepared.get_parameters())
        self.as_text[sql] = found
        return found


async def run_script_statement(conn: asyncpg.Connection, statement: Statement,
                               params: tuple[object, ...], types: ParameterTypes) -> None:
    """One script statement; its result is read and dropped."""
    sql = statement.sql
    if statement.protocol == "simple":
        await conn.execute(sql)  # no arguments: the simple query protocol
        return
    if not params:
        await conn.fetch(sql)  # execute() without arguments would take the simple protocol
        return
    as_text = types.as_text.get(sql)
    if as_text is not None:
        await conn.execute(sql, *_converted(params, as_text))
        return
    try:
        await conn.execute(sql, *params)
    except asyncpg.DataError as exc:
        if exc.__cause__ is None:  # the server's error (class 22), not asyncpg's encoding
            raise
        # asyncpg refused a value before sending it: the statement stays prepared, its
        # implicit transaction open until the execution below ends it.
        as_text = await types.learn(conn, sql)
        await conn.execute(sql, *_converted(params, as_text))


def _converted(params: tuple[object, ...], as_text: tuple[bool, ...]) -> tuple[object, ...]:
    return tuple(_pgbench_text(v) if text else v for v, text in zip(params, as_text))


def _pgbench_text(value: object) -> str:
    """A value as pgbench sends it (``getVariable``; the script package's ``value_text``,
    which strategies, below workloads, do not import)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float:
        return f"{value:.15g}"
    return "NULL" if value is None else str(value)
