"""pgbench's script language, the subset poolbench runs: parsing as pgbench splits a file,
variables as bind parameters in three styles, ``\\set`` arithmetic with pgbench's int64 and
double semantics, pgbench's distributions and hashes, one-line ``file:line`` refusals; and
the same files run unchanged in the real pgbench, whose own output is the oracle for the
SQL text, the hashes and the built-in scripts (the embedded server's pgbench 16)."""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import secrets
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import psycopg2
import pytest

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError
from poolbench.workloads.script import (
    BUILTIN_SCRIPTS,
    ParamStyle,
    ScriptError,
    ScriptRunner,
    ScriptRuntimeError,
    SetCommand,
    SleepCommand,
    SleepStep,
    SqlCommand,
    SqlStep,
    TxRole,
    builtin_script,
    parse_script,
    parse_weighted,
)
from poolbench.workloads.script.expr import parse_expr
from poolbench.workloads.script.functions import evaluate, hash_fnv1a, hash_murmur2


def run_once(text: str, style: ParamStyle = ParamStyle.DOLLAR, **kw: int) -> list:
    script = parse_script(text, name="t.sql")
    args = {"client_id": 0, "scale": 1, "seed": 1, **kw}
    return ScriptRunner(script, style=style, **args).run()


def value_of(expression: str, **kw: int) -> object:
    """The value ``\\set v <expression>`` gives, read back from a bind parameter."""
    (step,) = run_once(f"\\set v {expression}\nSELECT :v;\n", **kw)
    return step.params[0]


# --- parsing ------------------------------------------------------------------------

TRANSACTIONS = """\
-- a comment before anything
\\set aid random(1, 1000)
SELECT 1; SELECT 2;
BEGIN ISOLATION LEVEL REPEATABLE READ;
UPDATE t SET v = v + 1
  WHERE id = :aid;   -- a comment inside
SAVEPOINT s; ROLLBACK TO SAVEPOINT s;
COMMIT;
START TRANSACTION;
SELECT 3;
ROLLBACK;
begin; end;
"""


def test_statements_split_like_pgbench_and_mark_the_transactions() -> None:
    script = parse_script(TRANSACTIONS, name="tx.sql")
    sql = [(c.line, c.sql, c.tx) for c in script.statements]
    assert sql == [
        (3, "SELECT 1;", TxRole.AUTOCOMMIT), (3, "SELECT 2;", TxRole.AUTOCOMMIT),
        (4, "BEGIN ISOLATION LEVEL REPEATABLE READ;", TxRole.BEGIN),
        (5, "UPDATE t SET v = v + 1\n  WHERE id = :aid;", TxRole.IN_TRANSACTION),
        (7, "SAVEPOINT s;", TxRole.IN_TRANSACTION),
        (7, "ROLLBACK TO SAVEPOINT s;", TxRole.IN_TRANSACTION),
        (8, "COMMIT;", TxRole.COMMIT), (9, "START TRANSACTION;", TxRole.BEGIN),
        (10, "SELECT 3;", TxRole.IN_TRANSACTION), (11, "ROLLBACK;", TxRole.ROLLBACK),
        (12, "begin;", TxRole.BEGIN), (12, "end;", TxRole.COMMIT)]
    # two autocommit statements, BEGIN..COMMIT and begin..end: 4 commits, 1 rollback
    assert (script.committed_per_run, script.rolled_back_per_run) == (4, 1)
    assert isinstance(script.commands[0], SetCommand) and script.commands[0].line == 2
    assert [c.index for c in script.commands] == list(range(len(script.commands)))


def test_semicolons_inside_quotes_comments_and_parentheses_do_not_split() -> None:
    script = parse_script(
        "SELECT ';', \"a;b\", $$x;y$$, $tag$ ; $tag$, E'\\';', /* ; /* ; */ ; */ 1;\n"
        "SELECT (1;\n2);\nSELECT 'no semicolon at the end'", name="q.sql")
    assert [c.sql for c in script.statements] == [
        "SELECT ';', \"a;b\", $$x;y$$, $tag$ ; $tag$, E'\\';', /* ; /* ; */ ; */ 1;",
        "SELECT (1;\n2);", "SELECT 'no semicolon at the end'"]


def test_a_function_body_is_one_statement_as_psql_splits_it() -> None:
    script = parse_script(
        "CREATE OR REPLACE FUNCTION pg_temp.f(x int) RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n  SELECT x;\nEND;\n"
        "CREATE TABLE begin_t (a int); SELECT 1;\n", name="f.sql")
    assert [(c.line, c.sql.split()[:2], c.tx) for c in script.statements] == [
        (1, ["CREATE", "OR"], TxRole.AUTOCOMMIT), (6, ["CREATE", "TABLE"], TxRole.AUTOCOMMIT),
        (6, ["SELECT", "1;"], TxRole.AUTOCOMMIT)]


