"""``poolbench capture`` (issue 18 §3): a known mix run on a real server comes back as
pgbench scripts with its weights, parameters drawn from the columns' real values, and
plans like the captured statements'; without pg_stat_statements, one line and no files.

The first tests read SQL text only; the others run on an embedded server with
pg_stat_statements preloaded."""

from __future__ import annotations

import datetime
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from conftest import SERVER_PASSWORDS, clean_env, run_cli

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import quote_ident
from poolbench.errors import ConfigError
from poolbench.workloads.capture import (
    ColumnRef,
    StatStatementsUnavailable,
    analyze,
    capture,
    choose_values,
    connect_read_only,
    pgbench_variables,
    render_sql,
    sample_concurrency,
)

# --- reading SQL text (no server) -------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT * FROM items WHERE id = $1", {1: ColumnRef(None, "id")}),
    ("SELECT * FROM items i WHERE $1 < i.qty", {1: ColumnRef("i", "qty")}),
    ("SELECT * FROM s.items AS i WHERE i.made_on BETWEEN $1 AND $2::date",
     {1: ColumnRef("i", "made_on"), 2: ColumnRef("i", "made_on")}),
    ("SELECT * FROM items WHERE name NOT IN ($1, $2)",
     {1: ColumnRef(None, "name"), 2: ColumnRef(None, "name")}),
    ("UPDATE items SET qty = $1, name = $2 WHERE id = $3",
     {1: ColumnRef(None, "qty"), 2: ColumnRef(None, "name"), 3: ColumnRef(None, "id")}),
    ("INSERT INTO items (id, name) VALUES ($1, $2), ($3, $4)",
     {1: ColumnRef("items", "id"), 2: ColumnRef("items", "name"),
      3: ColumnRef("items", "id"), 4: ColumnRef("items", "name")}),
    ("INSERT INTO items VALUES ($1, $2)",
     {1: ColumnRef("items", None, 1), 2: ColumnRef("items", None, 2)}),
    ('DELETE FROM "Items" WHERE "Id" >= $1', {1: ColumnRef(None, "Id")}),
])
def test_the_column_each_parameter_is_compared_with_is_found(
        query: str, expected: dict[int, ColumnRef]) -> None:
    analysis = analyze(query)
    assert {n: site.column for n, site in analysis.sites.items()} == expected


@pytest.mark.parametrize(("query", "problem"), [
    ("SELECT id FROM items ORDER BY id LIMIT $1", "LIMIT $1 is a row count"),
    ("SELECT id FROM items WHERE name LIKE $1", "$1 is a pattern"),
    ("SELECT id FROM items WHERE id = ANY($1)", "$1 is an array"),
    ("SELECT id FROM items WHERE lower(name) = $1", "$1 is not compared with a column"),
    ("SELECT id FROM items WHERE qty + 1 = $1", "$1 is not compared with a column"),
    ("SELECT id FROM items WHERE qty = $1 + 1", "$1 is not compared with a column"),
])
def test_a_parameter_in_any_other_form_is_reported_not_inferred(query: str, problem: str) -> None:
    site = analyze(query).sites[1]
    assert site.column is None and site.problem is not None and problem in site.problem


def test_tables_aliases_and_with_names() -> None:
    analysis = analyze("WITH recent AS (SELECT id FROM orders o WHERE o.placed > $1) "
                       "SELECT * FROM public.items i JOIN recent r ON r.id = i.id "
                       "WHERE extract(epoch FROM i.made_on) > 0")
    assert [(t.schema, t.name, t.alias) for t in analysis.tables] == [
        (None, "orders", "o"), ("public", "items", "i")]  # not "recent", not "i.made_on"
    assert analysis.aliases["o"].name == "orders" and "recent" not in analysis.aliases


@pytest.mark.parametrize(("query", "writes"), [
    ("SELECT * FROM items WHERE id = $1", None),
    ("UPDATE items SET qty = $1", "UPDATE"),
    ("insert into items values ($1)", "INSERT"),
    ("DELETE FROM items WHERE id = $1", "DELETE"),
    ("CREATE INDEX ON items (qty)", "CREATE"),
    ("WITH d AS (DELETE FROM items RETURNING id) SELECT count(*) FROM d", "DELETE (in WITH)"),
    ("SELECT * FROM items WHERE id = $1 FOR UPDATE", "SELECT ... FOR UPDATE (locks rows)"),
    ("SELECT * FROM items FOR NO KEY UPDATE", "SELECT ... FOR NO KEY UPDATE (locks rows)"),
    ("SELECT nextval('items_id_seq')", "nextval() (changes a sequence)"),
])
def test_statements_that_write_are_marked(query: str, writes: str | None) -> None:
    assert analyze(query).writes == writes


