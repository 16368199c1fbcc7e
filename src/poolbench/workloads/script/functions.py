"""What pgbench's expression functions compute, and constant folding.

Values are Python's ``int`` (pgbench's int64), ``float`` (double), ``bool`` and ``None``
(NULL). Every function follows pgbench.c's ``evalStandardFunc``/``evalLazyFunc``
(PostgreSQL 16): integer arithmetic is checked int64 with C's truncating ``/`` and
``%``, an operator is computed in double when either operand is a double, a NULL
argument makes the result NULL (except ``IS``), doubles follow IEEE as C does
(``1.0 / 0`` is infinity, ``sqrt(-1)`` NaN: never a Python exception).

Errors raise :class:`ScriptRuntimeError` without a location; the parser and the
interpreter add ``file:line``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from poolbench.workloads.script.errors import ScriptRuntimeError
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

_U64 = (1 << 64) - 1
_TWO63 = 9.223372036854775808e18  # 2**63 as a double: FLOAT8_FITS_IN_INT64's bound

MIN_GAUSSIAN_PARAM = 2.0
MIN_ZIPFIAN_PARAM = 1.001
MAX_ZIPFIAN_PARAM = 1000.0

# pgbench.c's hashing constants
FNV_PRIME = 0x100000001B3
FNV_OFFSET_BASIS = 0xCBF29CE484222325
MM2_MUL = 0xC6A4A7935BD1E995
MM2_MUL_TIMES_8 = 0x35253C9ADE8F4CA8
MM2_ROT = 47


# --- values -------------------------------------------------------------------------

def type_name(value: Value) -> str:
    """pgbench's ``valueTypeName``."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    return "int" if type(value) is int else "double"


def value_text(value: Value) -> str:
    """A value in pgbench's string form (``getVariable``): what ``-M simple`` inserts
    into the SQL text and ``-M extended`` sends as a text parameter."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        return f"{value:.15g}"  # C's "%.*g" with DBL_DIG
    if kind is bool:
        return "true" if value else "false"
    return "NULL"


def to_int(value: Value) -> int:
    """pgbench's ``coerceToInt``: a double is rounded half-to-even (``rint``)."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[return-value]
    if kind is float:
        if value != value or not -_TWO63 <= value < _TWO63:  # type: ignore[operator]
            raise ScriptRuntimeError(f"double to int overflow for {value:f}")
        return round(value)  # type: ignore[arg-type]
    raise ScriptRuntimeError(f"cannot coerce {type_name(value)} to int")


def to_double(value: Value) -> float:
    """pgbench's ``coerceToDouble``."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        return float(value)  # type: ignore[arg-type]
    raise ScriptRuntimeError(f"cannot coerce {type_name(value)} to double")


def to_bool(value: Value) -> bool:
    """pgbench's ``coerceToBool``: only a boolean is a boolean."""
    if type(value) is bool:
        return value  # type: ignore[return-value]
    raise ScriptRuntimeError(f"cannot coerce {type_name(value)} to boolean")


def truth(value: Value) -> bool:
    """pgbench's ``valueTruth`` (for CASE): NULL and zero are false."""
    return bool(value)


def wrap64(value: int) -> int:
    """Two's complement wrap-around of an unbounded int to int64."""
    value &= _U64
    return value - (1 << 64) if value > INT64_MAX else value


def checked(value: int, op: str) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise ScriptRuntimeError(f"bigint {op} out of range")


# --- operators ----------------------------------------------------------------------

def int_div(a: int, b: int) -> int:
    """C's ``/`` on int64: truncation toward zero; pgbench's checks for 0 and -1."""
    if b == 0:
        raise ScriptRuntimeError("division by zero")
    if b == -1:
        if a == INT64_MIN:
            raise ScriptRuntimeError("bigint div out of range")
        return -a
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def int_mod(a: int, b: int) -> int:
    """C's ``%`` on int64: the sign of the dividend; ``x % -1`` is 0."""
    if b == 0:
        raise ScriptRuntimeError("division by zero")
    if b == -1:
        return 0
    r = abs(a) % abs(b)
    return r if a >= 0 else -r