def test_a_meta_command_ends_the_sql_before_it_and_its_own_line() -> None:
    script = parse_script("SELECT 1 \\sleep 2 ms\n\\set x 1 + \\\n 2\nSELECT :x;", name="m.sql")
    first, sleep, set_x, select = script.commands
    assert isinstance(first, SqlCommand) and first.sql == "SELECT 1 "
    assert isinstance(sleep, SleepCommand) and (sleep.amount, sleep.unit) == (2, "ms")
    assert isinstance(set_x, SetCommand) and set_x.expr.value == 3  # folded constant
    assert select.line == 4


def test_builtin_scripts_parse_with_one_transaction_each() -> None:
    for name in BUILTIN_SCRIPTS:
        script = builtin_script(name)
        assert script.committed_per_run == 1 and script.rolled_back_per_run == 0
    assert builtin_script("tpcb").name == "tpcb-like"  # pgbench's unambiguous prefix
    assert len(builtin_script("tpcb-like").statements) == 7


@pytest.mark.parametrize("arg, expected", [
    ("read.sql", ("read.sql", 1)), ("read.sql@80", ("read.sql", 80)),
    ("a@b.sql@5", ("a@b.sql", 5)), ("w.sql@0", ("w.sql", 0)), ("w.sql@+7", ("w.sql", 7))])
def test_weights_parse_as_pgbench_reads_them(arg: str, expected: tuple[str, int]) -> None:
    assert parse_weighted(arg) == expected


@pytest.mark.parametrize("arg, message", [
    ("x.sql@", "invalid weight specification"), ("x.sql@ten", "invalid weight specification"),
    ("x.sql@1.5", "invalid weight specification"), ("x.sql@-1", "out of range (0 .. "),
    ("x.sql@2147483648", "out of range"), ("@3", "no script before '@'")])
def test_bad_weights_are_refused_in_one_line(arg: str, message: str) -> None:
    with pytest.raises(ScriptError, match=re.escape(message)) as info:
        parse_weighted(arg)
    assert "\n" not in str(info.value) and str(info.value).startswith(arg)


# --- variables and the three ways of sending them -----------------------------------

PLACEHOLDERS = ("\\set id 7\n\\set r 0.25\n"
                "SELECT :id::int, '10:30' AS t, 'key:value', 5 % 3, '100%', :r, :id -- :note\n"
                "  , x::text, arr[1:2], $$ a:b $$;\n")


def test_variables_render_for_each_driver_style() -> None:
    (command,) = parse_script(PLACEHOLDERS, name="p.sql").statements
    assert command.variables == ("id", "r", "id")  # one per occurrence, as pgbench
    assert command.render(ParamStyle.DOLLAR) == (
        "SELECT $1::int, '10:30' AS t, 'key:value', 5 % 3, '100%', $2, $3 -- :note\n"
        "  , x::text, arr[1:2], $$ a:b $$;")
    assert command.render(ParamStyle.FORMAT) == (
        "SELECT %s::int, '10:30' AS t, 'key:value', 5 %% 3, '100%%', %s, %s -- :note\n"
        "  , x::text, arr[1:2], $$ a:b $$;")
    (simple,) = run_once(PLACEHOLDERS, ParamStyle.SIMPLE)
    assert simple.sql == ("SELECT 7::int, '10:30' AS t, 'key:value', 5 % 3, '100%', 0.25, 7 "
                          "-- :note\n  , x::text, arr[1:2], $$ a:b $$;")
    assert simple.params == ()
    (bound,) = run_once(PLACEHOLDERS, ParamStyle.FORMAT)
    assert bound.params == (7, 0.25, 7)
    script = parse_script(PLACEHOLDERS, name="p.sql")
    text = ScriptRunner(script, client_id=0, scale=1, seed=1, params_as_text=True).run()
    assert text[0].params == ("7", "0.25", "7")  # pgbench's text form


def test_values_are_captured_when_each_statement_runs() -> None:
    steps = run_once("\\set x 1\nSELECT :x;\n\\set x :x + 1\nSELECT :x;\n", ParamStyle.SIMPLE)
    assert [s.sql for s in steps] == ["SELECT 1;", "SELECT 2;"]