def test_the_script_statement_has_variables_and_no_comments() -> None:
    """pgbench reads ':name' everywhere, comments included: comments go, literals stay."""
    analysis = analyze("/* app:checkout */ SELECT a FROM t -- by:id\n"
                       "WHERE id = $1 AND x = $2::int AND s = 'a::b';")
    rendered = render_sql(analysis, {1: ":p1", 2: ":p2"})
    assert rendered == "SELECT a FROM t  \nWHERE id = :p1 AND x = :p2::int AND s = 'a::b'"
    assert pgbench_variables(rendered) == ["p1", "p2"]
    assert pgbench_variables("SELECT x::text, '12:30', arr[1:n]") == ["n"]


def test_value_lists_keep_only_what_a_script_can_carry() -> None:
    values = choose_values(["b", "a\\b", "x:y", "line\nbreak", "b"],
                           [str(i) for i in range(1000)])
    assert values[0] == "b" and "a\\b" not in values and "x:y" not in values
    assert len(values) == 100 and len(set(values)) == 100
    assert values[1] == "0" and values[-1] in {str(i) for i in range(980, 1000)}  # spread


@pytest.mark.parametrize(("options", "flag"), [
    ({"by": "rows"}, "--by rows"),
    ({"top": 0}, "--top 0"),
    ({"sample_s": -1.0}, "--sample -1.0"),
])
def test_bad_options_are_refused_before_connecting(tmp_path: Path, options: dict,
                                                   flag: str) -> None:
    nowhere = ConnectionTarget.from_keywords(source="--dsn", host="127.0.0.1", port="9",
                                             user="u", password="sekret", dbname="d")
    with pytest.raises(ConfigError) as err:
        capture(nowhere, out_dir=tmp_path / "w", **options)
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)
    assert not (tmp_path / "w").exists()


def test_an_out_dir_with_files_is_refused_untouched(tmp_path: Path) -> None:
    nowhere = ConnectionTarget.from_keywords(source="--dsn", host="127.0.0.1", port="9",
                                             user="u", password="sekret", dbname="d")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine.sql").write_text("SELECT 1;\n")
    with pytest.raises(ConfigError, match="is not an empty directory"):
        capture(nowhere, out_dir=tmp_path / "w")
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["mine.sql"]


# --- on a server with pg_stat_statements ------------------------------------------------------


@pytest.fixture(scope="module")
def stat_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(max_connections=30) as server:  # it preloads pg_stat_statements
        assert server.target is not None and server.target.password
        SERVER_PASSWORDS.add(server.target.password)  # to the CLI in PGPASSWORD
        yield server


@pytest.fixture
def stat_target(stat_server: EmbeddedServer) -> ConnectionTarget:
    assert stat_server.target is not None
    return stat_server.target


