"""pgbench's expression language, the right-hand side of ``\\set name expr``: its syntax
tree and its parser, with the grammar, precedence and tokens of pgbench's
``exprparse.y`` and ``exprscan.l`` (PostgreSQL 16). What each function computes is in
functions.py."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

Value = int | float | bool | None


# --- the syntax tree ---------------------------------------------------------------

@dataclass(frozen=True)
class Const:
    value: Value


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Call:
    """A function or operator; ``func`` is pgbench's internal name (``+``, ``mod``,
    ``!and``, ``!case``, ``hash_murmur2``...): aliases are resolved by the parser."""

    func: str
    args: tuple[Expr, ...]


Expr = Const | Var | Call

RANDOM_FUNCTIONS = frozenset({"random", "random_exponential", "random_gaussian",
                              "random_zipfian"})


def variables_of(expr: Expr) -> list[str]:
    """The variable names an expression reads, in order of appearance."""
    if isinstance(expr, Var):
        return [expr.name]
    if isinstance(expr, Call):
        return [name for arg in expr.args for name in variables_of(arg)]
    return []


# --- lexer and parser (exprscan.l, exprparse.y) -------------------------------------

FUNCTIONS: dict[str, tuple[str, int | None]] = {
    # name: (internal name, number of arguments; None: one or more)
    "abs": ("abs", 1), "double": ("double", 1), "exp": ("exp", 1),
    "greatest": ("greatest", None), "hash": ("hash_murmur2", -2),
    "hash_fnv1a": ("hash_fnv1a", -2), "hash_murmur2": ("hash_murmur2", -2),
    "int": ("int", 1), "least": ("least", None), "ln": ("ln", 1), "mod": ("mod", 2),
    "pi": ("pi", 0), "pow": ("pow", 2), "power": ("pow", 2), "random": ("random", 2),
    "random_exponential": ("random_exponential", 3),
    "random_gaussian": ("random_gaussian", 3), "random_zipfian": ("random_zipfian", 3),
    "sqrt": ("sqrt", 1),
}
UNSUPPORTED_FUNCTIONS = {
    "debug": "it prints to pgbench's stderr",
    "permute": "it needs pgbench's own random generator to give pgbench's permutation",
}
SUPPORTED_FUNCTIONS = "supported functions: " + ", ".join(sorted(FUNCTIONS))

_KEYWORDS = {"and", "or", "not", "is", "isnull", "notnull", "case", "when", "then", "else",
             "end", "null", "true", "false"}
_TOKEN = re.compile(r"""
    (?P<space>(?:[ \t\r\f\v]|\\\r?\n)+)
  | (?P<double>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?)
  | (?P<var>:[A-Za-z0-9_\u0080-\U0010ffff]+)
  | (?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
  | (?P<op><=|>=|<>|!=|<<|>>|[-+*/%(),~&|#<>=])
""", re.VERBOSE)
_MAXINT_PLUS_ONE = "9223372036854775808"

# binding powers, lowest first (exprparse.y's %left/%right/%nonassoc lines)
_OR, _AND, _NOT, _IS, _CMP, _BIT, _ADD, _MUL = 1, 2, 3, 4, 5, 6, 7, 8
_BINARY = {"or": _OR, "and": _AND, "<": _CMP, ">": _CMP, "=": _CMP, "<=": _CMP, ">=": _CMP,
           "<>": _CMP, "!=": _CMP, "|": _BIT, "#": _BIT, "&": _BIT, "<<": _BIT, ">>": _BIT,
           "+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL}
_NONASSOC = {_CMP, _IS}


class ExprSyntaxError(Exception):
    """Internal: a message and the 0-based column of the offending token."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class _Token:
    kind: str  # int, double, maxint, var, word, keyword, op, end
    text: str
    column: int
    value: Value = None


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprSyntaxError(f"unexpected character ({text[pos]})", pos)
        kind, lexeme = m.lastgroup or "", m.group()
        if kind == "double":
            out.append(_number(lexeme, pos))
        elif kind == "word" and lexeme.lower() in _KEYWORDS:
            out.append(_Token("keyword", lexeme.lower(), pos))
        elif kind != "space":
            out.append(_Token(kind, lexeme, pos))
        pos = m.end()
    out.append(_Token("end", "", len(text)))
    return out


def _number(lexeme: str, column: int) -> _Token:
    if lexeme.isdigit():
        if lexeme == _MAXINT_PLUS_ONE:
            return _Token("maxint", lexeme, column)
        value = int(lexeme)
        if value > INT64_MAX:
            raise ExprSyntaxError(f"bigint constant overflow ({lexeme})", column)
        return _Token("int", lexeme, column, value)
    number = float(lexeme)
    # strtod's ERANGE: too large, or a nonzero constant too small for a double
    if math.isinf(number) or (number == 0.0 and any(c in "123456789"
                                                    for c in lexeme.split("e")[0].split("E")[0])):
        raise ExprSyntaxError(f"double constant overflow ({lexeme})", column)
    return _Token("double", lexeme, column, number)


class _Parser:
    """Precedence climbing over exprparse.y's grammar (same precedence and associativity)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def fail(self, what: str = "syntax error") -> ExprSyntaxError:
        tok = self.tok
        found = "end of line" if tok.kind == "end" else repr(tok.text)
        return ExprSyntaxError(f"{what} at {found}", tok.column)

    def expect(self, text: str) -> None:
        if self.tok.text != text or self.tok.kind not in ("op", "keyword"):
            raise self.fail(f"syntax error (expected {text!r})")
        self.pos += 1

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise self.fail("missing expression")
        expr = self.expr(0)
        if self.tok.kind != "end":
            raise self.fail()
        return expr

    def binary_power(self) -> int | None:
        tok = self.tok
        if tok.kind == "op" or (tok.kind == "keyword" and tok.text in ("and", "or")):
            return _BINARY.get(tok.text)
        if tok.kind == "keyword" and tok.text in ("is", "isnull", "notnull"):
            return _IS
        return None

    def expr(self, min_power: int) -> Expr:
        left = self.prefix()
        last_nonassoc = None
        while True:
            power = self.binary_power()
            if power is None or power < min_power:
                return left
            if power in _NONASSOC and power == last_nonassoc:
                raise self.fail()  # a < b < c, x IS NULL IS NULL
            op = self.take()
            if power == _IS:
                left = self.is_suffix(op, left)
            else:
                right = self.expr(power + 1)
                left = _binary(op.text, left, right)
            last_nonassoc = power if power in _NONASSOC else None

    def is_suffix(self, op: _Token, left: Expr) -> Expr:
        if op.text == "isnull":
            return Call("!is", (left, Const(None)))
        if op.text == "notnull":
            return Call("!not", (Call("!is", (left, Const(None))),))
        negate = self.tok.kind == "keyword" and self.tok.text == "not"
        if negate:
            self.pos += 1
        tok = self.take()
        if tok.kind != "keyword" or tok.text not in ("null", "true", "false"):
            self.pos -= 1
            raise self.fail("syntax error (IS needs NULL, TRUE or FALSE)")
        value = None if tok.text == "null" else tok.text == "true"
        test: Expr = Call("!is", (left, Const(value)))
        return Call("!not", (test,)) if negate else test

    def prefix(self) -> Expr:
        tok = self.take()
        if tok.kind == "op" and tok.text == "(":
            inner = self.expr(0)
            self.expect(")")
            return inner
        if tok.kind == "op" and tok.text in ("+", "-"):
            if tok.text == "-" and self.tok.kind == "maxint":
                self.pos += 1
                return Const(INT64_MIN)
            operand = self.expr(_MUL + 1)
            return operand if tok.text == "+" else Call("-", (Const(0), operand))
        if tok.kind == "op" and tok.text == "~":
            return Call("#", (Const(-1), self.expr(_BIT + 1)))
        if tok.kind == "keyword" and tok.text == "not":
            return Call("!not", (self.expr(_NOT + 1),))
        if tok.kind in ("int", "double"):
            return Const(tok.value)
        if tok.kind == "var":
            return Var(tok.text[1:])
        if tok.kind == "keyword":
            if tok.text in ("null", "true", "false"):
                return Const(None if tok.text == "null" else tok.text == "true")
            if tok.text == "case":
                return self.case()
        if tok.kind == "word":
            return self.call(tok)
        self.pos -= 1
        if tok.kind == "maxint":
            raise self.fail("bigint constant overflow")
        raise self.fail()

    def case(self) -> Expr:
        args: list[Expr] = []
        while self.tok.kind == "keyword" and self.tok.text == "when":
            self.pos += 1
            args.append(self.expr(0))
            self.expect("then")
            args.append(self.expr(0))
        if not args:
            raise self.fail("syntax error (CASE needs WHEN)")
        if self.tok.kind == "keyword" and self.tok.text == "else":
            self.pos += 1
            args.append(self.expr(0))
        else:
            args.append(Const(None))
        self.expect("end")
        return Call("!case", tuple(args))

    def call(self, name_tok: _Token) -> Expr:
        name = name_tok.text.lower()
        if self.tok.text != "(" or self.tok.kind != "op":
            raise self.fail(f"syntax error (expected '(' after {name_tok.text})")
        self.pos += 1
        args: list[Expr] = []
        if not (self.tok.kind == "op" and self.tok.text == ")"):
            args.append(self.expr(0))
            while self.tok.kind == "op" and self.tok.text == ",":
                self.pos += 1
                args.append(self.expr(0))
        self.expect(")")
        if name in UNSUPPORTED_FUNCTIONS:
            raise ExprSyntaxError(f"function {name}() is not supported "
                                  f"({UNSUPPORTED_FUNCTIONS[name]}); {SUPPORTED_FUNCTIONS}",
                                  name_tok.column)
        if name not in FUNCTIONS:
            raise ExprSyntaxError(f"unknown function {name_tok.text}(); {SUPPORTED_FUNCTIONS}",
                                  name_tok.column)
        func, nargs = FUNCTIONS[name]
        if nargs is None and not args:
            raise ExprSyntaxError(f"at least one argument expected ({name})", name_tok.column)
        if nargs == -2:  # hash: one argument and an optional seed, :default_seed by default
            if not 1 <= len(args) <= 2:
                raise ExprSyntaxError(f"unexpected number of arguments ({name})",
                                      name_tok.column)
            if len(args) == 1:
                args.append(Var("default_seed"))
        elif nargs is not None and nargs >= 0 and len(args) != nargs:
            raise ExprSyntaxError(f"unexpected number of arguments ({name})", name_tok.column)
        return Call(func, tuple(args))


def _binary(op: str, left: Expr, right: Expr) -> Expr:
    if op == ">":
        return Call("<", (right, left))
    if op == ">=":
        return Call("<=", (right, left))
    name = {"%": "mod", "!=": "<>", "and": "!and", "or": "!or"}.get(op, op)
    return Call(name, (left, right))


def parse_expr(text: str) -> Expr:
    """Parse one expression (the rest of a ``\\set`` line). Raises ExprSyntaxError."""
    return _Parser(text).parse()