def test_builtin_variables() -> None:
    (step,) = run_once("SELECT :client_id, :scale, :random_seed, :default_seed;",
                       client_id=3, scale=10, seed=99)
    assert step.params[:3] == (3, 10, 99) and isinstance(step.params[3], int)
    other = run_once("SELECT :default_seed;", client_id=4, seed=99)[0]
    assert other.params[0] == step.params[3]  # one default seed per run, as pgbench
    steps = run_once("SELECT :scale;\n\\set scale :scale * 2\nSELECT :scale;", scale=5)
    assert [s.params for s in steps] == [(5,), (10,)]


# --- \set arithmetic -----------------------------------------------------------------

@pytest.mark.parametrize("expression, expected", [
    ("7 / 2", 3), ("-7 / 2", -3), ("7 / -2", -3), ("-7 % 2", -1), ("7 % -2", 1),
    ("mod(-9, 4)", -1), ("5 / 2.0", 2.5), ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9),
    ("-9223372036854775808", -(2 ** 63)), ("9223372036854775807 % -1", 0),
    ("int(2.5)", 2), ("int(3.5)", 4), ("int(-2.5)", -2), ("7.5 % 2", 0), ("double(3)", 3.0),
    ("abs(-3)", 3), ("abs(-2.5)", 2.5), ("greatest(1, 2.5, 0)", 2.5), ("least(3, 1, 2)", 1),
    ("1 < 2", True), ("2 >= 3", False), ("1 = 1.0", True), ("1 != 1", False),
    ("~0", -1), ("1 << 40", 1 << 40), ("-16 >> 2", -4), ("5 & 3 | 8 # 1", 8),
    ("not 1 = 2", True), ("true and null", None), ("false and null", False),
    ("null or true", None), ("true or null", True), ("null + 1", None),
    ("1 is null", False), ("null isnull", True), ("2 notnull", True), ("1 is not true", True),
    ("case when 0 then 1 when 2 then 3 end", 3), ("case when 0 then 1 end", None),
    ("1.0 / 0", math.inf), ("pow(2, 10)", 1024.0), ("sqrt(2) * sqrt(2) > 1.99", True),
    ("hash(10, 5432)", -5817877081768721676), ("hash_fnv1a(10, 5432)", -7793829335365542153),
])
def test_set_arithmetic_known_answers(expression: str, expected: object) -> None:
    value = value_of(expression)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("expression, message", [
    ("9223372036854775807 + 1", "bigint add out of range"),
    ("-9223372036854775807 - 2", "bigint sub out of range"),
    ("4611686018427387904 * 2", "bigint mul out of range"),
    ("-9223372036854775808 / -1", "bigint div out of range"),
    ("1 / 0", "division by zero"), ("1 % 0", "division by zero"),
    ("int(1e19)", "double to int overflow"), ("not 1", "cannot coerce int to boolean"),
    ("true + 1", "cannot coerce boolean to int"), ("random(5, 1)", "empty range given to random"),
    ("random_gaussian(1, 10, 1.5)", "gaussian parameter must be at least 2.000000 (not 1.500000)"),
    ("random_exponential(1, 10, 0)", "exponential parameter must be greater than zero"),
    ("random_zipfian(1, 10, 1.0)", "zipfian parameter must be in range [1.001, 1000]"),
    ("random(-9223372036854775808, 9223372036854775807)", "random range is too large"),
])
def test_failing_constants_are_refused_when_parsed_and_at_run_time(
        expression: str, message: str) -> None:
    with pytest.raises(ScriptError, match=re.escape(message)) as info:
        parse_script(f"SELECT 1;\n\\set v {expression}\n", name="c.sql")
    assert str(info.value).startswith("c.sql:2: \\set v: ")
    # the same expression over variables fails at run time, with file:line
    names = {}

    def to_var(m: re.Match[str]) -> str:
        names[f"n{len(names)}"] = m.group(0)
        return f":n{len(names) - 1}"

    over_vars = re.sub(r"-?\d+(?:\.\d+)?(?:e\d+)?|true", to_var, expression)
    text = "".join(f"\\set {k} {v}\n" for k, v in names.items())
    text += f"\\set v {over_vars}\nSELECT :v;\n"
    script = parse_script(text, name="r.sql")
    runner = ScriptRunner(script, client_id=0, scale=1, seed=1)
    with pytest.raises(ScriptRuntimeError, match=re.escape(message)) as info:
        runner.run()
    line = len(names) + 1
    assert str(info.value).startswith(f"r.sql:{line}: \\set v: ") and "\n" not in str(info.value)