def double_div(a: float, b: float) -> float:
    """IEEE division, as C: dividing by zero gives an infinity or NaN, never an error."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def c_sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 or x != x else math.nan


def c_log(x: float) -> float:
    if x > 0 or x != x:
        return math.log(x)
    return -math.inf if x == 0 else math.nan


def c_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def c_pow(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except OverflowError:
        odd = y.is_integer() and int(y) % 2 == 1
        return -math.inf if x < 0 and odd else math.inf
    except ValueError:
        if x == 0.0:
            odd = y.is_integer() and int(y) % 2 == 1
            return math.copysign(math.inf, x) if odd else math.inf
        return math.nan


_ARITH_OPS = {"+": "add", "-": "sub", "*": "mul"}


def arith(func: str, a: Value, b: Value) -> Value:
    """``+ - * / = <> <= <`` on two non-NULL values: double if either is a double."""
    if type(a) is float or type(b) is float:
        x, y = to_double(a), to_double(b)
        if func == "+":
            return x + y
        if func == "-":
            return x - y
        if func == "*":
            return x * y
        if func == "/":
            return double_div(x, y)
        return _compare(func, x, y)
    i, j = to_int(a), to_int(b)
    if func in _ARITH_OPS:
        raw = i + j if func == "+" else i - j if func == "-" else i * j
        return checked(raw, _ARITH_OPS[func])
    if func == "/":
        return int_div(i, j)
    return _compare(func, i, j)


def _compare(func: str, x: float, y: float) -> bool:
    if func == "=":
        return x == y
    if func == "<>":
        return x != y
    if func == "<=":
        return x <= y
    return x < y


def bitwise(func: str, a: Value, b: Value) -> int:
    """``& | # << >>`` on int64. A shift count outside 0..63 is undefined in C; it is
    taken modulo 64, as x86-64 does."""
    i, j = to_int(a), to_int(b)
    if func == "&":
        return i & j
    if func == "|":
        return i | j
    if func == "#":
        return i ^ j
    if func == "<<":
        return wrap64(i << (j & 63))
    return i >> (j & 63)


def least_greatest(func: str, args: tuple[Value, ...]) -> Value:
    if any(type(a) is float for a in args):
        best: float = to_double(args[0])
        for arg in args[1:]:
            d = to_double(arg)
            # C's Min/Max macros, NaN included: (x < y ? x : y)
            best = (best if best < d else d) if func == "least" else (best if best > d else d)
        return best
    ibest = to_int(args[0])
    for arg in args[1:]:
        i = to_int(arg)
        ibest = (ibest if ibest < i else i) if func == "least" else (ibest if ibest > i else i)
    return ibest


def c_abs(value: Value) -> Value:
    if type(value) is int:
        return wrap64(-value) if value < 0 else value  # type: ignore[operator]
    d = to_double(value)
    return -d if d < 0.0 else d


def hash_murmur2(value: int, seed: int) -> int:
    """pgbench.c's ``getHashMurmur2`` (64-bit MurmurHash2 of one int64), bit for bit."""
    result = (seed & _U64) ^ MM2_MUL_TIMES_8
    k = value & _U64
    k = (k * MM2_MUL) & _U64
    k ^= k >> MM2_ROT
    k = (k * MM2_MUL) & _U64
    result ^= k
    result = (result * MM2_MUL) & _U64
    result ^= result >> MM2_ROT
    result = (result * MM2_MUL) & _U64
    result ^= result >> MM2_ROT
    return wrap64(result)


def hash_fnv1a(value: int, seed: int) -> int:
    """pgbench.c's ``getHashFnv1a`` (FNV-1a over the 8 bytes of an int64), bit for bit."""
    result = FNV_OFFSET_BASIS ^ (seed & _U64)
    for _ in range(8):
        result = ((result ^ (value & 0xFF)) * FNV_PRIME) & _U64
        value >>= 8  # arithmetic shift, as C's on int64
    return wrap64(result)