def connect(target: ConnectionTarget, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(target.with_params(application_name="poolbench-test").conninfo(),
                           **kwargs)


# The known mix: 1000 statements from three connections, the updates in transactions.
MIX = {"by_id": 550, "update": 200, "by_name": 100, "by_date": 100, "limit": 50}
SQL = {
    "by_id": "SELECT id, name, qty FROM {t} WHERE id = %s",
    "update": "UPDATE {t} SET qty = %s WHERE id = %s",
    "by_name": "SELECT id, qty FROM {t} WHERE name = %s",
    "by_date": "SELECT count(*) FROM {t} WHERE made_on BETWEEN %s AND %s",
    "limit": "SELECT id FROM {t} ORDER BY id LIMIT %s",
}


def args_of(kind: str, i: int) -> tuple[object, ...]:
    return {"by_id": (i % 1000 + 1,),
            "update": (i % 101, i * 13 % 1000 + 1),
            "by_name": (f"item-{i * 7 % 1000 + 1:04d}",),
            "by_date": (datetime.date(2024, 3, 1), datetime.date(2024, 3, 31)),
            "limit": (10,)}[kind]


def run_mix(target: ConnectionTarget, table: str) -> None:
    def work(kinds: tuple[str, ...], autocommit: bool) -> None:
        with connect(target, autocommit=autocommit) as conn:
            for kind in kinds:
                query = SQL[kind].format(t=quote_ident(table))
                for i in range(MIX[kind]):
                    conn.execute(query, args_of(kind, i))
                    if not autocommit:
                        conn.commit()

    with ThreadPoolExecutor(3) as pool:
        done = [pool.submit(work, ("by_id", "by_name"), True),
                pool.submit(work, ("by_date", "limit"), True),
                pool.submit(work, ("update",), False)]
        for future in done:
            future.result()


@pytest.fixture
def items(stat_target: ConnectionTarget) -> Iterator[str]:
    """ids 1..1000, qty 0..100, made_on every day of 2024, unique names item-0001..1000."""
    name = "items_" + secrets.token_hex(3)
    with connect(stat_target, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {quote_ident(name)} (id int PRIMARY KEY, "
                     "name text UNIQUE NOT NULL, qty int NOT NULL, made_on date NOT NULL)")
        conn.execute(f"INSERT INTO {quote_ident(name)} SELECT g, 'item-' || lpad(g::text, 4, "
                     "'0'), g % 101, DATE '2024-01-01' + g % 366 FROM generate_series(1, 1000) g")
        conn.execute(f"ANALYZE {quote_ident(name)}")
    yield name
    with connect(stat_target, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")


def test_capture_gets_back_a_known_mix(stat_server: EmbeddedServer,
                                       stat_target: ConnectionTarget, items: str,
                                       tmp_path: Path) -> None:
    with connect(stat_target, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    run_mix(stat_target, items)
    out = tmp_path / "workload"

    result = capture(stat_target, out_dir=out, sample_s=0.2, sample_interval_s=0.1)

    by_kind = {kind: next(s for s in result.statements
                          if s.query == SQL[kind].format(t=quote_ident(items))
                          .replace("%s", "$1", 1).replace("%s", "$2", 1))
               for kind in MIX}
    assert len(result.statements) == len(MIX) and result.calls_captured == sum(MIX.values())
    for kind, calls in MIX.items():  # weights: each statement's share of the mix's calls
        s = by_kind[kind]
        assert s.calls == calls
        assert abs(s.share_pct - 100 * calls / sum(MIX.values())) <= 5
        assert s.weight == round(100 * calls / sum(MIX.values()))
        assert s.mean_ms > 0 and s.stddev_ms >= 0 and s.text.count("\n-- ") >= 3
        assert f"-- calls: {calls} " in s.text and "its own transaction" in s.text
    assert by_kind["by_id"].rows_per_call == 1.0 and by_kind["limit"].rows_per_call == 10.0

    # parameters: inside the columns' real ranges (taken now, after the updates)
    with connect(stat_target, autocommit=True) as conn:
        real = conn.execute(f"SELECT min(id), max(id), min(qty), max(qty), min(made_on), "
                            f"max(made_on) FROM {quote_ident(items)}").fetchone()
        names = {r[0] for r in conn.execute(f"SELECT name FROM {quote_ident(items)}")}
    (by_id,) = by_kind["by_id"].parameters
    assert (by_id.kind, by_id.low, by_id.high) == ("integer", 1, 1000) == ("integer", *real[:2])
    assert by_id.set_line == "\\set p1 random(1, 1000)"
    qty, row_id = by_kind["update"].parameters
    assert qty.column == f"public.{items}.qty" and real[2] <= qty.low <= qty.high <= real[3]
    assert row_id.column == f"public.{items}.id" and (row_id.low, row_id.high) == (1, 1000)
    epoch = datetime.date(1970, 1, 1)
    for bound in by_kind["by_date"].parameters:
        assert bound.kind == "date"
        assert real[4] <= epoch + datetime.timedelta(days=bound.low) <= \
            epoch + datetime.timedelta(days=bound.high) <= real[5]
    (name,) = by_kind["by_name"].parameters
    assert name.kind == "list" and 50 <= len(name.values) <= 100 and set(name.values) <= names
    assert name.set_line == f"\\set p1 random(1, {len(name.values)})"
    assert "(ARRAY['" in by_kind["by_name"].sql and "::text[])[(:p1)::int]" in \
        by_kind["by_name"].sql

    # the un-inferable parameter: reported, the statement left out of workload.txt
    limit = by_kind["limit"]
    assert not limit.included and "LIMIT $1 is a row count" in (limit.left_out or "")
    assert "-- NOT IN workload.txt: $1 could not be inferred" in limit.text
    assert "-- to run it: add a line '\\set p1 <expression>'" in limit.text
    assert limit.plan.same is None

    # EXPLAIN: every script plans like its captured statement
    for kind in ("by_id", "update", "by_name", "by_date"):
        assert by_kind[kind].plan.same is True, by_kind[kind].plan
    assert by_kind["by_id"].plan.scripted == f"Index Scan [Index Scan on {items}]"
    assert by_kind["update"].plan.scripted == f"ModifyTable Update [Index Scan on {items}]"

    # writes are marked; transactions and the reset are left out with a note
    assert by_kind["update"].writes == "UPDATE" and "-- writes: UPDATE" in by_kind["update"].text
    assert [k for k, s in by_kind.items() if s.writes] == ["update"]
    notes = "\n".join(result.skipped)
    assert "'BEGIN' (200 calls): transaction control" in notes
    assert "'COMMIT' (200 calls)" in notes and "pg_stat_statements_reset" in notes

    # the files: one script per statement, workload.txt, capture.txt; nothing else
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workload"]  # no staging left
    lines = (out / "workload.txt").read_text().splitlines()
    assert lines == list(result.workload_lines())
    assert sorted(lines) == sorted(f"-f {out / by_kind[k].file_name}@{round(MIX[k] / 10)}"
                                   for k in ("by_id", "update", "by_name", "by_date"))
    for s in result.statements:
        assert (out / s.file_name).read_text() == s.text
    summary = (out / "capture.txt").read_text()
    assert "5 statements captured" in summary and "4 in workload.txt" in summary
    assert stat_target.password not in summary  # the target is shown masked

    # --sample: one look per interval
    assert result.concurrency is not None and len(result.concurrency.samples) == 2

    # the same files run in pgbench unchanged, and poolbench's script parser takes them
    from poolbench.workloads.script.parser import parse_script

    for s in result.statements:
        if s.included:
            parse_script(s.text, name=s.file_name)
    env = {**os.environ, "PGPASSWORD": stat_target.password or "",
           "PGHOST": stat_target.get("host") or "", "PGPORT": stat_target.get("port") or "",
           "PGUSER": stat_target.get("user") or "", "PGDATABASE": stat_target.dbname}
    for mode in ("simple", "extended", "prepared"):
        proc = subprocess.run([str(stat_server.pgbench), "-n", "-t", "20", "-c", "2",
                               "-M", mode, *" ".join(lines).split()],
                              env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (mode, proc.stderr[-2000:])
        assert "number of transactions actually processed: 40/40" in proc.stdout

    # ... and a sweep over the captured workload recommends a pool size (the update writes:
    # this is the test's own server, so --allow-writes)
    sweep = run_cli("sweep", *" ".join(lines).split(), "--allow-writes", "--strategies",
                    "psycopg:pool", "--pool-sizes", "1,2", "--workers", "2", "--trials", "2",
                    "--duration", "0.3", "--warmup", "0.2", "--dsn", stat_target.conninfo(),
                    "--out", str(tmp_path / "sweep"), "--no-chart", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    data = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert {p["pool_size"] for p in data["points"]} == {1, 2}
    assert all(p["errors"] == 0 and p["server_ok"] for p in data["points"]), data["points"]
    (pick,) = data["recommendations"]
    assert pick["strategy"] == "psycopg:pool" and pick["pool_size"] in (1, 2), pick


def test_top_and_by_choose_the_statements(stat_target: ConnectionTarget, items: str,
                                          tmp_path: Path) -> None:
    with connect(stat_target, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    run_mix(stat_target, items)
    every = capture(stat_target, out_dir=tmp_path / "all")
    top2 = capture(stat_target, out_dir=tmp_path / "top2", top=2)
    assert [s.calls for s in top2.statements] == [550, 200]
    assert [s.weight for s in top2.statements] == [73, 27]  # shares of the captured calls
    assert "3 more statements beyond --top 2 (250 calls)" in "\n".join(top2.skipped)
    slowest = capture(stat_target, out_dir=tmp_path / "slowest", top=1, by="time")
    assert slowest.statements[0].query == max(every.statements, key=lambda s: s.total_ms).query


def test_the_capture_session_is_read_only(stat_target: ConnectionTarget) -> None:
    with connect_read_only(stat_target) as conn, \
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE capture_must_not_write (id int)")


def test_sample_counts_the_databases_active_backends(stat_target: ConnectionTarget) -> None:
    """Two sessions waiting on an advisory lock are active for as long as it is held."""
    key = secrets.randbits(31)
    with connect(stat_target, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        waiters = [threading.Thread(target=wait_for_lock, args=(stat_target, key))
                   for _ in range(2)]
        try:
            for waiter in waiters:
                waiter.start()
            deadline = time.monotonic() + 60
            while holder.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                 "wait_event = 'advisory'").fetchone()[0] < 2:
                assert time.monotonic() < deadline, "the waiters never waited"
                time.sleep(0.02)  # between two looks at a condition
            with connect_read_only(stat_target) as conn:
                found = sample_concurrency(conn, seconds=0.3, interval_s=0.1)
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
            for waiter in waiters:
                waiter.join()
    assert found.samples == (2, 2, 2)
    assert (found.median, found.p95, found.suggested_workers) == (2.0, 2, 2)


def wait_for_lock(target: ConnectionTarget, key: int) -> None:
    with connect(target, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


def test_a_database_without_the_extension_gets_one_line_and_no_files(
        stat_target: ConnectionTarget, tmp_path: Path) -> None:
    database = "noext_" + secrets.token_hex(3)
    with connect(stat_target, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {quote_ident(database)}")
    try:
        with pytest.raises(StatStatementsUnavailable) as err:
            capture(stat_target.with_params(dbname=database), out_dir=tmp_path / "w")
    finally:
        with connect(stat_target, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {quote_ident(database)} WITH (FORCE)")
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and err.value.exit_code == 2
    assert "\n" not in message and f"not installed in database '{database}'" in message
    assert "CREATE EXTENSION pg_stat_statements" in message
    assert stat_target.password not in message and "***" in message
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_does_not_preload_it_gets_one_line_and_no_files(tmp_path: Path) -> None:
    """CREATE EXTENSION works without the preload; reading the view does not."""
    with EmbeddedServer(max_connections=10,
                        settings={"shared_preload_libraries": "''"}) as bare:
        assert bare.target is not None
        with pytest.raises(StatStatementsUnavailable) as err:
            capture(bare.target, out_dir=tmp_path / "w")
    message = str(err.value)
    assert "\n" not in message and "installed in database 'poolbench'" in message
    assert "shared_preload_libraries = 'pg_stat_statements'" in message and "restart" in message
    assert list(tmp_path.iterdir()) == []


def test_the_capture_command_writes_the_workload_and_never_the_password(
        stat_target: ConnectionTarget, items: str, tmp_path: Path) -> None:
    """``poolbench capture`` as a user runs it: the DSN without its password (that comes
    from PGPASSWORD, never a command line); a summary, the scripts and workload.txt."""
    with connect(stat_target, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    run_mix(stat_target, items)
    password = stat_target.password
    assert password
    dsn = " ".join(f"{k}={v}" for k, v in stat_target.params if k != "password")
    env = clean_env(PGPASSWORD=password)
    result = run_cli("capture", "--dsn", dsn, "--top", "3", "--out", "wl", cwd=tmp_path,
                     env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (tmp_path / "wl" / "workload.txt").read_text().split()
    assert lines and all(line.startswith("-f") or "@" in line for line in lines)
    assert "workload.txt" in result.stdout
    for path in (tmp_path / "wl").iterdir():
        assert password not in path.read_text()
    assert password not in result.stdout + result.stderr


def test_the_capture_command_needs_a_server(tmp_path: Path) -> None:
    result = run_cli("capture", "--out", "wl", cwd=tmp_path)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "poolbench: error: capture reads a running server's pg_stat_statements: give --dsn (or "
        "DATABASE_URL, or the seed's DB_* variables)"]
    assert not (tmp_path / "wl").exists()