def test_compiled_expressions_agree_with_the_tree_evaluator() -> None:
    """The compiled fast paths and the reference evaluator give the same values and types
    on a grid of int, double, boolean and NULL inputs."""
    inputs = {"i": -7, "j": 3, "d": 2.5, "z": 0, "b": True, "n": None, "m": -(2 ** 63)}
    expressions = [re.sub(r"\b([ijdzbnm])\b", r":\1", e) for e in (
        "i + j", "i - d", "i * j", "i / j", "i / d", "i / z", "d / z", "i % j", "d % j",
        "i < d", "i = j", "d <= i", "abs(i)", "abs(d)", "abs(m)", "int(d)", "double(i)",
        "greatest(i, d)", "least(i, j, z)", "hash(i, j)", "hash_fnv1a(i)", "i + n",
        "n is null", "b and i < j", "case when z then i else d end", "b or n", "i > j or b",
        "-m - 1", "m * -1", "i << j", "~i", "random(j, j)", "random(j, i)", "i and b",
        "random_gaussian(j, j, d)", "random_zipfian(j, j, d)", "random_exponential(i, i, z)",
        "n and b")]  # one-value ranges: the draw is known
    prefix = "".join(f"\\set {k} {'null' if v is None else str(v).lower()}\n"
                     for k, v in inputs.items())
    for expression in expressions:
        text = prefix + f"\\set v {expression}\nSELECT :v;\n"
        try:
            expected: object = evaluate(parse_expr(expression),
                                        {**inputs, "default_seed": 11}, random.Random(0))
        except ScriptRuntimeError as exc:
            expected = type(exc)
        script = parse_script(text, name="e.sql")
        runner = ScriptRunner(script, client_id=0, scale=1, seed=1, default_seed=11)
        try:
            got: object = runner.run()[0].params[0]
        except ScriptRuntimeError as exc:
            got = type(exc)
        assert (got, type(got)) == (expected, type(expected)), expression


# --- distributions -------------------------------------------------------------------

def draws(expression: str, count: int, seed: int = 2024) -> list[int]:
    script = parse_script(f"\\set v {expression}\nSELECT :v;\n", name="d.sql")
    runner = ScriptRunner(script, client_id=0, scale=1, seed=seed)
    return [runner.run()[0].params[0] for _ in range(count)]


@pytest.mark.parametrize("expression", [
    "random(1, 1000)", "random(-5, 5)", "random_exponential(1, 1000, 5.0)",
    "random_gaussian(1, 1000, 2.0)", "random_zipfian(1, 1000, 1.07)",
    "random_zipfian(-3, 3, 2.5)", "random(7, 7)", "random_gaussian(3, 3, 3)"])
def test_draws_stay_in_their_range(expression: str) -> None:
    lb, ub = (int(x) for x in re.findall(r"-?\d+", expression)[:2])
    values = draws(expression, 20_000)
    assert min(values) >= lb and max(values) <= ub
    if ub - lb < 20:
        assert set(values) == set(range(lb, ub + 1)) or "zipf" in expression


def test_uniform_draws_have_the_expected_mean_and_cover_the_range() -> None:
    values = draws("random(1, 1000)", 100_000)
    assert statistics.fmean(values) == pytest.approx(500.5, rel=0.01)
    assert min(values) == 1 and max(values) == 1000


def test_exponential_follows_pgbench_formula() -> None:
    """pgbench: P(value < min + f * n) = (1 - exp(-param * f)) / (1 - exp(-param))."""
    n, param = 1000, 5.0
    values = draws(f"random_exponential(1, {n}, {param})", 100_000)
    for f in (0.1, 0.25, 0.5):
        share = sum(v < 1 + f * n for v in values) / len(values)
        expected = (1 - math.exp(-param * f)) / (1 - math.exp(-param))
        assert share == pytest.approx(expected, abs=0.01)  # 5 sigma is 0.008


def test_gaussian_follows_pgbench_formula() -> None:
    """pgbench: a normal draw cut at ±param standard deviations over the range, so the
    middle 1/param of the range holds (PHI(1) - PHI(-1)) / (2 PHI(param) - 1) of draws."""
    n, param = 10_000, 2.5
    values = draws(f"random_gaussian(1, {n}, {param})", 100_000)
    phi = statistics.NormalDist().cdf
    lo, hi = 1 + n * (param - 1) / (2 * param), 1 + n * (param + 1) / (2 * param)
    share = sum(lo <= v < hi for v in values) / len(values)
    assert share == pytest.approx((phi(1) - phi(-1)) / (2 * phi(param) - 1), abs=0.01)
    assert statistics.fmean(values) == pytest.approx((1 + n) / 2, rel=0.01)


