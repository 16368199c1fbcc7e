"""How psycopg 3 (its sync and async strategies, and SQLAlchemy on psycopg) runs a
script's statement; the CRUD statements' execute lives with ``psycopg:none``.

Values go as pgbench sends them with ``-M extended|prepared``: text, of unknown type
(psycopg sends a Python ``str`` so), which the server reads as the type it infers.
"""

from __future__ import annotations

import psycopg

from poolbench.db.workload import ScriptMode, Statement

_TEXT = "values sent as text of unknown type, as pgbench sends them"


def script_mode(protocol: str, *, prepared_statements: bool) -> ScriptMode:
    """-M on psycopg 3: ``simple`` sends the text without parameters (psycopg then uses the
    simple query protocol), ``extended`` binds with ``prepare=False``, ``prepared`` with
    ``prepare=True`` (unless prepared statements are off on the route)."""
    if protocol == "simple":
        return ScriptMode("simple", "simple", False,
                          "values put in the text as pgbench -M simple puts them, sent without "
                          "parameters: psycopg's simple query protocol (prepare=False)")
    if protocol == "prepared" and prepared_statements:
        return ScriptMode("prepared", "format", True,
                          f"%s bind parameters, execute(prepare=True): each statement prepared "
                          f"on each connection at its first use, then bound; {_TEXT}",
                          extra="psycopg prepares each statement on each connection with a "
                                "request of its own, one transaction more outside BEGIN")
    note = (f"%s bind parameters, execute(prepare=False); {_TEXT}; a statement without "
            "parameters is sent with binary=True, so that it too takes the extended protocol "
            "(psycopg sends it as a simple query otherwise; its result is dropped)")
    if protocol == "prepared":
        note = ("prepared statements are off on this route (a transaction pooler): -M prepared "
                "runs as extended: " + note)
    return ScriptMode("extended", "format", True, note)


def run_script_statement(conn: psycopg.Connection, statement: Statement,
                         params: tuple[object, ...]) -> None:
    """One script statement on an autocommit psycopg 3 connection; its result is dropped."""
    if statement.protocol == "simple":
        conn.execute(statement.sql, prepare=False)  # no parameters: the text is sent as is
    else:  # parameters given, even none: psycopg reads %s, and %% as %
        conn.execute(statement.sql, params, prepare=statement.protocol == "prepared",
                     binary=True if not params else None)


async def run_script_statement_async(conn: psycopg.AsyncConnection, statement: Statement,
                                     params: tuple[object, ...]) -> None:
    """:func:`run_script_statement`, awaited."""
    if statement.protocol == "simple":
        await conn.execute(statement.sql, prepare=False)
    else:
        await conn.execute(statement.sql, params, prepare=statement.protocol == "prepared",
                           binary=True if not params else None)
