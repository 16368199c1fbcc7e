"""Routes through a real PgBouncer (Debian's package, started by poolbench): every strategy
completes, the server's and PgBouncer's counts agree, the pool bounds the server's
backends, prepared statements are handled, and no pgbouncer or auth file outlives a run.

PgBouncer is required: these tests fail (never skip) where it is missing; `.ci/run`
installs it."""

from __future__ import annotations

import glob
import json
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest
from conftest import (
    clean_env,
    run_cli,
    seed_table,
    start_cli,
    table_contents,
    users_dsn,
    wait_for_run_rows,
)

from poolbench import RunConfig, run
from poolbench.db.target import ConnectionTarget
from poolbench.strategies import REGISTRY

ROUTES = ("pgbouncer:session", "pgbouncer:transaction")


def no_pgbouncer_left() -> None:
    """No pgbouncer process and no temporary directory (config, auth file) of one."""
    assert subprocess.run(["pgrep", "-x", "pgbouncer"], capture_output=True).returncode == 1
    assert glob.glob(str(Path(tempfile.gettempdir()) / "poolbench-pgbouncer-*")) == []


def test_every_strategy_through_each_pgbouncer_route(target: ConnectionTarget,
                                                     admin: psycopg.Connection,
                                                     table: str) -> None:
    seed_table(admin, table, 10_000)
    before = table_contents(admin, table)
    results = run(RunConfig(target=target, strategies=tuple(REGISTRY), rows=20, workers=4,
                            pool_max=4, warmup=0, trials=1, table=table, out_dir=None,
                            via=("direct", *ROUTES), connect_samples=1))
    assert [s.name for s in results.strategies] == [
        n if r == "direct" else f"{n}@{r}" for n in REGISTRY for r in ("direct", *ROUTES)]
    for s in results.strategies:
        assert [p.phase for p in s.phases] == ["create", "read", "update", "delete"]
        if s.strategy != "psycopg2:simple":  # not thread-safe, documented: errors counted
            assert s.error_count == 0, (s.name, [p.errors for p in s.phases])
        assert s.server is not None and s.server.ok, (s.name, s.server)
        if s.route == "direct":
            assert s.pooler is None
            continue
        x = s.pooler
        assert x is not None and x.ok, (s.name, x)
        assert x.mode == s.route.split(":")[1] and x.samples > 0  # the stop's look at least
        assert x.server_connections_max <= 4
        # Where the driver sends one statement per operation, PgBouncer forwarded exactly ours.
        attempts = sum(p.ops + p.error_count for p in s.phases)
        checks = {c.name: c for c in x.checks}
        assert checks["pooler transactions"].ours == attempts
        if checks["pooler transactions"].exact:
            assert x.transactions == x.queries == attempts, s.name
        # Behind transaction pooling, prepared statements are off (PgBouncer 1.18).
        assert s.prepared_statements == (s.route == "pgbouncer:session"), s.name
    assert results.verification is not None and results.verification.ok
    assert table_contents(admin, table) == before
    no_pgbouncer_left()


def test_transaction_pooling_bounds_the_servers_backends(target: ConnectionTarget,
                                                         table: str) -> None:
    """32 clients without a pool of their own, through PgBouncer with 2 server connections:
    the server never sees more than 2 benchmark backends. The watcher has looked once
    before the run, and the run waits (before its last phase, after three under load)
    until the watcher has finished a look begun since: its looks span the run."""
    from poolbench.events import RunEvents

    watcher = target.with_params(application_name="poolbench-test")
    seen: list[int] = []
    looked = threading.Condition()
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(watcher.conninfo(), autocommit=True) as conn:
            started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            while not stop.is_set():  # backends of this run only, not a previous test's
                count = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'poolbench' AND backend_type = 'client backend' AND backend_start > %s",
                    (started,)).fetchone()[0]
                with looked:
                    seen.append(count)
                    looked.notify_all()

    def looks_again(timeout_s: float = 120) -> bool:
        """Wait for a look that begins after this call (the next one might be under way)."""
        with looked:
            wanted = len(seen) + 2
            return looked.wait_for(lambda: len(seen) >= wanted or stop.is_set(), timeout_s)

    during: list[int] = []
    events = RunEvents()
    events.phase_started.add_listener(lambda phase, **_: during.append(
        looks_again()) if phase == "delete" and not during else None)
    thread = threading.Thread(target=watch)
    thread.start()
    try:
        assert looks_again(), "the watcher never looked"
        results = run(RunConfig(target=target, strategies=("psycopg:none",), rows=100,
                                workers=32, warmup=0, trials=1, table=table, out_dir=None,
                                via=("pgbouncer:transaction",), pooler_size=2,
                                connect_samples=1), events=events)
    finally:
        stop.set()
        thread.join()
    (s,) = results.strategies
    assert s.error_count == 0 and s.stats["connections_opened"] == 400
    assert during == [True] and len(seen) >= 2 and max(seen) <= 2, seen
    # The console is read once more as the strategy stops, so there is at least a sample;
    # whether one fell while clients queued depends on timing: only its bound is checked.
    assert s.pooler is not None and s.pooler.samples >= 1
    assert s.pooler.server_connections_max <= 2
    assert 0 <= s.pooler.clients_waiting_max <= 32
    assert s.server is not None and s.server.ok


