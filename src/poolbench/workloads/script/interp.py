"""One client's run of a script, without I/O: what to send and how long to sleep.

:class:`ScriptRunner` compiles a parsed script once, for one client, into one Python
function: each ``\\set`` becomes an expression over local variables (typed fast paths
where the types are known, pgbench's full semantics otherwise), each SQL command a
step whose SQL text is fixed (placeholders) or joined from the values (``-M simple``).
A run returns the whole list of steps: every ``\\set`` of the run is evaluated before
the first statement is sent, so a failing expression raises before the run touches the
database (pgbench would have sent the statements before it; nothing else differs, as
no statement's result feeds a variable). A sync or async caller drives the list:

    for step in runner.run():
        if type(step) is SleepStep:
            time.sleep(step.seconds)
        else:
            cursor.execute(step.sql, step.params)  # step.index: the command, for -r

Random functions draw from a ``random.Random`` per client, seeded from
``(seed, client_id)``: runs are reproducible, but they are not pgbench's draws (pgbench
uses its own generator); the distributions are pgbench's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import NamedTuple

from poolbench.workloads.script import functions as fn
from poolbench.workloads.script.errors import ScriptError, ScriptRuntimeError
from poolbench.workloads.script.expr import (
    INT64_MAX,
    INT64_MIN,
    RANDOM_FUNCTIONS,
    Call,
    Const,
    Expr,
    Value,
    Var,
)
from poolbench.workloads.script.parser import (
    BUILTIN_VARIABLES,
    INT_MAX,
    ParamStyle,
    Script,
    SetCommand,
    SleepCommand,
    SqlCommand,
)


class SqlStep(NamedTuple):
    """Send ``sql`` with ``params`` (empty with ``ParamStyle.SIMPLE``)."""

    sql: str
    params: tuple[Value, ...] | tuple[str, ...]
    index: int  # the command's position in Script.commands


class SleepStep(NamedTuple):
    """Wait ``seconds`` (a ``\\sleep``; 0 for a negative one, as pgbench)."""

    seconds: float
    index: int


Step = SqlStep | SleepStep


def default_seed_of(seed: int) -> int:
    """``:default_seed`` (the seed ``hash()`` takes when given none) of a run seeded
    ``seed``: the same for every client and trial of that run."""
    return fn.wrap64(random.Random(f"{seed}/default_seed").getrandbits(64))


class ScriptRunner:
    """Runs ``script`` as client ``client_id`` (pgbench's ``:client_id``, from 0) at
    ``scale`` (``:scale``). ``seed`` seeds this client's random functions together with
    ``client_id``, and is ``:random_seed``; ``default_seed`` (``:default_seed``, the
    seed of ``hash(x)``) is the same for every client of a run, derived from ``seed``
    unless given. ``params_as_text`` sends values in pgbench's text form (``'42'``)
    instead of Python ints, floats and bools.

    Constructing compiles the script (a few milliseconds); :meth:`run` then costs well
    under a microsecond per statement plus the random draws. Not thread-safe: one
    runner per client."""

    def __init__(self, script: Script, *, client_id: int, scale: int, seed: int,
                 style: ParamStyle = ParamStyle.DOLLAR, params_as_text: bool = False,
                 default_seed: int | None = None) -> None:
        self.script = script
        self.style = style
        self.rng = random.Random(f"{seed}/{client_id}")
        if default_seed is None:
            default_seed = default_seed_of(seed)
        self.variables: dict[str, Value] = {
            "client_id": client_id, "scale": scale, "default_seed": default_seed,
            "random_seed": fn.wrap64(seed)}
        self.sql: tuple[str | None, ...] = tuple(
            c.render(style) if isinstance(c, SqlCommand) and style is not ParamStyle.SIMPLE
            else None for c in script.commands)
        self._run = _Compiler(self, params_as_text).compile()

    def run(self) -> list[Step]:
        """The steps of one run of the script. Raises ScriptRuntimeError (``file:line``)
        when an expression fails."""
        return self._run()


# --- compilation --------------------------------------------------------------------

_INT = frozenset({int})
_DOUBLE = frozenset({float})
_BOOL = frozenset({bool})
_NULL = frozenset({type(None)})
_NUMERIC_OPS = {"+": "+", "-": "-", "*": "*"}
_COMPARISONS = {"=": "==", "<>": "!=", "<=": "<=", "<": "<"}
_INT_RESULT = {"mod", "int", "hash_murmur2", "hash_fnv1a", "&", "|", "#", "<<", ">>",
               *RANDOM_FUNCTIONS}
_DOUBLE_RESULT = {"double", "sqrt", "ln", "exp", "pow", "pi"}
_BOOL_RESULT = {"=", "<>", "<=", "<", "!not", "!is", "!and", "!or"}
_OVERFLOW = {"+": "add", "-": "sub", "*": "mul"}


def _numeric_types(types: list[frozenset[type]]) -> frozenset[type]:
    """The type of an overloaded operator: int if all ints, double if any is surely a
    double, either when it depends."""
    if all(t <= _INT | _NULL for t in types):
        return _INT
    if any(t <= _DOUBLE | _NULL and float in t for t in types):
        return _DOUBLE
    return _INT | _DOUBLE


class _Compiler:
    def __init__(self, runner: ScriptRunner, params_as_text: bool) -> None:
        self.runner = runner
        self.script = runner.script
        self.params_as_text = params_as_text
        assigned = {c.variable for c in self.script.commands if isinstance(c, SetCommand)}
        # built-ins the script never assigns are constants: folded into expressions
        self.constants = {k: v for k, v in runner.variables.items() if k not in assigned}
        self.rng = runner.rng
        self.ns: dict[str, object] = {
            "_rng": self.rng, "_randrange": self.rng.randrange, "_tnew": tuple.__new__,
            "_SQL": SqlStep, "_SLEEP": SleepStep, "_apply": fn.apply, "_Error": ScriptRuntimeError,
            "_overflow": _overflow, "_idiv": fn.int_div, "_imod": fn.int_mod,
            "_fdiv": fn.double_div, "_to_int": fn.to_int, "_to_bool": fn.to_bool,
            "_abs": fn.c_abs, "_murmur2": fn.hash_murmur2, "_fnv1a": fn.hash_fnv1a,
            "_text": fn.value_text, "_random_call": fn.random_call,
            "_gaussian": fn.gaussian, "_exponential": fn.exponential, "_zipfian": fn.zipfian,
            "_and_rhs": _and_rhs, "_sleep_seconds": _sleep_seconds, "_fail": self.located,
        }
        self.locals: dict[str, tuple[str, frozenset[type]]] = {}
        self.counter = 0
        self.body: list[str] = []
        self.where: dict[int, str] = {}

    def located(self, index: int, exc: Exception) -> ScriptRuntimeError:
        return ScriptRuntimeError(f"{self.where.get(index, self.script.name)}: {exc}")

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"_{stem}{self.counter}"

    def constant(self, value: object) -> str:
        name = self.fresh("k")
        self.ns[name] = value
        return name

    def compile(self) -> Callable[[], list[Step]]:
        steps: list[str] = []
        for name in BUILTIN_VARIABLES:
            if name not in self.constants:  # assigned somewhere: a local from the start
                local = self.fresh("v")
                self.body.append(f"{local} = {self.constant(self.runner.variables[name])}")
                self.locals[name] = (local, _INT)
        for command in self.script.commands:
            if isinstance(command, SetCommand):
                self.set_command(command)
            elif isinstance(command, SleepCommand):
                steps.append(self.sleep_step(command))
            else:
                steps.append(self.sql_step(command))
        lines = ["def _execute():", "    _cur = -1", "    try:"]
        lines += [f"        {line}" for line in self.body]
        lines += [f"        return [{', '.join(steps)}]",
                  "    except (_Error, ArithmeticError, ValueError) as exc:",
                  "        raise _fail(_cur, exc) from None"]
        code = compile("\n".join(lines), f"<script {self.script.name}>", "exec")
        exec(code, self.ns)  # source built above from the parsed script, never from raw text
        return self.ns["_execute"]  # type: ignore[return-value]

    def set_command(self, command: SetCommand) -> None:
        label = f"{self.script.name}:{command.line}: \\set {command.variable}"
        self.where[command.index] = label
        try:
            expr = fn.fold(command.expr, self.constants)
        except ScriptRuntimeError as exc:
            raise ScriptError(f"{label}: {exc}") from None
        src, types = self.expr(expr)
        local = self.fresh("v")
        self.body += [f"_cur = {command.index}", f"{local} = {src}"]
        self.locals[command.variable] = (local, types)

    def sleep_step(self, command: SleepCommand) -> str:
        label = f"{self.script.name}:{command.line}: \\sleep"
        self.where[command.index] = label
        if command.amount is not None:
            seconds = max(command.amount * command.unit_us, 0) / 1e6
            return self.constant(SleepStep(seconds, command.index))
        assert command.variable is not None
        src, _ = self.expr(fn.fold(Var(command.variable), self.constants))
        local = self.fresh("s")
        self.body += [f"_cur = {command.index}",
                      f"{local} = _sleep_seconds({src}, {command.unit_us})"]
        return f"_tnew(_SLEEP, ({local}, {command.index}))"

    def sql_step(self, command: SqlCommand) -> str:
        values = [self.expr(fn.fold(Var(name), self.constants)) for name in command.variables]
        if self.runner.style is ParamStyle.SIMPLE:
            if not values:
                return self.constant(SqlStep(command.sql, (), command.index))
            pieces = [self.constant(command.parts[0])]
            for (src, types), part in zip(values, command.parts[1:]):
                pieces += [_as_text(src, types), self.constant(part)]
            return f"_tnew(_SQL, (''.join(({', '.join(pieces)},)), (), {command.index}))"
        sql = self.runner.sql[command.index]
        if not values:
            return self.constant(SqlStep(sql or "", (), command.index))
        params = [_as_text(src, types) if self.params_as_text else src for src, types in values]
        return f"_tnew(_SQL, ({self.constant(sql)}, ({', '.join(params)},), {command.index}))"

    # --- expressions: (Python source, the set of possible result types) ---

    def expr(self, node: Expr) -> tuple[str, frozenset[type]]:
        if isinstance(node, Const):
            return self.const(node.value)
        if isinstance(node, Var):
            return self.locals[node.name]
        return self.call(node)

    def const(self, value: Value) -> tuple[str, frozenset[type]]:
        if value is None:
            return "None", _NULL
        if type(value) is bool:
            return repr(value), _BOOL
        if type(value) is int:
            return f"({value})", _INT
        assert isinstance(value, float)
        return (f"({value!r})" if math.isfinite(value) else self.constant(value)), _DOUBLE

    def call(self, node: Call) -> tuple[str, frozenset[type]]:
        func = node.func
        if func == "!case":
            return self.case(node.args)
        if func in ("!and", "!or"):
            return self.logical(func, node.args)
        compiled = [self.expr(a) for a in node.args]
        srcs = [s for s, _ in compiled]
        types = [t for _, t in compiled]
        if func == "!is":  # its right side is always a NULL or boolean constant
            value = node.args[1].value if isinstance(node.args[1], Const) else None
            return f"({srcs[0]} is {value!r})", _BOOL
        exact = [next(iter(t)) if len(t) == 1 else None for t in types]
        if all(t in (int, float) for t in exact):
            fast = self.fast(node, srcs, exact)
            if fast is not None:
                return fast
        return (f"_apply({func!r}, ({', '.join(srcs)},), _rng)",
                _result_types(func, types))

    def fast(self, node: Call, a: list[str], t: list[type | None]
             ) -> tuple[str, frozenset[type]] | None:
        """Inline code when every argument's type is known and none is NULL."""
        func, all_int = node.func, all(x is int for x in t)
        if func in _NUMERIC_OPS:
            if not all_int:
                return f"({a[0]} {_NUMERIC_OPS[func]} {a[1]})", _DOUBLE
            tmp = self.fresh("t")
            return (f"({tmp} if {INT64_MIN - 1} < ({tmp} := {a[0]} {_NUMERIC_OPS[func]} "
                    f"{a[1]}) < {INT64_MAX + 1} else _overflow({_OVERFLOW[func]!r}))", _INT)
        if func == "/":
            return (f"_idiv({a[0]}, {a[1]})", _INT) if all_int else (
                f"_fdiv({a[0]}, {a[1]})", _DOUBLE)
        if func == "mod" and all_int:
            return f"_imod({a[0]}, {a[1]})", _INT
        if func in _COMPARISONS:
            if all_int:
                return f"({a[0]} {_COMPARISONS[func]} {a[1]})", _BOOL
            x, y = (f"float({s})" if k is int else s for s, k in zip(a, t))
            return f"({x} {_COMPARISONS[func]} {y})", _BOOL
        if func in ("hash_murmur2", "hash_fnv1a") and all_int:
            return f"_{func.split('_')[1]}({a[0]}, {a[1]})", _INT
        if func == "int":
            return (a[0], _INT) if all_int else (f"_to_int({a[0]})", _INT)
        if func == "double":
            return (f"float({a[0]})", _DOUBLE) if all_int else (a[0], _DOUBLE)
        if func == "abs":
            return f"_abs({a[0]})", _INT if all_int else _DOUBLE
        if func in RANDOM_FUNCTIONS and t[0] is int and t[1] is int:
            return self.random(node, a)
        return None

    def random(self, node: Call, a: list[str]) -> tuple[str, frozenset[type]]:
        lb, ub = node.args[0], node.args[1]
        constant_range = isinstance(lb, Const) and isinstance(ub, Const)
        if node.func == "random":
            if constant_range:  # checked by fold(): lb <= ub, no overflow
                assert isinstance(lb.value, int) and isinstance(ub.value, int)
                return f"({lb.value} + _randrange({ub.value - lb.value + 1}))", _INT
            return f"_random_call(_rng, 'random', ({a[0]}, {a[1]}))", _INT
        param = node.args[2]
        if constant_range and isinstance(param, Const):  # all checked by fold()
            function = node.func.removeprefix("random_")
            return f"_{function}(_rng, {a[0]}, {a[1]}, {fn.to_double(param.value)!r})", _INT
        return f"_random_call(_rng, {node.func!r}, ({a[0]}, {a[1]}, {a[2]}))", _INT

    def case(self, args: tuple[Expr, ...]) -> tuple[str, frozenset[type]]:
        compiled = [self.expr(a) for a in args]
        src, types = compiled[-1]
        for i in range(len(args) - 3, -1, -2):  # innermost WHEN first
            (cond, _), (then, then_types) = compiled[i], compiled[i + 1]
            src, types = f"({then} if {cond} else {src})", types | then_types
        return src, types  # Python's truth of None, bool, int, float is pgbench's valueTruth

    def logical(self, func: str, args: tuple[Expr, ...]) -> tuple[str, frozenset[type]]:
        (left, left_types), (right, right_types) = (self.expr(a) for a in args)
        if left_types == _BOOL and right_types == _BOOL:
            return f"({left} {'and' if func == '!and' else 'or'} {right})", _BOOL
        tmp = self.fresh("t")
        if func == "!and":
            src = f"(None if ({tmp} := {left}) is None else (_and_rhs({right}) " \
                  f"if _to_bool({tmp}) else False))"
        else:
            src = f"(None if ({tmp} := {left}) is None else (True " \
                  f"if _to_bool({tmp}) else _and_rhs({right})))"
        return src, _BOOL | _NULL


def _result_types(func: str, types: list[frozenset[type]]) -> frozenset[type]:
    if func in _BOOL_RESULT:
        result = _BOOL
    elif func in _INT_RESULT:
        result = _INT
    elif func in _DOUBLE_RESULT:
        result = _DOUBLE
    elif func == "abs":
        result = types[0] - _NULL or _INT
    else:  # + - * / least greatest
        result = _numeric_types(types)
    return result | _NULL if any(type(None) in t for t in types) else result


def _as_text(src: str, types: frozenset[type]) -> str:
    return f"str({src})" if types == _INT else f"_text({src})"


def _overflow(op: str) -> int:
    raise ScriptRuntimeError(f"bigint {op} out of range")


def _and_rhs(value: Value) -> bool | None:
    return None if value is None else fn.to_bool(value)


def _sleep_seconds(value: Value, unit_us: int) -> float:
    """pgbench's ``evaluateSleep`` on a variable: ``atoi`` of its text, an error when
    that text does not start with a digit and reads as 0."""
    text = fn.value_text(value)
    digits = len(text) - len(text.lstrip("+-"))
    sign, rest = text[:digits], text[digits:]
    count = len(rest) - len(rest.lstrip("0123456789"))
    amount = int(sign[-1:] + rest[:count]) if count and len(sign) <= 1 else 0
    if amount == 0 and not text[:1].isdigit():
        raise ScriptRuntimeError(f'invalid sleep time "{text}"')
    usec = amount * unit_us
    if abs(usec) > INT_MAX:
        raise ScriptRuntimeError(f"sleep of {usec} us is out of range "
                                 f"(pgbench sleeps at most {INT_MAX} us)")
    return max(usec, 0) / 1e6