def test_zipfian_follows_its_law() -> None:
    """P(k) = k^-s / H(n, s) for k in 1..n."""
    n, s = 10, 1.5
    counts = Counter(draws(f"random_zipfian(1, {n}, {s})", 100_000))
    harmonic = sum(k ** -s for k in range(1, n + 1))
    for k in (1, 2, 5):
        assert counts[k] / 100_000 == pytest.approx(k ** -s / harmonic, abs=0.01)


def test_runs_are_reproducible_per_seed_and_differ_per_client() -> None:
    assert draws("random(1, 1000000)", 50) == draws("random(1, 1000000)", 50)
    assert draws("random(1, 1000000)", 50) != draws("random(1, 1000000)", 50, seed=7)
    script = parse_script("\\set v random(1, 1000000)\nSELECT :v;\n", name="d.sql")
    a, b = (ScriptRunner(script, client_id=c, scale=1, seed=5) for c in (0, 1))
    assert [a.run()[0].params for _ in range(5)] != [b.run()[0].params for _ in range(5)]


def test_hashes_match_pgbench_bit_for_bit_on_its_documented_values() -> None:
    # the examples of pgbench's documentation
    assert hash_murmur2(10, 5432) == -5817877081768721676
    assert hash_fnv1a(10, 5432) == -7793829335365542153


# --- \sleep ------------------------------------------------------------------------------

def test_sleep_units_and_variables() -> None:
    steps = run_once("\\set t 250\n\\sleep 2\n\\sleep 10 ms\n\\sleep 10ms\n\\sleep 5 US\n"
                     "\\sleep :t ms\n\\sleep -3 s\nSELECT 1;\n")
    sleeps = [s for s in steps if type(s) is SleepStep]
    assert [s.seconds for s in sleeps] == [2.0, 0.01, 0.01, 5e-06, 0.25, 0.0]
    assert [s.index for s in sleeps] == [1, 2, 3, 4, 5, 6]
    # a variable sleep takes the integer part of the value's text, as pgbench's atoi
    steps = run_once("\\set t 1.9\n\\sleep :t s\nSELECT 1;")
    assert steps[0] == SleepStep(1.0, 1)
    with pytest.raises(ScriptRuntimeError, match=r'^s\.sql:2: \\sleep: invalid sleep time "-0.5"'):
        ScriptRunner(parse_script("\\set t -0.5\n\\sleep :t\nSELECT 1;", name="s.sql"),
                     client_id=0, scale=1, seed=1).run()


# --- refusals --------------------------------------------------------------------------

REFUSALS = [
    ("SELECT 1;\n\\if :x\nSELECT 2;\n\\endif\n", 2, "\\if is not supported"),
    ("SELECT 1\n\\gset\n", 2, "\\gset is not supported"),
    ("SELECT 1;\n\\shell ls\n", 2, "\\shell is not supported"),
    ("SELECT 1;\n\\setshell x echo 1\n", 2, "\\setshell is not supported"),
    ("\\startpipeline\nSELECT 1;\n\\endpipeline\n", 1, "\\startpipeline is not supported"),
    ("SELECT 1;\n\\aset\n", 2, "\\aset is not supported"),
    ("\n\\frobnicate\n", 2, "unknown meta-command \\frobnicate"),
    ("\\set x nosuch(1)\n", 1, "unknown function nosuch()"),
    ("\\set x debug(1)\n", 1, "function debug() is not supported"),
    ("\\set x 1 +\n", 1, "\\set x: syntax error at end of line (column 11)"),
    ("\\set x 1 < 2 < 3\n", 1, "syntax error at '<'"),
    ("\\set x random(1)\n", 1, "unexpected number of arguments (random)"),
    ("\\set x 100000000000000000000\n", 1, "bigint constant overflow"),
    ("\\set 1x 1\n", 1, "invalid variable name"),
    ("\\set\n", 1, "missing variable name"),
    ("\\set x :y + 1\n", 1, "undefined variable :y"),
    ("SELECT 1;\nSELECT :nope;\n", 2, "undefined variable :nope"),
    ("SELECT arr[lo:hi] FROM t;\n", 1, "a[lo: hi]"),
    ("\\set id 1\nSELECT ':id';\n", 2, ":id inside a quoted string"),
    ("\\sleep\n", 1, "\\sleep: missing argument"),
    ("\\sleep 1 ms extra\n", 1, "too many arguments"),
    ("\\sleep ten\n", 1, "invalid sleep time \"ten\""),
    ("\\sleep 1 min\n", 1, "unrecognized time unit \"min\""),
    ("\\sleep 3000 s\n", 1, "out of range"),
    ("\\sleep :later\n", 1, "undefined variable :later"),
    ("SELECT 1;\nSELECT 'open\n", 2, "unterminated quoted string"),
    ("SELECT \"x\n", 1, "unterminated quoted identifier"),
    ("SELECT 1; /* open\n", 1, "unterminated /* comment"),
    ("SELECT $q$ open\n", 1, "unterminated dollar-quoted string $q$"),
    ("SELECT 1 \\; SELECT 2;\n", 1, "\\; inside SQL is not supported"),
    ("SELECT 1;\n;\n", 2, "no SQL keyword"),
    ("BEGIN;\nSELECT 1;\n", 1, "BEGIN is never closed"),
    ("BEGIN;\nBEGIN;\nCOMMIT;\n", 2, "BEGIN inside the transaction opened at line 1"),
    ("SELECT 1;\nCOMMIT;\n", 2, "COMMIT without BEGIN"),
    ("ROLLBACK TO SAVEPOINT s;\n", 1, "outside a transaction"),
    ("BEGIN;\nCOMMIT AND CHAIN;\nCOMMIT;\n", 2, "AND CHAIN is not supported"),
    ("PREPARE TRANSACTION 'x';\n", 1, "two-phase commit"),
    ("COPY t FROM STDIN;\n", 1, "COPY FROM STDIN"),
    ("-- only a comment\n", 1, "empty script"),
]