def test_keep_prepared_behind_transaction_pooling_counts_errors_and_explains(
        tmp_path: Path, target: ConnectionTarget, table: str) -> None:
    result = run_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                     "asyncpg:pool", "--via", "pgbouncer:transaction", "--keep-prepared",
                     "-n", "200", "-w", "8", "--pool-max", "8", "--pooler-size", "2",
                     "--warmup", "0", "--trials", "1", "--no-chart", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    (s,) = data["strategies"]
    errors = {k: n for p in s["phases"] for k, n in p["errors"].items()}
    assert any("26000" in k or "42P05" in k for k in errors), errors
    assert s["prepared_statements"] is True
    assert "prepared statements failed behind a transaction pooler" in result.stdout
    assert data["verification"]["ok"] is True
    no_pgbouncer_left()


def test_no_pgbouncer_survives_an_error_or_an_interrupt(tmp_path: Path,
                                                        target: ConnectionTarget,
                                                        admin: psycopg.Connection,
                                                        table: str) -> None:
    seed_table(admin, table, 100)
    # An unexpected error once PgBouncer runs: a stand-in asyncpg whose pool cannot open.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "asyncpg.py").write_text("class Connection: ...\n"
                                       "async def create_pool(**kwargs):\n"
                                       "    raise RuntimeError('no pool today')\n")
    result = run_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                     "asyncpg:pool", "--via", "pgbouncer:transaction", "-w", "2",
                     cwd=tmp_path, env=clean_env(PYTHONPATH=str(shadow)))
    assert result.returncode == 1 and "no pool today" in result.stderr
    no_pgbouncer_left()

    proc = start_cli("run", "--dsn", target.conninfo(), "--table", table, "--strategies",
                     "psycopg:pool", "--via", "pgbouncer:session", "-n", "100000", "-w", "4",
                     "--no-chart", cwd=tmp_path)
    try:
        wait_for_run_rows(admin, table, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        proc.kill()
    no_pgbouncer_left()


def test_missing_pgbouncer_is_a_one_line_error(tmp_path: Path, target: ConnectionTarget) -> None:
    result = run_cli("run", "--dsn", target.conninfo(), "--via", "pgbouncer:transaction",
                     "--pgbouncer-bin", str(tmp_path / "nowhere" / "pgbouncer"),
                     "--table", "never_made", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "apt-get install pgbouncer" in lines[0], result.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--via", "pgbouncer:statement"], "--via"),
    (["--via", "pooler"], "--pooler-dsn"),
    (["--via", "direct,direct"], "twice"),
    (["--pooler-size", "0"], "--pooler-size"),
])
def test_bad_route_options(tmp_path: Path, args: list[str], needle: str) -> None:
    result = run_cli("run", *args, cwd=tmp_path)
    assert result.returncode == 2 and needle in result.stderr, result.stderr


