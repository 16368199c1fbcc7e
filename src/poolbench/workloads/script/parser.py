"""A pgbench script file: its SQL commands, ``\\set`` and ``\\sleep``, parsed as pgbench
(PostgreSQL 16) parses them, or refused in one line.

Splitting follows psqlscan.l as pgbench drives it: a SQL command ends at a semicolon
outside quotes, comments and parentheses (so one line may hold two commands and one
command may span lines), or at a backslash that starts a meta-command; leading
whitespace and ``--`` comments are dropped, everything else is kept and sent as is,
semicolon included. A backslash command ends at the end of its line (a backslash at
the end of a line continues it).

Variables: pgbench finds ``:name`` by scanning the whole SQL text, quotes and comments
included, then substitutes the value's text (``-M simple``, only for a variable that
is set: an unknown ``:name`` stays as written) or puts ``$n`` in its place
(``-M extended|prepared``, for every ``:name``, set or not: one that sits inside a
literal then breaks the statement, whose parameter count no longer matches). Here:

- ``:name`` in SQL code is a bind parameter and must be set earlier in the script
  (``\\set``) or be built in (``client_id``, ``scale``, ``default_seed``,
  ``random_seed``); otherwise the script is refused at parse time (pgbench would
  send ``:name`` or NULL and fail at run time).
- ``::`` is a cast: pgbench skips a run of colons not followed by a name.
- ``:name`` inside a string literal, a quoted identifier or a comment is left as
  written when no such variable is set (``'12:30'``, ``'key:value'``); when one is,
  the script is refused: pgbench substitutes it there only with ``-M simple`` and
  fails with ``-M extended|prepared``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from poolbench.workloads.script.errors import SUPPORTED, ScriptError, ScriptRuntimeError
from poolbench.workloads.script.expr import Expr, ExprSyntaxError, parse_expr, variables_of
from poolbench.workloads.script.functions import fold

BUILTIN_VARIABLES = ("client_id", "default_seed", "random_seed", "scale")
MAX_PARAMETERS = 255  # pgbench's MAX_ARGS - 1
INT_MAX = 2147483647

UNSUPPORTED_META = {
    "gset": "results are not stored in variables",
    "aset": "results are not stored in variables",
    "if": "scripts run without conditionals",
    "elif": "scripts run without conditionals",
    "else": "scripts run without conditionals",
    "endif": "scripts run without conditionals",
    "shell": "scripts never run shell commands",
    "setshell": "scripts never run shell commands",
    "startpipeline": "pipelines are not supported",
    "syncpipeline": "pipelines are not supported",
    "endpipeline": "pipelines are not supported",
}


class ParamStyle(str, Enum):
    """How a statement's variables reach the server."""

    FORMAT = "format"  # %s placeholders, a literal % doubled (psycopg, psycopg2)
    DOLLAR = "dollar"  # $1, $2 ... one per occurrence, as pgbench -M extended (asyncpg)
    SIMPLE = "simple"  # values inserted into the text, as pgbench -M simple


class TxRole(str, Enum):
    """Where a SQL command stands in the script's transactions."""

    AUTOCOMMIT = "autocommit"  # outside BEGIN ... COMMIT: a transaction of its own
    BEGIN = "begin"  # BEGIN, START TRANSACTION
    IN_TRANSACTION = "in-transaction"  # between BEGIN and its COMMIT/ROLLBACK
    COMMIT = "commit"  # COMMIT, END
    ROLLBACK = "rollback"  # ROLLBACK, ABORT


@dataclass(frozen=True)
class SqlCommand:
    """One SQL command. ``parts`` is ``sql`` cut around its bind parameters
    (``len(parts) == len(variables) + 1``); a name used twice appears twice."""

    index: int  # position in Script.commands: pgbench -r's command number minus one
    line: int
    sql: str  # as pgbench sends it with -M simple, before substitution
    parts: tuple[str, ...]
    variables: tuple[str, ...]
    tx: TxRole

    def render(self, style: ParamStyle) -> str:
        """The SQL text with placeholders (``FORMAT``, ``DOLLAR``); ``SIMPLE`` needs the
        values: see :meth:`substitute`."""
        if style is ParamStyle.FORMAT:
            return "%s".join(part.replace("%", "%%") for part in self.parts)
        if style is ParamStyle.DOLLAR:
            out = [self.parts[0]]
            for n, part in enumerate(self.parts[1:], start=1):
                out += [f"${n}", part]
            return "".join(out)
        raise ValueError("ParamStyle.SIMPLE has no placeholders: use substitute()")

    def substitute(self, texts: tuple[str, ...]) -> str:
        """The SQL text with each variable replaced by its value's text (``-M simple``)."""
        out = [self.parts[0]]
        for text, part in zip(texts, self.parts[1:]):
            out += [text, part]
        return "".join(out)


