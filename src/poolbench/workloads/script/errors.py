"""Errors of pgbench-style scripts: each message is one line, ``file:line: what``."""

from __future__ import annotations

from poolbench.errors import ConfigError

SUPPORTED = ("supported: SQL commands (BEGIN ... COMMIT/ROLLBACK, :name variables), "
             "\\set name expr, \\sleep n [us|ms|s]")


class ScriptError(ConfigError):
    """A script poolbench refuses, or cannot run: ``file:line: what; supported: ...``.

    Raised while parsing (unsupported or malformed input) and while compiling a script
    for a client (an expression whose constants fail, e.g. ``random(5, 1)``)."""


class ScriptRuntimeError(ScriptError):
    """Evaluating a ``\\set`` or ``\\sleep`` failed while running (overflow, division by
    zero, a parameter out of range): pgbench aborts the client on these."""