def test_a_pooler_the_user_runs(tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection,
                                table: str) -> None:
    """--via pooler --pooler-dsn: a PgBouncer someone else started (here with poolbench's own
    launcher, as a user would with theirs); its admin console is read when it answers."""
    from poolbench.poolers.pgbouncer import PgBouncer, PoolerSettings

    seed_table(admin, table, 100)
    before = table_contents(admin, table)
    with PgBouncer(target, PoolerSettings(mode="transaction", pool_size=3,
                                          max_clients=100)) as bouncer:
        dsn = bouncer.client_target().conninfo()
        result = run_cli("run", "--dsn", target.conninfo(), "--via", "pooler", "--pooler-dsn",
                         dsn, "--strategies", "psycopg:pool", "-n", "50", "-w", "3",
                         "--pool-max", "3", "--warmup", "0", "--trials", "1", "--no-chart",
                         "--table", table, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (s,) = json.loads((tmp_path / "reports" / "results.json").read_text())["strategies"]
    assert s["name"] == "psycopg:pool@pooler" and s["route"] == "pooler"
    assert s["pooler"] is not None and s["pooler"]["version"].startswith("PgBouncer")
    assert s["server"]["ok"] is True
    # Its server connections stay open: the check read the server once its counts reached ours
    assert any(n.startswith("the pooler you run keeps its server connections open: the "
                            "server's counts were read once they had reached poolbench's")
               for n in s["server"]["notes"]), s["server"]["notes"]
    assert target.password not in result.stdout + result.stderr
    assert table_contents(admin, table) == before


def test_a_pooler_dsn_that_takes_no_connection_is_refused_before_the_run(
        tmp_path: Path, target: ConnectionTarget) -> None:
    """Nothing listens at the --pooler-dsn: one line, exit 3, before any strategy (its pool
    would have waited out --acquire-timeout, then failed as 'unexpected')."""
    from poolbench.db.server import free_port

    dead = target.with_params(host="127.0.0.1", port=str(free_port()))
    result = run_cli("run", "--dsn", target.conninfo(), "--via", "pooler", "--pooler-dsn",
                     dead.conninfo(), "--strategies", "psycopg:pool", "-n", "20", "-w", "2",
                     "--warmup", "0", "--trials", "1", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("poolbench: error: --pooler-dsn:"), result.stderr
    assert "unexpected" not in result.stderr and "psycopg:pool" not in result.stderr


def a_run_through_pgbouncer_agrees_with_it(target: ConnectionTarget, table: str) -> None:
    """A small run of psycopg:pool through a PgBouncer poolbench starts: no error, and
    PgBouncer's counts agree with the run's; no pgbouncer left after it."""
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=20, workers=2,
                            pool_max=2, warmup=0, trials=1, table=table, out_dir=None,
                            via=("pgbouncer:transaction",)))
    (s,) = results.strategies
    assert s.error_count == 0 and s.pooler is not None and s.pooler.ok, s.pooler
    no_pgbouncer_left()


def test_pgbouncer_serves_a_database_whose_name_its_config_cannot_hold(
        target: ConnectionTarget, table: str) -> None:
    """A database named with a space, quotes and an ``=`` (PgBouncer's ``[databases]`` names
    cannot be quoted, pgbouncer#971), or named pgbouncer (its console's): PgBouncer serves
    it under an alias its clients
    ask for; its pool logs in to the database itself, and a run through it agrees with
    PgBouncer's counts (read under the alias)."""
    from psycopg import sql

    from poolbench.poolers.pgbouncer import DATABASE_ALIAS, PgBouncer, PoolerSettings

    admin = target.with_params(application_name="poolbench-test")
    for name in ("pb odd 'db' = x", "pgbouncer"):  # the second: its console's own name
        with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            odd = target.with_params(dbname=name)
            with PgBouncer(odd, PoolerSettings(mode="transaction", pool_size=1,
                                               max_clients=5)) as bouncer, \
                    psycopg.connect(bouncer.client_target().conninfo()) as conn:
                found = conn.execute("SELECT current_database()").fetchone()
            assert (bouncer.database, found) == (DATABASE_ALIAS, (name,))
            a_run_through_pgbouncer_agrees_with_it(odd, table)
        finally:
            with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(name)))


def test_a_password_with_a_line_break_is_refused_in_one_line_not_written_into_the_config(
        target: ConnectionTarget) -> None:
    """PgBouncer's config cannot hold a line break (one would end the pool's line and start
    lines of the password's own): refused before anything is written, naming which value,
    never the value."""
    from psycopg import sql

    from poolbench.errors import ConfigError
    from poolbench.poolers.pgbouncer import PgBouncer, PoolerSettings

    secret = "pb-line\nauth_type = trust"
    admin = target.with_params(application_name="poolbench-test")
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE pb_broken LOGIN PASSWORD {}").format(
            sql.Literal(secret)))
    try:
        broken = target.with_params(user="pb_broken", password=secret)
        with pytest.raises(ConfigError) as refused, \
                PgBouncer(broken, PoolerSettings(mode="transaction", pool_size=1,
                                                 max_clients=5)):
            pass
        message = str(refused.value)
        assert "password holds a line break" in message and "\n" not in message
        assert "pb-line" not in message and "trust" not in message
        no_pgbouncer_left()
    finally:
        with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS pb_broken")