@pytest.mark.parametrize("text, line, message", REFUSALS,
                         ids=[r[2][:40] for r in REFUSALS])
def test_everything_else_is_refused_with_file_and_line(text: str, line: int,
                                                       message: str) -> None:
    with pytest.raises(ScriptError) as info:
        parse_script(text, name="bad.sql")
    error = str(info.value)
    assert error.startswith(f"bad.sql:{line}: ") and message in error, error
    assert "\n" not in error
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 2


def test_unsupported_constructs_name_what_is_supported() -> None:
    for text in ("\\if 1\n\\endif\n", "\\foo\n", "SELECT 1 \\; SELECT 2;\n",
                 "COPY t FROM STDIN;\n"):
        with pytest.raises(ScriptError, match=r"; supported: SQL commands .*\\set.*\\sleep"):
            parse_script(text, name="u.sql")
    with pytest.raises(ScriptError, match="supported functions: abs, double, exp, greatest"):
        parse_script("\\set x frob(1)\n", name="u.sql")


def test_an_unknown_builtin_names_the_builtins() -> None:
    with pytest.raises(ScriptError, match="no builtin script found for name \"tpc-c\"; "
                       "supported: tpcb-like, simple-update, select-only"):
        builtin_script("tpc-c")
    with pytest.raises(ScriptError, match="2 builtin scripts found"):
        builtin_script("s")


# --- the drivers run what the renderers produce -----------------------------------------

DRIVER_SCRIPT = """\
\\set id 41
\\set r 0.5
BEGIN;
SELECT :id::int + 1 AS n, '10:30' AS t, 7 % 4 AS m, '100%' AS pct, :r::float8 * 2 AS d;
COMMIT;
"""
DRIVER_ROW = (42, "10:30", 3, "100%", 1.0)


def steps_for(style: ParamStyle) -> list[SqlStep]:
    script = parse_script(DRIVER_SCRIPT, name="drv.sql")
    return [s for s in ScriptRunner(script, client_id=0, scale=1, seed=1, style=style).run()
            if type(s) is SqlStep]


def test_psycopg_runs_format_and_simple_steps(target: ConnectionTarget) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        for style in (ParamStyle.FORMAT, ParamStyle.SIMPLE):
            rows = []
            for step in steps_for(style):
                # FORMAT always passes its parameters (%% stands for %); SIMPLE passes none
                cur = conn.execute(step.sql, step.params if style is ParamStyle.FORMAT
                                   else None)
                rows += cur.fetchall() if cur.description else []
            assert [tuple(float(v) if i == 4 else v for i, v in enumerate(r))
                    for r in rows] == [DRIVER_ROW], style


def test_psycopg2_interpolates_format_steps(target: ConnectionTarget) -> None:
    conn = psycopg2.connect(target.conninfo())
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            rows = []
            for step in steps_for(ParamStyle.FORMAT):
                cur.execute(step.sql, step.params)
                rows += cur.fetchall() if cur.description else []
        assert [tuple(float(v) if i == 4 else v for i, v in enumerate(r))
                for r in rows] == [DRIVER_ROW]
    finally:
        conn.close()