# --- random functions ---------------------------------------------------------------
# pgbench draws from its own PRNG (xoroshiro128**); these draw from a random.Random
# seeded per client: the distributions are pgbench's, the sequences are not.

def random_bounds(lb: Value, ub: Value) -> tuple[int, int]:
    """The int range of a random function, checked as pgbench checks it."""
    imin, imax = to_int(lb), to_int(ub)
    if imin > imax:
        raise ScriptRuntimeError("empty range given to random")
    if imax - imin + 1 > INT64_MAX:
        raise ScriptRuntimeError("random range is too large")
    return imin, imax


def check_param(func: str, param: float) -> float:
    """The distribution parameter's limits from pgbench.c."""
    if func == "random_gaussian" and param < MIN_GAUSSIAN_PARAM:
        raise ScriptRuntimeError(
            f"gaussian parameter must be at least {MIN_GAUSSIAN_PARAM:f} (not {param:f})")
    if func == "random_zipfian" and not MIN_ZIPFIAN_PARAM <= param <= MAX_ZIPFIAN_PARAM:
        raise ScriptRuntimeError(
            f"zipfian parameter must be in range [{MIN_ZIPFIAN_PARAM:.3f}, "
            f"{MAX_ZIPFIAN_PARAM:.0f}] (not {param:f})")
    if func == "random_exponential" and not param > 0.0:
        raise ScriptRuntimeError(
            f"exponential parameter must be greater than zero (not {param:f})")
    return param


def exponential(rng: random.Random, imin: int, imax: int, param: float) -> int:
    """``getExponentialRand``: the density at ``imax`` is ``exp(-param)`` times that at
    ``imin``."""
    cut = math.exp(-param)
    uniform = 1.0 - rng.random()  # in (0, 1]
    rand = -math.log(cut + (1.0 - cut) * uniform) / param
    return imin + int((imax - imin + 1) * rand)


def gaussian(rng: random.Random, imin: int, imax: int, param: float) -> int:
    """``getGaussianRand``: a normal draw cut at ``±param`` standard deviations, mapped
    onto the range; the mean is the middle of the range."""
    gauss = rng.gauss
    while True:
        stdev = gauss(0.0, 1.0)
        if -param <= stdev < param:
            break
    rand = (stdev + param) / (param * 2.0)
    return imin + int((imax - imin + 1) * rand)


def zipfian(rng: random.Random, imin: int, imax: int, s: float) -> int:
    """``getZipfianRand``/``computeIterativeZipfian``: rejection sampling (Devroye,
    p. 550), the value ``k`` of the range drawn with probability ∝ ``1/k**s``."""
    n = imax - imin + 1
    if n <= 1:
        return imin
    b = math.pow(2.0, s - 1.0)
    exponent = -1.0 / (s - 1.0)
    draw = rng.random
    while True:
        u, v = draw(), draw()
        if u == 0.0:
            continue  # C's pow gives +inf here: rejected as out of bound
        try:
            p = math.pow(u, exponent)
        except OverflowError:
            continue  # +inf in C: rejected as out of bound
        if p >= n + 1:
            continue  # floor(p) > n: out of bound (and spares a huge floor)
        x = float(math.floor(p))
        t = math.pow(1.0 + 1.0 / x, s - 1.0)
        if v * x * (t - 1.0) / (b - 1.0) <= t / b:
            return imin - 1 + int(x)


def random_call(rng: random.Random, func: str, args: tuple[Value, ...]) -> int:
    imin, imax = random_bounds(args[0], args[1])
    if func == "random":
        return imin + rng.randrange(imax - imin + 1)
    param = check_param(func, to_double(args[2]))
    if func == "random_gaussian":
        return gaussian(rng, imin, imax, param)
    if func == "random_zipfian":
        return zipfian(rng, imin, imax, param)
    return exponential(rng, imin, imax, param)