def test_pgbouncer_never_trusts_a_client_even_when_the_target_has_no_password(
        tmp_path: Path, target: ConnectionTarget, table: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A target whose password libpq finds in a pgpass file: PgBouncer still asks every
    client for a password, its admin console too. The strategies get a throw-away one; a
    local user who only knows the server's (pgpass offers it to any port) is refused."""
    from poolbench.poolers.pgbouncer import PgBouncer, PoolerSettings

    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{target.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    bare = users_dsn(target, "password")
    with PgBouncer(bare, PoolerSettings(mode="transaction", pool_size=2,
                                        max_clients=10)) as bouncer:
        assert bouncer.root is not None
        written = "".join(p.read_text() for p in bouncer.root.iterdir() if p.suffix in (
            ".ini", ".txt"))
        assert "trust" not in written and "auth_type = scram-sha-256\n" in written
        strangers = [bare.with_params(host="127.0.0.1", port=str(bouncer.port)),
                     bare.with_params(host="127.0.0.1", port=str(bouncer.port),
                                      dbname="pgbouncer"),
                     bouncer.admin_target().with_params(password="guess")]
        for stranger in strangers:
            with pytest.raises(psycopg.OperationalError, match="authentication failed"):
                psycopg.connect(stranger.conninfo(), connect_timeout=10)
        with psycopg.connect(bouncer.client_target().conninfo()) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == target.get("user")
        with psycopg.connect(bouncer.admin_target().conninfo(), autocommit=True) as conn:
            assert conn.execute("SHOW VERSION").fetchone()[0].startswith("PgBouncer")
    a_run_through_pgbouncer_agrees_with_it(bare, table)


def test_pgbouncer_serves_the_server_and_database_libpq_connects_to(
        target: ConnectionTarget, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DSN naming no host, port or database (PGHOST, PGPORT, PGDATABASE name them, as a
    direct run's libpq reads them): PgBouncer's pool goes to that server and database, and
    its clients ask for it; not to 127.0.0.1:5432 and the user's name. A run through it
    reads PgBouncer's counts for that database, which agree with its own."""
    from poolbench.poolers.pgbouncer import PgBouncer, PoolerSettings

    monkeypatch.setenv("PGHOST", target.get("host") or "")
    monkeypatch.setenv("PGPORT", target.get("port") or "")
    monkeypatch.setenv("PGDATABASE", target.dbname)
    unnamed = users_dsn(target, "host", "port", "dbname")
    with PgBouncer(unnamed, PoolerSettings(mode="transaction", pool_size=1,
                                           max_clients=5)) as bouncer, \
            psycopg.connect(bouncer.client_target().conninfo()) as conn:
        found = conn.execute("SELECT current_database(), inet_server_port()").fetchone()
    assert found == (target.dbname, int(target.get("port") or 0))
    a_run_through_pgbouncer_agrees_with_it(unnamed, table)


@pytest.mark.parametrize(("args", "needle"), [
    (["--pgbouncer-bin", "/bin/false"], "/bin/false is not PgBouncer"),
    (["--pooler-size", "1000"], "lower --pooler-size or raise max_connections"),
])
def test_a_pgbouncer_route_that_cannot_be_is_refused_in_one_line_naming_the_option(
        tmp_path: Path, target: ConnectionTarget, args: list[str], needle: str) -> None:
    """Not PgBouncer's program, or a PgBouncer pool larger than the server takes: exit 2
    in one line naming what to change (the pool is --pooler-size's, not the workers')."""
    result = run_cli("run", "--dsn", target.conninfo(), "--via", "pgbouncer:transaction",
                     "--strategies", "psycopg:pool", "-n", "20", "-w", "2", "--warmup", "0",
                     "--trials", "1", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("poolbench: error:")]
    assert needle in line and "\\n" not in line, line
