"""pgbench's built-in scripts (``-b``), verbatim from pgbench.c (PostgreSQL 16:
``naccounts`` 100000, ``nbranches`` 1, ``ntellers`` 10 written out as pgbench's
``CppAsString2`` writes them); ``pgbench --show-script=NAME`` prints the same text."""

from __future__ import annotations

from poolbench.workloads.script.errors import ScriptError
from poolbench.workloads.script.parser import Script, parse_script

_HEAD = ("\\set aid random(1, 100000 * :scale)\n"
         "\\set bid random(1, 1 * :scale)\n"
         "\\set tid random(1, 10 * :scale)\n"
         "\\set delta random(-5000, 5000)\n"
         "BEGIN;\n"
         "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n"
         "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n")
_HISTORY = ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
            "VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);\n"
            "END;\n")

BUILTIN_SCRIPTS: dict[str, str] = {
    "tpcb-like": _HEAD
    + "UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;\n"
    + "UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;\n"
    + _HISTORY,
    "simple-update": _HEAD + _HISTORY,
    "select-only": "\\set aid random(1, 100000 * :scale)\n"
                   "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n",
}


def builtin_script(name: str) -> Script:
    """A built-in script by name or unambiguous prefix, as pgbench's ``-b`` finds it."""
    found = [key for key in BUILTIN_SCRIPTS if key.startswith(name)]
    if len(found) != 1:
        what = "no builtin script" if not found else f"{len(found)} builtin scripts"
        raise ScriptError(f"{what} found for name \"{name}\"; supported: "
                          + ", ".join(BUILTIN_SCRIPTS))
    return parse_script(BUILTIN_SCRIPTS[found[0]], name=found[0])