# --- evaluation ---------------------------------------------------------------------

def apply(func: str, args: tuple[Value, ...], rng: random.Random | None) -> Value:
    """One non-lazy function on evaluated arguments (``evalStandardFunc``)."""
    if func == "!is":
        a, b = args
        return type(a) is type(b) and a == b
    if any(a is None for a in args):
        return None
    if func in ("+", "-", "*", "/", "=", "<>", "<=", "<"):
        return arith(func, args[0], args[1])
    if func == "mod":
        return int_mod(to_int(args[0]), to_int(args[1]))
    if func in ("&", "|", "#", "<<", ">>"):
        return bitwise(func, args[0], args[1])
    if func == "!not":
        return not to_bool(args[0])
    if func == "pi":
        return math.pi
    if func == "abs":
        return c_abs(args[0])
    if func in ("double", "sqrt", "ln", "exp"):
        d = to_double(args[0])
        return {"double": float, "sqrt": c_sqrt, "ln": c_log, "exp": c_exp}[func](d)
    if func == "pow":
        return c_pow(to_double(args[0]), to_double(args[1]))
    if func == "int":
        return to_int(args[0])
    if func in ("least", "greatest"):
        return least_greatest(func, args)
    if func == "hash_murmur2":
        return hash_murmur2(to_int(args[0]), to_int(args[1]))
    if func == "hash_fnv1a":
        return hash_fnv1a(to_int(args[0]), to_int(args[1]))
    if func in RANDOM_FUNCTIONS:
        assert rng is not None, "a random function needs a generator"
        return random_call(rng, func, args)
    raise AssertionError(f"unknown function {func}")


def evaluate(expr: Expr, variables: Mapping[str, Value],
             rng: random.Random | None = None) -> Value:
    """Evaluate by walking the tree: the reference the compiled form is checked against,
    and how constants are folded."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Var):
        if expr.name not in variables:
            raise ScriptRuntimeError(f'undefined variable "{expr.name}"')
        return variables[expr.name]
    func, args = expr.func, expr.args
    if func == "!case":
        for i in range(0, len(args) - 1, 2):
            if truth(evaluate(args[i], variables, rng)):
                return evaluate(args[i + 1], variables, rng)
        return evaluate(args[-1], variables, rng)
    if func in ("!and", "!or"):
        first = evaluate(args[0], variables, rng)
        if first is None:
            return None
        if to_bool(first) is (func == "!or"):
            return func == "!or"
        second = evaluate(args[1], variables, rng)
        return None if second is None else to_bool(second)
    return apply(func, tuple(evaluate(a, variables, rng) for a in args), rng)


def fold(expr: Expr, constants: Mapping[str, Value]) -> Expr:
    """Replace ``constants``' variables by their values and evaluate every pure subtree
    whose inputs are all constant. Raises ScriptRuntimeError where a constant fails."""
    if isinstance(expr, Var):
        return Const(constants[expr.name]) if expr.name in constants else expr
    if isinstance(expr, Const):
        return expr
    args = tuple(fold(a, constants) for a in expr.args)
    folded = Call(expr.func, args)
    if all(isinstance(a, Const) for a in args):
        if expr.func not in RANDOM_FUNCTIONS:
            return Const(evaluate(folded, {}))
        check_random_constants(folded)
    elif expr.func in RANDOM_FUNCTIONS:
        check_random_constants(folded)
    return folded


def check_random_constants(call: Call) -> None:
    """A random function's constant bounds and parameter, checked before any run."""
    lb, ub = call.args[0], call.args[1]
    if isinstance(lb, Const) and isinstance(ub, Const):
        if lb.value is None or ub.value is None:
            return
        random_bounds(lb.value, ub.value)
    if len(call.args) == 3 and isinstance(call.args[2], Const) and call.args[2].value is not None:
        check_param(call.func, to_double(call.args[2].value))