@dataclass(frozen=True)
class SetCommand:
    index: int
    line: int
    variable: str
    expr: Expr  # constants already folded
    text: str  # the expression as written


@dataclass(frozen=True)
class SleepCommand:
    """``\\sleep``: ``amount`` (a literal) or ``variable``, times ``unit``."""

    index: int
    line: int
    amount: int | None
    variable: str | None
    unit: str  # "us", "ms" or "s"

    @property
    def unit_us(self) -> int:
        return {"us": 1, "ms": 1_000, "s": 1_000_000}[self.unit]


Command = SqlCommand | SetCommand | SleepCommand


@dataclass(frozen=True)
class Script:
    """A parsed script. One run of it commits ``committed_per_run`` transactions and
    rolls back ``rolled_back_per_run`` when no statement fails: each AUTOCOMMIT command
    is one transaction (a utility command that runs several, such as VACUUM, counts
    more on the server), each BEGIN ... COMMIT block one."""

    name: str
    commands: tuple[Command, ...]
    committed_per_run: int
    rolled_back_per_run: int

    @property
    def statements(self) -> tuple[SqlCommand, ...]:
        return tuple(c for c in self.commands if isinstance(c, SqlCommand))


def parse_weighted(arg: str) -> tuple[str, int]:
    """``FILE[@WEIGHT]`` as pgbench's ``-f``/``-b`` read it: the last ``@`` separates an
    integer weight, 1 when absent. pgbench accepts 0 .. 2147483647; so does this (a
    caller that needs a positive weight refuses 0 itself)."""
    sep = arg.rfind("@")
    if sep < 0:
        return arg, 1
    name, spec = arg[:sep], arg[sep + 1:]
    if not name:
        raise ScriptError(f"{arg}: no script before '@'; supported: FILE[@WEIGHT]")
    if not re.fullmatch(r"[ \t\n\r\f\v]*[+-]?[0-9]+", spec):
        raise ScriptError(f"{arg}: invalid weight specification: @{spec}; "
                          "supported: FILE[@WEIGHT], WEIGHT an integer")
    weight = int(spec)
    if not 0 <= weight <= INT_MAX:
        raise ScriptError(f"{arg}: weight specification out of range (0 .. {INT_MAX}): {weight}")
    return name, weight


def parse_script(text: str, *, name: str) -> Script:
    """Parse a script; ``name`` (the file name) prefixes every error as ``name:line:``.
    Raises ScriptError on anything outside the supported subset."""
    return _Parser(text, name).parse()


# --- implementation -----------------------------------------------------------------

_SPACE = " \t\r\f\v"
_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9\u0080-\U0010ffff]*)?\$")
_VARIABLE_NAME = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9\u0080-\U0010ffff]*")
_CONTINUATION = re.compile(r"\\\r?\n")


def _ident_start(c: str) -> bool:
    return c.isalpha() or c == "_" if c.isascii() else True


def _ident_char(c: str) -> bool:
    return c.isalnum() or c in "_$" if c.isascii() else True


def _name_char(c: str) -> bool:
    return c.isalnum() or c == "_" if c.isascii() else True


@dataclass
class _Statement:
    start: int
    end: int
    literals: list[tuple[int, int]]  # quotes and comments: [start, end) in the text
    words: list[str]  # code words starting with a letter, upper-cased


class _FunctionBody:
    """psqlscan.l's heuristic for ``CREATE [OR REPLACE] {FUNCTION|PROCEDURE} ... BEGIN
    ATOMIC ... END``: semicolons inside the body do not end the statement."""

    def __init__(self) -> None:
        self.firsts: list[str] = []  # first letters of the statement's first four words
        self.depth = 0

    def word(self, word: str, paren_depth: int) -> None:
        if len(self.firsts) < 4:
            known = word in ("CREATE", "FUNCTION", "PROCEDURE", "OR", "REPLACE")
            self.firsts.append(word[0] if known else "")
        head = "".join(f or "-" for f in self.firsts)
        if paren_depth or not (head.startswith(("CF", "CP", "COR")) and
                               (not head.startswith("COR") or head[3:4] in ("F", "P"))):
            return
        if word == "BEGIN" or (word == "CASE" and self.depth >= 1):
            self.depth += 1
        elif word == "END" and self.depth > 0:
            self.depth -= 1