def test_asyncpg_runs_dollar_steps(target: ConnectionTarget) -> None:
    async def main() -> list[tuple]:
        conn = await asyncpg.connect(**target.asyncpg_kwargs())
        try:
            rows = []
            for step in steps_for(ParamStyle.DOLLAR):
                rows += [tuple(r) for r in await conn.fetch(step.sql, *step.params)]
            return rows
        finally:
            await conn.close()

    rows = asyncio.run(main())
    assert [tuple(float(v) if i == 4 else v for i, v in enumerate(r))
            for r in rows] == [DRIVER_ROW]


# --- the real pgbench is the oracle ----------------------------------------------------------

# Deterministic (no random draw but a one-value range): pgbench's SQL text can be compared.
ORACLE = """\
\\set x 42
\\set a -7 / 2
\\set b -7 % 2
\\set c 7 % -2
\\set d 5 / 2.0
\\set e 1.0 / 3
\\set f int(2.5) + int(3.5) * 10 + int(-2.5)
\\set g 9223372036854775807 - :x
\\set h1 hash(:x)
\\set h2 hash(:x, 5432)
\\set h3 hash_fnv1a(:x, -1)
\\set h4 hash_murmur2(-9223372036854775808, :x)
\\set h5 hash_fnv1a(:a * 1000003)
\\set h6 hash_fnv1a(:g, :default_seed) # hash_murmur2(:g)
\\set m mod(-9, 4) * 100 + abs(-3) + greatest(1, 2.5) - least(:x, 7.25)
\\set p pow(2, 0.5) + sqrt(:x) + ln(:x) - exp(1.5) + pi()
\\set q case when :x > 40 then :x % 5 else 0 end
\\set r random(5, 5) + random_exponential(3, 3, 2.5)
\\set s random_gaussian(-4, -4, 2.5) + random_zipfian(8, 8, 1.5)
\\set bits (1 << 40) | (:x & 7) # ~:x >> 2
\\set t :x > 1 and not :x = 3 or :x isnull
\\set neg -:x
\\set big 3000000000 * 3000000000.0
SELECT :default_seed, :random_seed, :client_id, :scale;
SELECT :x, :a, :b, :c, :d, :e, :f, :g;
SELECT :h1, :h2, :h3, :h4, :h5, :h6;
SELECT :m, :p, :q, :r, :s, :bits, :t, :neg, :big;
BEGIN;
SELECT :x::int + 1 AS plus, '10:30' AS t, 7 % 4 AS m, '100%' AS pct,
       $$ 1:2 $$ AS dollar, :d::float8 AS d -- a comment, at 10:30
  FROM generate_series(1, 2);
\\sleep 1 ms
COMMIT;
"""


