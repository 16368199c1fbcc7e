"""--clone: the run goes to a copy of the database (CREATE DATABASE ... TEMPLATE), where
scripts may write, and the copy is dropped however the run ends; PostgreSQL's refusals
are one line; cleanup drops a leftover copy, and only one poolbench made."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import run_cli
from psycopg import sql

from poolbench import RunConfig, run
from poolbench.db.clone import PREFIX, clone_name, create_clone, drop_leftover_clone
from poolbench.db.target import ConnectionTarget
from poolbench.db.workload import new_run_tag, quote_ident
from poolbench.errors import PermissionProblem
from poolbench.events import RunEvents
from poolbench.workloads.scripted import load_scripts

# Writes to tables the template holds: an UPDATE of its rows and an INSERT.
WRITE = """\\set id random(1, 3)
UPDATE accounts SET balance = balance + 1 WHERE id = :id;
INSERT INTO notes (body) VALUES ('written by poolbench');
"""
ACCOUNTS = [(1, 100), (2, 200), (3, 300)]
QUICK = ("--strategies", "psycopg:pool", "-w", "2", "--pool-max", "2", "-n", "20",
         "--warmup", "0", "--trials", "1", "--sample-interval", "0", "--no-chart")


def _connect(target: ConnectionTarget) -> psycopg.Connection:
    return psycopg.connect(target.with_params(application_name="poolbench-test").conninfo(),
                           autocommit=True)


@pytest.fixture(scope="module")
def template(target: ConnectionTarget) -> Iterator[ConnectionTarget]:
    """A database of this module's own (no other test's session can be on it), with the
    tables the scripts write to; every test leaves it as it was (that is what --clone is
    for); dropped afterwards."""
    name = "tpl_" + secrets.token_hex(4)
    with _connect(target) as conn:
        conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    tpl = target.with_params(dbname=name)
    with _connect(tpl) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        conn.execute("INSERT INTO accounts VALUES (1, 100), (2, 200), (3, 300)")
        conn.execute("CREATE TABLE notes (body text NOT NULL)")
    yield tpl
    with _connect(target) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def _contents(tpl: ConnectionTarget) -> tuple[list[tuple[int, int]], int]:
    with _connect(tpl) as conn:
        return (conn.execute("SELECT id, balance FROM accounts ORDER BY id").fetchall(),
                conn.execute("SELECT count(*) FROM notes").fetchone()[0])


def _clones(target: ConnectionTarget) -> list[str]:
    with _connect(target) as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (PREFIX,))]


def test_a_writing_script_runs_in_the_clone_and_leaves_the_database_as_it_was(
        tmp_path: Path, template: ConnectionTarget) -> None:
    """Without --allow-writes, on a server poolbench did not start: with --clone the writes
    run (directly and through PgBouncer), the template's rows are unchanged, the clone is
    gone, and results.json says which clone the run used."""
    (tmp_path / "write.sql").write_text(WRITE)
    result = run_cli("run", "--dsn", template.conninfo(), "--clone", "-f", "write.sql",
                     "--via", "direct,pgbouncer:transaction", *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    clone = data["environment"]["clone"]
    assert clone["name"] == clone_name(data["run_tag"]) and clone["run_tag"] == data["run_tag"]
    assert clone["template"] == template.dbname
    assert clone["size_bytes"] > 0 and clone["create_s"] > 0
    assert data["config"]["clone"] is True
    assert f"clone: {clone['name']}, a copy of {template.dbname} (" in result.stderr
    assert [s["route"] for s in data["strategies"]] == ["direct", "pgbouncer:transaction"]
    for s in data["strategies"]:  # every write ran, and none failed (no read-only session)
        assert [(p["phase"], p["ops"], p["errors"]) for p in s["phases"]] == [
            ("mix", 20, {}), ("script:write.sql", 20, {})], s["name"]
    assert _contents(template) == (ACCOUNTS, 0)
    assert _clones(template) == []


def test_a_template_in_use_is_one_line_naming_the_sessions_and_leaves_nothing(
        tmp_path: Path, template: ConnectionTarget) -> None:
    """PostgreSQL copies a database only while no other session is on it."""
    (tmp_path / "write.sql").write_text(WRITE)
    with _connect(template):
        result = run_cli("run", "--dsn", template.conninfo(), "--clone", "-f", "write.sql",
                         *QUICK, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"poolbench: error: --clone: PostgreSQL copies database '{template.dbname}' only "
        "while no other session uses it, and 1 other session is connected to it "
        "(pg_stat_activity); close them (applications, psql, poolers' server connections) or "
        "wait for them, or run without --clone; nothing was created"]
    assert _clones(template) == []
    assert list((tmp_path / "reports").iterdir()) == []  # nothing written


def test_a_role_without_createdb_is_refused_in_one_line(target: ConnectionTarget,
                                                        template: ConnectionTarget) -> None:
    role, password = "r_" + secrets.token_hex(4), secrets.token_hex(8)
    with _connect(target) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        try:
            with pytest.raises(PermissionProblem) as refused:
                create_clone(template.with_params(user=role, password=password), new_run_tag())
        finally:
            admin.execute(f"DROP ROLE {role}")
    assert str(refused.value) == (
        f"--clone: role '{role}' may not create a copy of database '{template.dbname}' "
        f"(permission denied to create database); ALTER ROLE {role} CREATEDB, or connect as "
        "a role that has it; or run without --clone")
    assert refused.value.exit_code == 4  # docs/exit-codes.md: no permission
    assert _clones(template) == []


def test_a_run_that_fails_still_drops_its_clone(tmp_path: Path,
                                                template: ConnectionTarget) -> None:
    """A script the server refuses ends the run (exit 2) after the clone was made; a
    KeyboardInterrupt in the middle of a library run: the clone goes either way."""
    (tmp_path / "gone.sql").write_text("SELECT * FROM nowhere;\n")
    result = run_cli("run", "--dsn", template.conninfo(), "--clone", "-f", "gone.sql",
                     *QUICK, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "clone: poolbench_clone_pb" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "poolbench: error: gone.sql:1: the server refused the statement: relation \"nowhere\"")
    assert _clones(template) == []

    events = RunEvents()
    made: list[str] = []
    events.clone_ready.add_listener(lambda clone: made.append(clone.name))

    def ctrl_c(**_: object) -> None:
        assert _clones(template) == made  # mid-run: the clone is there
        raise KeyboardInterrupt

    events.phase_started.add_listener(ctrl_c)
    (tmp_path / "write.sql").write_text(WRITE)
    with pytest.raises(KeyboardInterrupt):
        run(RunConfig(target=template, clone=True, strategies=("psycopg:pool",), workers=2,
                      pool_max=2, rows=20, warmup=0, trials=1, out_dir=None,
                      sample_interval_s=0, scripts=load_scripts([str(tmp_path / "write.sql")],
                                                                [])), events=events)
    assert len(made) == 1
    assert _clones(template) == []
    assert _contents(template) == (ACCOUNTS, 0)


def test_cleanup_drops_a_leftover_clone_and_no_other_database(
        tmp_path: Path, template: ConnectionTarget) -> None:
    """A clone a dead run left is dropped; a database of the same name that poolbench did
    not mark, and one of a similar name that it did, are left as they are."""
    left = create_clone(template, new_run_tag())  # as a run killed at once leaves it
    other_tag = new_run_tag()
    with _connect(template) as conn:  # a session on the template: not blocking a drop
        for name, comment in ((clone_name(other_tag), "the user's own"),
                              (left.name + "_keep", None)):
            conn.execute(f"CREATE DATABASE {quote_ident(name)}")
            comment = comment or conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE datname = %s", (left.name,)).fetchone()[0]
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(comment)))
    try:
        dropped = run_cli("cleanup", "--run-tag", left.run_tag, "--dsn", template.conninfo(),
                          cwd=tmp_path)
        assert dropped.returncode == 0, dropped.stderr
        assert dropped.stdout.splitlines() == [
            f"dropped database {left.name} (the --clone of run {left.run_tag})",
            f"no table users in {template.dbname}: no rows to delete"]
        assert drop_leftover_clone(template, other_tag) == "not ours"
        assert sorted(_clones(template)) == sorted([clone_name(other_tag), left.name + "_keep"])
    finally:
        with _connect(template) as conn:
            for name in (clone_name(other_tag), left.name + "_keep", left.name):
                conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