class _Parser:
    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.commands: list[Command] = []
        self.defined = set(BUILTIN_VARIABLES)
        self.in_tx_since: int | None = None  # line of the open BEGIN
        self.committed = 0
        self.rolled_back = 0

    def line_at(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    def fail(self, line: int, what: str) -> ScriptError:
        return ScriptError(f"{self.name}:{line}: {what}")

    def fail_at(self, offset: int, what: str) -> ScriptError:
        return self.fail(self.line_at(offset), what)

    def parse(self) -> Script:
        text, pos = self.text, 0
        while pos < len(text):
            c = text[pos]
            if c in _SPACE or c == "\n":
                pos += 1
            elif text.startswith("--", pos):
                pos = self.end_of_line(pos)
            elif c == "\\":
                pos = self.meta_command(pos)
            else:
                pos = self.sql_command(pos)
        if not self.commands:
            raise self.fail(1, "empty script: no SQL command, \\set or \\sleep; " + SUPPORTED)
        if self.in_tx_since is not None:
            raise self.fail(self.in_tx_since, "BEGIN is never closed by COMMIT or ROLLBACK "
                            "(pgbench aborts the client at the end of the script)")
        return Script(self.name, tuple(self.commands), self.committed, self.rolled_back)

    def end_of_line(self, pos: int) -> int:
        end = self.text.find("\n", pos)
        return len(self.text) if end < 0 else end

    # --- SQL ---

    def sql_command(self, start: int) -> int:
        text, i = self.text, start
        stmt = _Statement(start, len(text), [], [])
        depth = 0
        body = _FunctionBody()
        e_prefix_end = -1  # end of a lone E/e word: an E'...' string follows
        while i < len(text):
            c = text[i]
            if c == "'":
                j = self.skip_quoted(i, "'", backslash=i == e_prefix_end)
            elif c == '"':
                j = self.skip_quoted(i, '"', backslash=False)
            elif c == "$" and (m := _DOLLAR_QUOTE.match(text, i)):
                close = text.find(m.group(), m.end())
                if close < 0:
                    raise self.fail_at(i, f"unterminated dollar-quoted string {m.group()}")
                j = close + len(m.group())
            elif text.startswith("--", i):
                j = self.end_of_line(i)
            elif text.startswith("/*", i):
                j = self.skip_block_comment(i)
            else:
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth = max(0, depth - 1)
                elif c == ";" and depth == 0 and body.depth == 0:
                    stmt.end = i + 1
                    break
                elif c == "\\":
                    if text[i + 1:i + 2] in (";", ":"):
                        raise self.fail_at(i, f"\\{text[i + 1]} inside SQL is not supported "
                                        "(one statement per command); " + SUPPORTED)
                    stmt.end = i  # the SQL so far is a command; the meta-command follows
                    break
                elif c.isdigit() or _ident_start(c):
                    j = i + 1
                    while j < len(text) and _ident_char(text[j]):
                        j += 1
                    if _ident_start(c):
                        stmt.words.append(text[i:j].upper())
                        body.word(stmt.words[-1], depth)
                        if j - i == 1 and c in "eE":
                            e_prefix_end = j
                    i = j
                    continue
                i += 1
                continue
            stmt.literals.append((i, j))
            i = j
        self.add_sql(stmt)
        return stmt.end

    def skip_quoted(self, start: int, quote: str, *, backslash: bool) -> int:
        text, j = self.text, start + 1
        while j < len(text):
            c = text[j]
            if backslash and c == "\\":
                j += 2
            elif c == quote:
                if text.startswith(quote, j + 1):
                    j += 2  # a doubled quote stands for itself
                else:
                    return j + 1
            else:
                j += 1
        what = "quoted identifier" if quote == '"' else "quoted string"
        raise self.fail_at(start, f"unterminated {what} starting here")

    def skip_block_comment(self, start: int) -> int:
        text, j, depth = self.text, start + 2, 1
        while depth:
            opening, closing = text.find("/*", j), text.find("*/", j)
            if closing < 0:
                raise self.fail_at(start, "unterminated /* comment starting here")
            if 0 <= opening < closing:
                depth, j = depth + 1, opening + 2
            else:
                depth, j = depth - 1, closing + 2
        return j

    def add_sql(self, stmt: _Statement) -> None:
        sql = self.text[stmt.start:stmt.end]
        line = self.line_at(stmt.start)
        if not stmt.words:
            raise self.fail(line, f"no SQL keyword in statement {sql.strip()!r}")
        parts: list[str] = []
        names: list[str] = []
        last = 0
        for offset, end, name in _variable_refs(sql):
            absolute = stmt.start + offset
            if any(s <= absolute < e for s, e in stmt.literals):
                if name in self.defined:
                    raise self.fail_at(
                        absolute, f":{name} inside a quoted string, quoted identifier or "
                        "comment: pgbench substitutes it there only with -M simple and fails "
                        "with -M extended/prepared; supported: variables in SQL code")
                continue  # not a variable: left as written, as pgbench -M simple leaves it
            self.require_defined(name, line, hint=True)
            parts.append(sql[last:offset])
            names.append(name)
            last = end
        parts.append(sql[last:])
        if len(names) > MAX_PARAMETERS:
            raise self.fail(line, f"statement has too many variables (maximum is "
                            f"{MAX_PARAMETERS})")
        words = stmt.words
        if words[0] == "COPY" and {"STDIN", "STDOUT"} & set(words):
            raise self.fail(line, "COPY FROM STDIN / TO STDOUT is not supported (pgbench "
                            "aborts on it); " + SUPPORTED)
        tx = self.transaction_role(words, line)
        self.commands.append(SqlCommand(len(self.commands), line, sql, tuple(parts),
                                        tuple(names), tx))

    def transaction_role(self, words: list[str], line: int) -> TxRole:
        first, rest = words[0], words[1:4]
        kind = None
        if first == "BEGIN" or (first == "START" and rest[:1] == ["TRANSACTION"]):
            kind = TxRole.BEGIN
        elif first in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            if rest[:1] == ["PREPARED"]:
                raise self.fail(line, f"{first} PREPARED (two-phase commit) is not supported; "
                                + SUPPORTED)
            if "CHAIN" in rest and "NO" not in rest:
                raise self.fail(line, f"{first} AND CHAIN is not supported; " + SUPPORTED)
            savepoint = "TO" in rest[:2]
            if savepoint and self.in_tx_since is None:
                raise self.fail(line, "ROLLBACK TO SAVEPOINT outside a transaction")
            if not savepoint:
                kind = TxRole.COMMIT if first in ("COMMIT", "END") else TxRole.ROLLBACK
        elif first == "PREPARE" and rest[:1] == ["TRANSACTION"]:
            raise self.fail(line, "PREPARE TRANSACTION (two-phase commit) is not supported; "
                            + SUPPORTED)
        if kind is TxRole.BEGIN:
            if self.in_tx_since is not None:
                raise self.fail(line, f"BEGIN inside the transaction opened at line "
                                f"{self.in_tx_since}")
            self.in_tx_since = line
        elif kind in (TxRole.COMMIT, TxRole.ROLLBACK):
            if self.in_tx_since is None:
                raise self.fail(line, f"{first} without BEGIN")
            self.in_tx_since = None
            if kind is TxRole.COMMIT:
                self.committed += 1
            else:
                self.rolled_back += 1
        elif self.in_tx_since is not None:
            kind = TxRole.IN_TRANSACTION
        else:
            kind = TxRole.AUTOCOMMIT
            self.committed += 1
        return kind

    def require_defined(self, name: str, line: int, *, hint: bool = False) -> None:
        if name in self.defined:
            return
        extra = (" (an array slice a[lo:hi] needs a space after the colon: a[lo: hi])"
                 if hint else "")
        raise self.fail(line, f"undefined variable :{name}: set it with \\set earlier in "
                        f"the script, or use a built-in ({', '.join(BUILTIN_VARIABLES)}){extra}")

    # --- meta-commands ---

    def word(self, pos: int) -> tuple[str | None, int]:
        """pgbench's ``expr_lex_one_word``: the next whitespace-separated word of a
        backslash command, or None at the end of its line."""
        text = self.text
        while pos < len(text):
            if text[pos] in _SPACE:
                pos += 1
            elif m := _CONTINUATION.match(text, pos):
                pos = m.end()
            else:
                break
        if pos >= len(text) or text[pos] == "\n":
            return None, pos
        start = pos
        while pos < len(text) and text[pos] not in _SPACE and text[pos] != "\n":
            if _CONTINUATION.match(text, pos):
                break
            pos += 1
        return text[start:pos], pos

    def logical_line_end(self, pos: int) -> int:
        while (m := _CONTINUATION.search(self.text, pos)) and m.start() < self.end_of_line(pos):
            pos = m.end()
        return self.end_of_line(pos)

    def meta_command(self, start: int) -> int:
        line = self.line_at(start)
        word, pos = self.word(start + 1)
        if word is None:
            return pos + 1  # a lone backslash: pgbench ignores it
        name = word.lower()
        if name == "set":
            return self.set_command(start, line, pos)
        if name == "sleep":
            return self.sleep_command(line, pos)
        if name in UNSUPPORTED_META:
            raise self.fail(line, f"\\{word} is not supported ({UNSUPPORTED_META[name]}); "
                            + SUPPORTED)
        raise self.fail(line, f"unknown meta-command \\{word}; " + SUPPORTED)

    def set_command(self, start: int, line: int, pos: int) -> int:
        var, pos = self.word(pos)
        if var is None:
            raise self.fail(line, "\\set: missing variable name; supported: \\set name expr")
        if not _VARIABLE_NAME.fullmatch(var):
            raise self.fail(line, f'\\set: invalid variable name "{var}" (letters, digits and '
                            "_, not starting with a digit)")
        end = self.logical_line_end(pos)
        source = self.text[pos:end]
        try:
            expr = parse_expr(source)
        except ExprSyntaxError as exc:
            column = pos + exc.column - self.text.rfind("\n", 0, start)
            raise self.fail(line, f"\\set {var}: {exc} (column {column})") from None
        for name in variables_of(expr):
            self.require_defined(name, line)
        try:
            expr = fold(expr, {})
        except ScriptRuntimeError as exc:
            raise self.fail(line, f"\\set {var}: {exc}") from None
        self.commands.append(SetCommand(len(self.commands), line, var, expr, source.strip()))
        self.defined.add(var)
        return end + 1

    def sleep_command(self, line: int, pos: int) -> int:
        args: list[str] = []
        while True:
            word, pos = self.word(pos)
            if word is None:
                break
            args.append(word)
        usage = "supported: \\sleep n [us|ms|s], n an integer or :variable"
        if not args:
            raise self.fail(line, f"\\sleep: missing argument; {usage}")
        if len(args) > 2:
            raise self.fail(line, f"\\sleep: too many arguments; {usage}")
        amount: int | None = None
        variable: str | None = None
        unit = args[1] if len(args) == 2 else None
        if args[0].startswith(":"):
            variable = args[0][1:]
            self.require_defined(variable, line)
        else:
            m = re.fullmatch(r"([+-]?[0-9]+)(.*)", args[0])
            if m is None or (m.group(2) and unit is not None):
                raise self.fail(line, f'\\sleep: invalid sleep time "{args[0]}", must be an '
                                f"integer; {usage}")
            amount = int(m.group(1))
            unit = m.group(2) or unit
        unit = (unit or "s").lower()
        if unit not in ("us", "ms", "s"):
            raise self.fail(line, f'\\sleep: unrecognized time unit "{unit}", must be us, ms '
                            "or s")
        command = SleepCommand(len(self.commands), line, amount, variable, unit)
        if amount is not None and abs(amount * command.unit_us) > INT_MAX:
            raise self.fail(line, f"\\sleep: {amount} {unit} is out of range (pgbench sleeps "
                            f"at most {INT_MAX} us)")
        self.commands.append(command)
        return self.end_of_line(pos) + 1


def _variable_refs(sql: str) -> list[tuple[int, int, str]]:
    """pgbench's ``parseVariable`` scan: every ``:name`` as (start, end, name); a run of
    colons not followed by a name (``::int``) is skipped."""
    refs: list[tuple[int, int, str]] = []
    pos = sql.find(":")
    while pos >= 0:
        if pos + 1 < len(sql) and _ident_start(sql[pos + 1]):
            end = pos + 2
            while end < len(sql) and _name_char(sql[end]):
                end += 1
            refs.append((pos, end, sql[pos + 1:end]))
            pos = sql.find(":", end)
        else:
            while pos < len(sql) and sql[pos] == ":":
                pos += 1
            pos = sql.find(":", pos)
    return refs