def pgbench(server: EmbeddedServer, target: ConnectionTarget, *args: str,
            dbname: str | None = None) -> subprocess.CompletedProcess[str]:
    """The embedded server's own pgbench, password through the environment."""
    cmd = [str(server.pgbench), *args, "-h", str(target.get("host")),
           "-p", str(target.get("port")), "-U", str(target.get("user")),
           dbname or target.dbname]
    env = {**os.environ, "PGPASSWORD": target.password or "", "PGAPPNAME": "poolbench-test"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def sent_sql(stderr: str) -> list[str]:
    """The SQL texts pgbench --debug says it sent (``client 0 sending ...``)."""
    messages = re.split(r"^pgbench: (?:debug: )?", stderr, flags=re.MULTILINE)
    return [m.removeprefix("client 0 sending ").rstrip("\n") for m in messages
            if m.startswith("client 0 sending ")]


def run_oracle(server: EmbeddedServer, target: ConnectionTarget, tmp_path: Path,
               mode: str) -> list[str]:
    path = tmp_path / "oracle.sql"
    path.write_text(ORACLE)
    proc = pgbench(server, target, "-n", "-t", "1", "-c", "1", "-M", mode,
                   "--random-seed=5432", "--debug", "-f", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "number of transactions actually processed: 1/1" in proc.stdout
    return sent_sql(proc.stderr)


def test_pgbench_sends_the_sql_our_simple_mode_renders(
        server: EmbeddedServer, target: ConnectionTarget, tmp_path: Path) -> None:
    """pgbench -M simple's SQL text, value for value: int64 and double arithmetic,
    %.15g doubles, booleans, the hashes (default seed included) and the built-ins."""
    theirs = run_oracle(server, target, tmp_path, "simple")
    default_seed = int(theirs[0].split()[1].rstrip(","))
    script = parse_script(ORACLE, name="oracle.sql")
    runner = ScriptRunner(script, client_id=0, scale=1, seed=5432, style=ParamStyle.SIMPLE,
                          default_seed=default_seed)
    ours = [s.sql for s in runner.run() if type(s) is SqlStep]
    assert ours == theirs
    assert theirs[0].endswith(", 5432, 0, 1;") and theirs[2].split(", ")[1] == str(
        hash_murmur2(42, 5432))


def test_pgbench_sends_the_sql_our_dollar_style_renders(
        server: EmbeddedServer, target: ConnectionTarget, tmp_path: Path) -> None:
    theirs = run_oracle(server, target, tmp_path, "extended")
    script = parse_script(ORACLE, name="oracle.sql")
    assert [c.render(ParamStyle.DOLLAR) for c in script.statements] == theirs


def test_pgbench_runs_the_oracle_prepared(server: EmbeddedServer, target: ConnectionTarget,
                                          tmp_path: Path) -> None:
    names = run_oracle(server, target, tmp_path, "prepared")  # it logs names, not SQL
    assert names == [f"P_{n}" for n in range(len(parse_script(ORACLE, name="o").statements))]


def test_builtin_texts_are_pgbench_s_own(server: EmbeddedServer) -> None:
    for name, text in BUILTIN_SCRIPTS.items():
        shown = subprocess.run([str(server.pgbench), f"--show-script={name}"],
                               capture_output=True, text=True, timeout=30)
        header, _, body = shown.stderr.partition("\n")
        assert header.startswith(f"-- {name}: ") and body == text + "\n", name


@pytest.fixture
def pgbench_db(server: EmbeddedServer, target: ConnectionTarget,
               admin: psycopg.Connection) -> Iterator[str]:
    """A database of its own with pgbench's tables at scale 1, dropped afterwards."""
    name = "pb_script_" + secrets.token_hex(4)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        proc = pgbench(server, target, "-i", "-s", "1", "-q", dbname=name)
        assert proc.returncode == 0, proc.stderr[-2000:]
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_builtin_scripts_run_unchanged_in_pgbench(
        server: EmbeddedServer, target: ConnectionTarget, pgbench_db: str, tmp_path: Path,
        mode: str) -> None:
    for name, text in BUILTIN_SCRIPTS.items():
        path = tmp_path / f"{name}.sql"
        path.write_text(text)
        proc = pgbench(server, target, "-n", "-t", "5", "-c", "2", "-M", mode, "-f", str(path),
                       dbname=pgbench_db)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "number of transactions actually processed: 10/10" in proc.stdout
        assert "number of failed transactions: 0" in proc.stdout


ROLLBACK_SCRIPT = """\
\\set aid random(1, 100000 * :scale)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
ROLLBACK;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
"""


def test_the_server_counts_the_transactions_the_script_declares(
        target: ConnectionTarget, pgbench_db: str) -> None:
    """Steps run through psycopg (format style) on pgbench's tables: the built-in changes
    the rows it should, and pg_stat_database counts the rollbacks the script declares."""
    conninfo = target.with_params(dbname=pgbench_db).conninfo()
    stats = ("SELECT xact_commit, xact_rollback FROM pg_stat_database "
             "WHERE datname = current_database()")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        runner = ScriptRunner(builtin_script("tpcb-like"), client_id=0, scale=1, seed=3,
                              style=ParamStyle.FORMAT)
        for _ in range(3):
            for step in runner.run():
                conn.execute(step.sql, step.params)
        history = conn.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]
        assert history == 3

        script = parse_script(ROLLBACK_SCRIPT, name="rollback.sql")
        assert (script.committed_per_run, script.rolled_back_per_run) == (1, 1)
        runner = ScriptRunner(script, client_id=0, scale=1, seed=3, style=ParamStyle.FORMAT)
        conn.execute("SELECT pg_stat_force_next_flush()")  # published when this one ends
        commits, rollbacks = conn.execute(stats).fetchone()
        for _ in range(4):
            for step in runner.run():
                conn.execute(step.sql, step.params)
        conn.execute("SELECT pg_stat_force_next_flush()")
        commits_after, rollbacks_after = conn.execute(stats).fetchone()
    assert rollbacks_after - rollbacks == 4 * script.rolled_back_per_run
    # + the two statements reading the counters; other sessions can only add
    assert commits_after - commits >= 4 * script.committed_per_run + 2
