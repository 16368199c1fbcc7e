"""pgbench-style scripts as the workload (-f FILE@WEIGHT, -b NAME): one script run per
operation on a real server, weights dealt exactly, the server's transactions against the
scripts', no pooled connection given back in a failed transaction, read-only sessions on
a server poolbench did not start, and bad input refused in one line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import jsonschema
import psycopg
import pytest
from conftest import SERVER_PASSWORDS, clean_env, recording_pgbench, run_cli

from poolbench import RunConfig, run
from poolbench.config import ScriptFile, script_cycle
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.results import Check, StrategyResult
from poolbench.workloads.script import ScriptError
from poolbench.workloads.scripted import load_scripts

# A point read by a typed column, a value the server types as text (an untyped
# concatenation: asyncpg must then be given text), and a literal % (psycopg's %%).
READ = """\\set k random(1, 100)
SELECT v FROM kv WHERE k = :k;
SELECT '100%' || :k;
"""
# A transaction that holds its connection while the application "thinks".
WRITE = """\\set k random(1, 100)
BEGIN;
UPDATE kv SET n = n + 1 WHERE k = :k;
\\sleep 1ms
SELECT n FROM kv WHERE k = :k;
COMMIT;
"""
# Transactions the server commits for one complete run of each, counted by hand: the two
# statements of READ are one each; WRITE's BEGIN ... COMMIT is one.
COMMITS = {"read.sql": 2, "write.sql": 1}


@pytest.fixture(scope="module")
def quiet() -> Iterator[EmbeddedServer]:
    """A server of this module's own, autovacuum off: its workers' visits to a database
    add transactions no counter tells apart, so only here are transactions exact."""
    with EmbeddedServer(max_connections=60, settings={"autovacuum": "off"}) as srv:
        assert srv.target is not None and srv.target.password
        SERVER_PASSWORDS.add(srv.target.password)  # to the CLI in PGPASSWORD
        with psycopg.connect(srv.target.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kv (k int PRIMARY KEY, v text NOT NULL, "
                         "n int NOT NULL DEFAULT 0)")
            conn.execute("INSERT INTO kv (k, v) SELECT g, 'v' || g FROM generate_series(1, 100) g")
        yield srv


@pytest.fixture
def quiet_target(quiet: EmbeddedServer) -> ConnectionTarget:
    assert quiet.target is not None
    return quiet.target


def scripts(**weighted: tuple[str, int]) -> tuple[ScriptFile, ...]:
    return tuple(ScriptFile(name, name, text, weight) for name, (text, weight) in weighted.items())


def check(s: StrategyResult, name: str) -> Check:
    assert s.server is not None
    return next(c for c in s.server.checks if c.name == name)


def per_trial(s: StrategyResult) -> dict[str, list[int]]:
    return {p.phase: [t.ops for t in p.trials] for p in s.phases}


@pytest.mark.parametrize(("strategy", "protocol"), [
    ("psycopg:pool", "simple"), ("psycopg:pool", "extended"), ("psycopg:pool", "prepared"),
    ("psycopg-async:pool", "extended"), ("psycopg2:threaded", "extended"),
    ("asyncpg:pool", "simple"), ("asyncpg:pool", "extended"), ("asyncpg:none", "prepared"),
    ("sqlalchemy:queuepool", "extended"), ("sqlalchemy-asyncpg:queuepool", "extended"),
])
def test_a_weighted_pair_of_scripts_runs_on_each_strategy(
        strategy: str, protocol: str, quiet_target: ConnectionTarget) -> None:
    """40 runs a trial are ten cycles of the weights 3:1: every trial runs each script its
    exact share; nothing fails; the mode is stated; where nothing but the scripts can
    reach the server's count, it is the scripts' own."""
    results = run(RunConfig(target=quiet_target, strategies=(strategy,), rows=40, workers=4,
                            pool_max=3, warmup=1, trials=1, out_dir=None, protocol=protocol,
                            scripts=scripts(**{"read.sql": (READ, 3), "write.sql": (WRITE, 1)}),
                            allow_writes=True, connect_samples=1))
    (s,) = results.strategies
    assert per_trial(s) == {"mix": [40, 40], "script:read.sql": [30, 30],
                            "script:write.sql": [10, 10]}
    assert s.error_count == 0, [p.errors for p in s.phases]
    assert s.protocol_note
    committed = check(s, "script transactions committed")
    assert committed.ours == 2 * (30 * COMMITS["read.sql"] + 10 * COMMITS["write.sql"])
    assert check(s, "script transactions rolled back").ours == 0
    # The driver's own traffic (asyncpg:pool's reset, psycopg's prepares, SQLAlchemy's
    # start-up queries) is in the server's count: shown, not checked. Elsewhere (a new
    # session per operation too), exact.
    adds = (strategy in ("asyncpg:pool", "sqlalchemy:queuepool", "sqlalchemy-asyncpg:queuepool")
            or (strategy.startswith("psycopg") and protocol == "prepared"))
    assert committed.exact is not adds, s.server
    assert committed.server >= committed.ours
    assert s.server is not None and s.server.ok, s.server
    assert results.verification is None  # no rows of poolbench's own to check


@pytest.mark.parametrize("processes", [1, 2])
def test_weights_are_dealt_exactly_per_cycle(processes: int,
                                             quiet_target: ConnectionTarget) -> None:
    """80/20 is a cycle of 4 and 1: 50 runs a trial (five cycles in each process's share)
    are 40 and 10, whichever worker takes which run."""
    assert script_cycle((80, 20)) == (4, 1)
    results = run(RunConfig(target=quiet_target, strategies=("psycopg2:threaded",), rows=50,
                            workers=4, pool_max=4, warmup=0, trials=2, out_dir=None,
                            processes=processes,
                            scripts=scripts(**{"a.sql": ("SELECT 1;\n", 80),
                                               "b.sql": ("SELECT 2;\n", 20)})))
    (s,) = results.strategies
    assert per_trial(s) == {"mix": [50, 50], "script:a.sql": [40, 40], "script:b.sql": [10, 10]}


@pytest.mark.parametrize("strategy", ["psycopg2:threaded", "psycopg:pool", "psycopg:none"])
def test_transactions_that_sleep_are_what_the_server_committed(
        strategy: str, quiet_target: ConnectionTarget) -> None:
    """BEGIN ... \\sleep 1ms ... COMMIT: the server's commits, less poolbench's own
    statements and one start-up transaction per session, are one per script run."""
    results = run(RunConfig(target=quiet_target, strategies=(strategy,), rows=30, workers=3,
                            pool_max=3, warmup=0, trials=1, out_dir=None, protocol="extended",
                            scripts=scripts(**{"write.sql": (WRITE, 1)}), allow_writes=True,
                            connect_samples=1))
    (s,) = results.strategies
    committed = check(s, "script transactions committed")
    assert committed.exact and committed.ours == 30 == committed.server, s.server
    assert check(s, "script transactions rolled back").server == 0
    assert s.phase("script:write.sql").execute.p50_us >= 1000  # the sleep held the connection


FAILS_IN_TRANSACTION = """\\set zero 0
BEGIN;
SELECT 1 / :zero;
COMMIT;
"""


def test_an_error_inside_a_transaction_is_rolled_back_before_release(
        quiet_target: ConnectionTarget, caplog: pytest.LogCaptureFixture) -> None:
    """Half the runs fail inside BEGIN (division by zero): each is rolled back on its
    connection before it goes back, so the pool never receives a connection in a failed
    transaction (psycopg_pool would warn and roll it back itself), and the other half, on
    the same two connections, all succeed. The server saw one rollback per failure."""
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    results = run(RunConfig(target=quiet_target, strategies=("psycopg:pool",), rows=40,
                            workers=2, pool_min=2, pool_max=2, warmup=0, trials=1,
                            out_dir=None, protocol="extended",
                            scripts=scripts(**{"fails.sql": (FAILS_IN_TRANSACTION, 1),
                                               "ok.sql": ("SELECT 1;\n", 1)})))
    (s,) = results.strategies
    assert s.phase("script:fails.sql").errors == {"execute: DivisionByZero[22012]": 20}
    assert s.phase("script:ok.sql").ops == 20 and s.phase("script:ok.sql").errors == {}
    assert not [r for r in caplog.records if "rolling back" in r.getMessage()], caplog.text
    rolled_back = check(s, "script transactions rolled back")
    assert rolled_back.server == 20 and not rolled_back.exact  # failed runs: shown only


def test_a_statement_the_server_refuses_as_written_ends_the_run(
        quiet_target: ConnectionTarget) -> None:
    with pytest.raises(ScriptError, match=r"^gone.sql:2: the server refused the statement: "
                                          r"relation \"nowhere\" does not exist \(SQLSTATE "
                                          r"42P01\); fix the script$"):
        run(RunConfig(target=quiet_target, strategies=("asyncpg:pool",), rows=20, workers=2,
                      pool_max=2, warmup=0, trials=1, out_dir=None,
                      scripts=scripts(**{"gone.sql": ("SELECT 1;\nSELECT * FROM nowhere;\n",
                                                      1)})))


@pytest.mark.parametrize("spread", [{"processes": 2}, {"cluster": "local:1"}])
def test_a_set_that_fails_while_running_ends_the_run(quiet_target: ConnectionTarget,
                                                     spread: dict) -> None:
    """In a worker process or on a cluster node the script's own error ends the run as it
    does in one process (exit 2), not as a lost process or node."""
    with pytest.raises(ScriptError, match=r"^div.sql:2: \\set y: division by zero"):
        run(RunConfig(target=quiet_target, strategies=("psycopg:pool",), rows=20, workers=2,
                      pool_max=2, warmup=0, trials=1, out_dir=None, **spread,
                      scripts=scripts(**{"div.sql": ("\\set zero 0\n\\set y 1 / :zero\n"
                                                     "SELECT :y;\n", 1)})))


def _kv_sum(target: ConnectionTarget) -> int:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        return conn.execute("SELECT sum(n) FROM kv").fetchone()[0]


def test_writes_on_a_server_poolbench_did_not_start_are_refused_in_one_line(
        tmp_path: Path, quiet_target: ConnectionTarget) -> None:
    """The embedded server's DSN given to --dsn names a server this run did not start: its
    scripts run read-only, the first write ends the run (one line, exit 2), no row changed
    and no table made; with --allow-writes the same run writes."""
    (tmp_path / "write.sql").write_text(WRITE)
    dsn = quiet_target.conninfo()
    before = _kv_sum(quiet_target)
    result = run_cli("run", "--dsn", dsn, "-f", "write.sql", "--strategies", "psycopg:pool",
                     "-n", "20", "-w", "2", "--pool-max", "2", "--warmup", "0", "--trials", "1",
                     "--no-chart", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == ("poolbench: error: write.sql:3: the server refused a write (cannot "
                         "execute UPDATE in a read-only transaction): on a server poolbench "
                         "did not start, scripts run in read-only sessions; give --clone "
                         "to run them on a copy of the database, or --allow-writes to let "
                         "them write here (docs/scripts.md says what that risks)"), \
        result.stderr
    assert not any("Traceback" in line for line in lines)
    assert _kv_sum(quiet_target) == before
    with psycopg.connect(quiet_target.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('users')").fetchone()[0] is None

    allowed = run_cli("run", "--dsn", dsn, "-f", "write.sql", "--allow-writes", "--strategies",
                      "psycopg:pool", "-n", "20", "-w", "2", "--pool-max", "2", "--warmup", "0",
                      "--trials", "1", "--no-chart", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert _kv_sum(quiet_target) == before + 20


def test_read_only_sessions_are_not_routed_through_a_pooler(
        tmp_path: Path, quiet_target: ConnectionTarget) -> None:
    (tmp_path / "read.sql").write_text(READ)
    result = run_cli("run", "--dsn", quiet_target.conninfo(), "-f", "read.sql", "--via",
                     "pgbouncer:transaction", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "poolbench: error: scripts run in read-only sessions on a server poolbench did not "
        "start, which a pooler's server connections do not carry: use --via direct, or give "
        "--allow-writes"]


def test_pgbench_builtin_runs_on_pgbench_tables(quiet: EmbeddedServer,
                                                quiet_target: ConnectionTarget) -> None:
    """-b tpcb-like on the tables pgbench -i made (the embedded server's own pgbench): one
    transaction a run, with ROLLBACK never needed."""
    env = {**clean_env(), "PGPASSWORD": quiet_target.password or ""}
    subprocess.run([str(quiet.pgbench), "-i", "-s", "1", "-q", "-h", quiet_target.get("host"),
                    "-p", quiet_target.get("port"), "-U", quiet_target.get("user"),
                    quiet_target.dbname], env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)
    results = run(RunConfig(target=quiet_target, strategies=("psycopg:pool",), rows=50,
                            workers=2, pool_max=2, warmup=0, trials=1, out_dir=None,
                            protocol="prepared", allow_writes=True,
                            scripts=load_scripts((), ("tpcb@1",))))
    (s,) = results.strategies
    assert [p.phase for p in s.phases] == ["mix", "script:tpcb-like"]
    assert s.error_count == 0 and s.phase("script:tpcb-like").ops == 50
    assert check(s, "script transactions committed").ours == 50


@pytest.mark.parametrize(("files", "args", "needle"), [
    ({}, ["-f", "nope.sql"], "-f nope.sql: no such file; give the path of a pgbench script"),
    ({"a.sql": "SELECT 1;\n"}, ["-f", "a.sql@0"], "-f a.sql@0: a weight must be a whole "
                                                  "number >= 1"),
    ({"a.sql": "SELECT 1;\n"}, ["-f", "a.sql@x"], "a.sql@x: invalid weight specification: @x"),
    ({"bad.sql": "SELECT 1;\n\\gset\n"}, ["-f", "bad.sql"], "bad.sql:2: \\gset is not supported"),
    ({"bad.sql": "SELECT :nope;\n"}, ["-f", "bad.sql"], "bad.sql:1: undefined variable :nope"),
    ({"bad.sql": "\\set x random(5, 1)\n"}, ["-f", "bad.sql"], "bad.sql:1: \\set x:"),
    ({}, ["-b", "tpcc"], 'no builtin script found for name "tpcc"'),
    ({"a.sql": "SELECT 1;\n"}, ["-f", "a.sql", "--mix", "read=1"],
     "-f/-b scripts and --mix are two workloads"),
    ({"a.sql": "SELECT 1;\n"}, ["-f", "a.sql", "--random-seed", "-3"],
     "--random-seed '-3': give a whole number from 0 to 18446744073709551615, 'time' or "
     "'rand'"),
    ({"a.sql": "SELECT 1;\n"}, ["-f", "a.sql", "-M", "fast"], "'fast' is not one of"),
    ({"a.sql": "SELECT 1;\n"}, ["-f", "a.sql", "-s", "0"], "-s/--scale must be a whole number"),
])
def test_bad_script_input_is_one_line_before_anything_connects(
        tmp_path: Path, files: dict[str, str], args: list[str], needle: str) -> None:
    """No server is given and none is started: each refusal comes first."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run_cli("run", *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poolbench: error: ") and needle in lines[0], \
        result.stderr
    assert result.stdout == "" and not (tmp_path / "reports").exists()


def test_results_json_names_each_script_and_its_hash(tmp_path: Path,
                                                     quiet_target: ConnectionTarget) -> None:
    """What compare needs to see a changed script: names, paths, weights and a hash of
    each text (not the text); a CRUD run's config has none of these keys."""
    run(RunConfig(target=quiet_target, strategies=("psycopg:pool",), rows=8, workers=2,
                  pool_max=2, warmup=0, trials=1, out_dir=tmp_path, chart=False,
                  scripts=scripts(**{"a.sql": ("SELECT 1;\n", 3), "b.sql": ("SELECT 2;\n", 1)})))
    data = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(data, json.loads(
        resources.files("poolbench").joinpath("results.schema.json").read_text()))
    assert data["config"]["scripts"] == [
        {"name": "a.sql", "path": "a.sql", "weight": 3,
         "sha256": hashlib.sha256(b"SELECT 1;\n").hexdigest()[:12]},
        {"name": "b.sql", "path": "b.sql", "weight": 1,
         "sha256": hashlib.sha256(b"SELECT 2;\n").hexdigest()[:12]}]
    assert data["config"]["protocol"] == "simple" and data["config"]["scale"] == 1
    assert data["strategies"][0]["protocol_note"].startswith("values put in the text")
    assert "script:a.sql" in (tmp_path / "results.csv").read_text()
    crud = RunConfig().public_dict()
    assert not {"scripts", "protocol", "scale", "script_seed", "allow_writes"} & set(crud)


# A transparent stand-in for pgbench: runs the real one with the same arguments and
# environment, keeps the arguments, each -f file's text, its output, and whether the
# password came through the environment (never the password itself).
RECORDING_PGBENCH = """\
import os, subprocess, sys
from pathlib import Path

keep = Path({keep!r})
args = sys.argv[1:]
if args == ["--version"]:
    os.execv({real!r}, [{real!r}, *args])
(keep / "argv").write_text("\\n".join(args))
files = [args[i + 1].rsplit("@", 1)[0] for i, a in enumerate(args) if a == "-f"]
(keep / "scripts").write_text("\\0".join(Path(f).read_text() for f in files))
(keep / "env").write_text("PGPASSWORD set" if os.environ.get("PGPASSWORD") else "")
proc = subprocess.run([{real!r}, *args], capture_output=True, text=True)
(keep / "stdout").write_text(proc.stdout)
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
sys.exit(proc.returncode)
"""


def test_baseline_runs_the_same_scripts_in_pgbench_and_keeps_its_tps(
        tmp_path: Path, quiet_target: ConnectionTarget) -> None:
    """pgbench gets the scripts' texts with their weights, -M, -c, -T, -s and the seed,
    --rate as -R (both per second over all clients), the password only in its environment;
    its figure is the tps pgbench printed, and each script's the tps printed for it."""
    from poolbench.check.script_baseline import calibrate_scripts

    recorder, keep = recording_pgbench(tmp_path, RECORDING_PGBENCH)
    files = scripts(**{"read.sql": (READ, 3), "two.sql": ("SELECT 2;\n", 1)})
    cal = calibrate_scripts(quiet_target, files, protocol="extended", scale=2, seed=7,
                            clients=2, seconds=1, pgbench=recorder, rate=400)
    assert cal is not None
    argv = (keep / "argv").read_text().splitlines()  # the -C run's, the last
    flags = [a.rsplit("/", 1)[-1] if "@" in a else a for a in argv
             if not a.startswith(("-l", "--log-prefix=", "--sampling-rate="))]
    assert flags == ["-n", "-f", "read.sql@3", "-f", "two.sql@1", "-s", "2", "--random-seed=7",
                     "-c", "2", "-j", str(min(2, os.cpu_count() or 1)), "-T", "1", "-R", "400",
                     "-M", "extended", "-C", "-h", quiet_target.get("host"),
                     "-p", quiet_target.get("port"), "-U", quiet_target.get("user"),
                     quiet_target.dbname]
    assert (keep / "scripts").read_text().split("\0") == [READ, "SELECT 2;\n"]
    assert quiet_target.password and quiet_target.password not in " ".join(argv)
    assert (keep / "env").read_text() == "PGPASSWORD set"
    assert cal.workload == ("-f read.sql@3 -f two.sql@1 -M extended -s 2 --random-seed=7 "
                            "-R 400")
    out = (keep / "stdout").read_text()
    figure = cal.figure("scripts", connect_each=True)
    assert figure.tps == float(re.search(r"^tps = ([\d.]+) ", out, re.MULTILINE).group(1))
    assert figure.transactions == int(re.search(
        r"^number of transactions actually processed: (\d+)", out, re.MULTILINE).group(1))
    assert [f.connect_each for f in cal.figures] == [False, True]
    assert [f.rate for f in cal.figures] == [400, 400]
    # pgbench 17 prints each script's figures under "SQL script N: FILE" (its development
    # source says it in other words, which check/calibrate.py reads too)
    printed = re.findall(r"^SQL script (\d): .*/(\S+)\n(?: - .*\n)*? - (\d+) transactions "
                         r"\([\d.]+% of total, tps = ([\d.]+)\)$", out, re.MULTILINE)
    assert [(s.phase, s.transactions, s.tps) for s in figure.scripts] == [
        (f"script:{name}", int(n), float(tps)) for _, name, n, tps in printed], out
    assert [number for number, *_ in printed] == ["1", "2"]


def test_run_with_baseline_reports_each_strategy_against_pgbench_on_the_scripts(
        tmp_path: Path, quiet_target: ConnectionTarget) -> None:
    """Under --rate pgbench runs paced (-R, said in the results); each strategy's whole
    phase and each script's phase against pgbench's tps of the whole and of that script."""
    (tmp_path / "read.sql").write_text(READ)
    (tmp_path / "two.sql").write_text("SELECT 2;\n")
    result = run_cli("run", "--dsn", quiet_target.conninfo(), "-f", "read.sql@2",
                     "-f", "two.sql@1", "--rate", "150",
                     "--strategies", "psycopg:pool,psycopg:none", "-w", "2", "--pool-max", "2",
                     "--warmup", "0", "--trials", "1", "--duration", "1", "--baseline",
                     "pgbench", "--no-chart", "--sample-interval", "0", "--connect-samples", "1",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pgbench on the same server and your scripts: -f read.sql@2 -f two.sql@1 -M simple" \
        in result.stdout
    assert "paced: --rate given to pgbench as -R" in result.stdout
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    schema = json.loads(resources.files("poolbench").joinpath("results.schema.json").read_text())
    jsonschema.validate(data, schema)  # script phases (mix, script:NAME) included
    cal = data["calibration"]
    assert cal["workload"] == "-f read.sql@2 -f two.sql@1 -M simple -s 1 --random-seed=0 -R 150"
    markdown_text = (tmp_path / "reports" / "results.md").read_text()  # the same figures
    figures = {f["connect_each"]: f for f in cal["figures"]}
    assert {f["script"] for f in figures.values()} == {"scripts"}
    assert {f["rate"] for f in figures.values()} == {150}
    phases = {s["name"]: {p["phase"]: p for p in s["phases"]} for s in data["strategies"]}
    ratios = {r["strategy"]: r for r in cal["ratios"]}
    assert set(ratios) == {"psycopg:pool", "psycopg:none"}
    for name, against, connect_each in (("psycopg:pool", "persistent", False),
                                        ("psycopg:none", "connect", True)):
        assert ratios[name]["script"] == "scripts" and ratios[name]["against"] == against
        assert ratios[name]["throughput"] == round(
            phases[name]["mix"]["throughput_ops_s"] / figures[connect_each]["tps"], 3)
        pgbench_tps = {s["phase"]: s["tps"] for s in figures[connect_each]["scripts"]}
        assert list(pgbench_tps) == ["script:read.sql", "script:two.sql"]
        assert ratios[name]["scripts"] == [
            {"phase": phase, "throughput": round(
                phases[name][phase]["throughput_ops_s"] / tps, 3)}
            for phase, tps in pgbench_tps.items()]
        cells = ", ".join(f"{phase.removeprefix('script:')} {tps:,.0f}"
                          for phase, tps in pgbench_tps.items())
        assert f"| {'new per transaction (-C)' if connect_each else 'persistent'} | 2 | " \
            f"{figures[connect_each]['tps']:,.0f} |" in markdown_text
        assert f"| 150 | {cells} |" in markdown_text  # -R, then each script's tps
        assert f"| `{name}` | scripts | {against} | {ratios[name]['throughput']:.2f}x |" \
            in markdown_text


SEEDED = """\\set r random(1, 1000000000)
\\set g random_gaussian(1, 1000000, 2.5)
INSERT INTO seeded (client, r, g) VALUES (:client_id, :r, :g);
"""


def test_same_random_seed_draws_the_same_values_for_each_client(
        tmp_path: Path, quiet_target: ConnectionTarget) -> None:
    (tmp_path / "seeded.sql").write_text(SEEDED)

    def drawn(seed: str) -> dict[int, list[tuple[int, int]]]:
        result = run_cli("run", "--dsn", quiet_target.conninfo(), "-f", "seeded.sql",
                         "--random-seed", seed, "--allow-writes", "--strategies",
                         "psycopg:pool", "-w", "2", "--pool-max", "2", "-n", "40",
                         "--warmup", "0", "--trials", "1", "--no-chart",
                         "--sample-interval", "0", "--out", f"out{seed}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        config = json.loads((tmp_path / f"out{seed}" / "results.json").read_text())["config"]
        assert config["script_seed"] == int(seed)
        with psycopg.connect(quiet_target.conninfo(), autocommit=True) as conn:
            rows = conn.execute("DELETE FROM seeded RETURNING client, id, r, g").fetchall()
        found: dict[int, list[tuple[int, int]]] = {}
        for client, _, r, g in sorted(rows):  # each client's draws in the order it made them
            found.setdefault(client, []).append((r, g))
        return found

    with psycopg.connect(quiet_target.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE seeded (id serial, client int, r bigint, g bigint)")
    try:
        first, again, other = drawn("42"), drawn("42"), drawn("43")
    finally:
        with psycopg.connect(quiet_target.conninfo(), autocommit=True) as conn:
            conn.execute("DROP TABLE seeded")
    assert set(first) == set(again) == {0, 1}
    for client in first:  # the two workers may share the 40 runs differently
        n = min(len(first[client]), len(again[client]))
        assert n > 0 and first[client][:n] == again[client][:n]
        assert other[client][0] != first[client][0]
    assert first[0][0] != first[1][0]  # each client has its own sequence


# Two statements run once a run each, the second's value from a \set of the first's: each
# statement's count is the number of runs.
TWO = """\\set k random(1, 100)
SELECT v FROM kv WHERE k = :k AND v <> 'two';
\\set j mod(:k, 50) + 1
SELECT n FROM kv WHERE k = :j AND n >= -1;
"""


@pytest.mark.parametrize(("strategy", "protocol", "processes"), [
    ("psycopg:pool", "extended", 2), ("asyncpg:pool", "simple", 1)])
def test_each_statement_is_counted_and_matches_pg_stat_statements(
        strategy: str, protocol: str, processes: int, quiet_target: ConnectionTarget) -> None:
    """pgbench -r's figures per command: 30 counted runs are 30 of each statement (and of
    each \\set, not timed); the server's calls of each statement over the strategy (a
    warm-up trial and the counted one, two processes' counters merged) are the 60 runs."""
    results = run(RunConfig(target=quiet_target, strategies=(strategy,), rows=30, workers=3,
                            pool_max=3, warmup=1, trials=1, out_dir=None, protocol=protocol,
                            processes=processes, scripts=scripts(**{"two.sql": (TWO, 1)})))
    (s,) = results.strategies
    figures = s.phase("script:two.sql").statements
    assert [(f.line, f.count, f.failures) for f in figures] == [
        (1, 30, 0), (2, 30, 0), (3, 30, 0), (4, 30, 0)]
    assert [f.command for f in figures] == [
        "\\set k random(1, 100)", "SELECT v FROM kv WHERE k = :k AND v <> 'two';",
        "\\set j mod(:k, 50) + 1", "SELECT n FROM kv WHERE k = :j AND n >= -1;"]
    assert figures[0].mean_ms is None and figures[2].mean_ms is None
    assert all(f.mean_ms is not None and f.mean_ms > 0 for f in figures[1::2])
    assert s.server is not None
    calls = [c for c in s.server.checks if c.name.startswith("calls ")]
    assert [(c.name, c.ours, c.server, c.exact) for c in calls] == [
        ("calls two.sql:2", 60, 60, True), ("calls two.sql:4", 60, 60, True)], s.server.notes
    assert s.server.ok, s.server


def test_statement_calls_without_pg_stat_statements_are_not_measured(
        tmp_path: Path, quiet_target: ConnectionTarget) -> None:
    """A database without the extension: the run completes, the cross-check says why there
    are no statement calls; the per-statement figures reach results.json and results.md
    (a phase other than a script's has no "statements" key)."""
    with psycopg.connect(quiet_target.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE no_pgss")
    try:
        target = ConnectionTarget(quiet_target.with_params(dbname="no_pgss").params,
                                  "embedded server", embedded=True)
        results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=8,
                                workers=2, pool_max=2, warmup=0, trials=1, out_dir=tmp_path,
                                chart=False, scripts=scripts(**{"one.sql": ("SELECT 1;\n", 1)})))
    finally:
        with psycopg.connect(quiet_target.conninfo(), autocommit=True) as conn:
            conn.execute("DROP DATABASE no_pgss")
    (s,) = results.strategies
    assert s.server is not None and s.server.ok
    assert not [c for c in s.server.checks if c.name.startswith("calls ")]
    assert ("statement calls not measured: pg_stat_statements is not installed in this "
            "database") in s.server.notes
    phases = json.loads((tmp_path / "results.json").read_text())["strategies"][0]["phases"]
    assert [p["phase"] for p in phases] == ["mix", "script:one.sql"]
    assert "statements" not in phases[0]
    assert phases[1]["statements"][0]["count"] == 8
    assert "| `psycopg:pool` | one.sql | 1 |" in (tmp_path / "results.md").read_text()
