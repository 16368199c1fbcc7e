"""What a new connection costs: the protocol probe's slices fit in a wall clock timed around
each whole connection, the probe speaks SCRAM and md5 and says "not measured" where it cannot
speak the method, it counts each slice's round trips, it times TLS as its own slice, it
measures through the route it is given, each driver's connect() is timed alone and under
concurrency, and a run with a no-pool strategy carries the figures. Under --tls every
connection of a run, each strategy's included, is over TLS."""

from __future__ import annotations

import dataclasses
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import jsonschema
import psycopg
import pytest
from conftest import run_cli, users_dsn
from psycopg import sql
from rich.console import Console

from poolbench import RunConfig, run
from poolbench.db.certificate import make_self_signed_certificate
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConnectError
from poolbench.events import RunEvents
from poolbench.measure.connect_probe import SLICES, connect_cost, probe_once
from poolbench.network.relay_process import RelayProcess
from poolbench.poolers.routes import open_route
from poolbench.report.console import render_connect_cost
from poolbench.report.html import report_html
from poolbench.report.markdown import markdown
from poolbench.strategies import REGISTRY

PASSWORD = "it's a pass: phrase"  # quoted, spaced: the probe must send it as it is
# Round trips per slice over plain TCP with SCRAM, counted as docs/connect-cost.md says:
# TCP 1; startup, client-first, client-final 3; the key derivation and the backend's start
# wait for nothing the client sent; SELECT 1 is 1.
SCRAM_ROUND_TRIPS = {"tcp": 1, "tls": 0, "auth_exchange": 3, "scram_key_derivation": 0,
                     "backend_start": 0, "first_query": 1}


def create_role(server: EmbeddedServer, name: str, *, encryption: str) -> ConnectionTarget:
    """A superuser role (the run needs the server's statistics) whose password is stored
    hashed as ``encryption`` says; its target."""
    assert server.target is not None
    with psycopg.connect(server.target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("SET password_encryption = {}").format(
            sql.Literal(encryption)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(PASSWORD)))
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                              (name,)).fetchone()[0]
    assert stored.startswith("md5" if encryption == "md5" else "SCRAM-SHA-256$")
    return server.target.with_params(user=name, password=PASSWORD)


def hba_first(server: EmbeddedServer, *lines: str) -> None:
    """``lines`` at the top of the server's pg_hba.conf (the first matching line decides),
    then a restart: unlike a reload, it has taken effect when it returns."""
    assert server.target is not None
    with psycopg.connect(server.target.conninfo(), autocommit=True) as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
    hba.write_text("".join(f"{line}\n" for line in lines) + hba.read_text())
    server.restart()


@pytest.fixture(scope="module")
def md5_server() -> Iterator[EmbeddedServer]:
    """A server that asks role md5_user for an md5 password (the default before PostgreSQL
    14, still common on managed and legacy servers) and rejects role refused_user."""
    with EmbeddedServer() as server:
        create_role(server, "md5_user", encryption="md5")
        create_role(server, "refused_user", encryption="scram-sha-256")
        hba_first(server, "host all md5_user 127.0.0.1/32 md5",
                  "host all refused_user 127.0.0.1/32 reject")
        yield server


@pytest.fixture(scope="module")
def md5_target(md5_server: EmbeddedServer) -> ConnectionTarget:
    assert md5_server.target is not None
    return md5_server.target.with_params(user="md5_user", password=PASSWORD)


def test_the_probe_speaks_md5(md5_target: ConnectionTarget) -> None:
    from poolbench.errors import ConnectError

    times = probe_once(md5_target)
    assert times.slices["auth_exchange"] > 0 and times.slices["scram_key_derivation"] == 0
    assert times.round_trips == {**SCRAM_ROUND_TRIPS, "auth_exchange": 2}  # startup, password
    # The server checked the hash: a wrong password is refused with its reason.
    with pytest.raises(ConnectError, match="password authentication failed"):
        probe_once(md5_target.with_params(password="wrong"))
    cost = connect_cost(md5_target, samples=10, concurrency=(1,), drivers=("psycopg2",))
    assert cost.not_measured is None and set(cost.slices) == set(SLICES)
    assert cost.total is not None and cost.total.count == 10
    assert cost.drivers[0].latency is not None and cost.drivers[0].latency.count == 10


def test_a_run_against_an_md5_server_completes_with_every_report(
        md5_target: ConnectionTarget, md5_server: EmbeddedServer, tmp_path: Path) -> None:
    results = run(RunConfig(target=md5_target, strategies=("psycopg2:none", "psycopg:pool"),
                            rows=20, workers=2, warmup=0, trials=1, table="t_md5",
                            out_dir=tmp_path))
    (cost,) = results.connect_cost
    assert cost.not_measured is None and cost.total is not None
    assert cost.total.count == 50 and not results.not_measured
    data = json.loads((tmp_path / "results.json").read_text())
    schema = json.loads((Path(__file__).parents[1] / "src" / "poolbench" /
                         "results.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data["connect_cost"][0]["route"] == "direct"
    assert data["connect_cost"][0]["unaccounted"]["count"] == 50
    total_ms = f"{cost.total.p50_us / 1000:.2f}"
    assert total_ms in (tmp_path / "results.md").read_text()
    assert "SCRAM key derivation" in (tmp_path / "report.html").read_text()
    # A probe the server refuses is "not measured", with the server's reason, in every view.
    refused = md5_target.with_params(user="refused_user")
    cost = connect_cost(refused, samples=3, concurrency=(1,), drivers=("psycopg2",))
    assert cost.total is None and cost.slices == {} and cost.unaccounted is None
    assert cost.not_measured is not None and "pg_hba.conf rejects" in cost.not_measured
    assert cost.drivers[0].latency is None and "pg_hba.conf" in (cost.drivers[0].not_measured
                                                                  or "")
    shown = replace(results, connect_cost=(cost,))
    for text in (markdown(shown), report_html(shown)):
        assert "not measured: the server refused the probe: pg_hba.conf rejects" in text
    jsonschema.validate(json.loads(json.dumps(shown.to_dict())), schema)
    assert PASSWORD not in json.dumps(shown.to_dict()) + markdown(shown) + report_html(shown)


def test_a_method_the_probe_cannot_speak_is_not_measured_with_the_reason() -> None:
    # The embedded server's binaries are built with GSSAPI: they accept a gss line in
    # pg_hba.conf and ask the client for it.
    with EmbeddedServer() as server:
        gss = create_role(server, "gss_user", encryption="scram-sha-256")
        hba_first(server, "host all gss_user 127.0.0.1/32 gss")
        cost = connect_cost(gss, samples=5, concurrency=(1, 2), drivers=("psycopg", "psycopg2"))
    assert cost.total is None and cost.slices == {}
    assert cost.not_measured is not None and "GSSAPI" in cost.not_measured
    assert [(d.driver, d.concurrency) for d in cost.drivers] == [
        ("psycopg", 1), ("psycopg", 2), ("psycopg2", 1), ("psycopg2", 2)]
    assert all(d.latency is None and d.not_measured for d in cost.drivers)
    console = Console(record=True, width=200)
    render_connect_cost(cost, console)
    text = console.export_text()
    assert "not measured: the server asks for GSSAPI authentication" in text
    assert PASSWORD not in text + json.dumps(dataclasses.asdict(cost))


def test_through_a_pgbouncer_route_connects_go_through_pgbouncer(
        target: ConnectionTarget) -> None:
    with open_route("pgbouncer:session", target, pool_size=1, max_clients=20,
                    keep_prepared=False) as route:
        assert route.probe is not None and route.target.get("port") != target.get("port")
        before = route.probe.counters()
        cost = connect_cost(route.target, route=route.name, samples=10, concurrency=(1, 2),
                            drivers=("psycopg",))
        after = route.probe.counters()
    assert cost.route == "pgbouncer:session" and cost.not_measured is None
    assert cost.total is not None and cost.total.count == 10
    # Each probe connection's SELECT 1 went through PgBouncer (direct, it would count none).
    assert after.queries - before.queries >= 10
    assert all(d.latency is not None and d.latency.count == 10 for d in cost.drivers)
    console = Console(record=True, width=200)
    render_connect_cost(cost, console)
    assert "route pgbouncer:session" in console.export_text()


def test_probe_slices_fit_in_a_wall_clock_around_the_connection(
        target: ConnectionTarget) -> None:
    for _ in range(20):
        times = probe_once(target)
        assert set(times.slices) == set(SLICES)
        assert all(ns >= 0 for ns in times.slices.values()), times
        # The wall clock is started before the TCP connect and stopped after the socket is
        # closed, apart from the slices: a slice counted twice or timed outside the
        # connection would make them add up to more than it.
        assert sum(times.slices.values()) <= times.wall_ns, times
        assert times.unaccounted_ns == times.wall_ns - sum(times.slices.values())
        assert times.slices["tls"] == 0  # no TLS asked for: no TLS slice
        assert times.round_trips == SCRAM_ROUND_TRIPS and times.tls_version is None
    cost = connect_cost(target, samples=30, concurrency=(1, 4), drivers=("psycopg", "asyncpg"))
    assert cost.route == "direct" and cost.not_measured is None
    assert set(cost.slices) == set(SLICES)
    assert cost.total is not None and cost.unaccounted is not None
    assert cost.total.count == cost.unaccounted.count == 30
    # What no slice covers is its own figure: slices + rest = the wall clock (means, at the
    # histograms' precision).
    assert cost.parts_sum_us + cost.unaccounted.mean_us == pytest.approx(cost.total.mean_us,
                                                                         rel=0.01, abs=2)
    # SCRAM (the embedded server's only method) ran: the client derived its key.
    assert cost.slices["scram_key_derivation"].p50_us > 0
    # Plain TCP: the target asks for no TLS, and the probe says it measured none: the TLS
    # slice is zero in every connection (its histogram's lowest bucket, 1 µs).
    assert target.get("sslmode") is None and cost.tls is False
    assert cost.slices["tls"].count == 30 and cost.slices["tls"].max_us <= 1
    assert cost.round_trips == SCRAM_ROUND_TRIPS and cost.tls_version is None
    # sslmode=prefer asks, the server (ssl off) answers N: one round trip, then plain text;
    # require refuses to go on.
    preferred = probe_once(target.with_params(sslmode="prefer"))
    assert preferred.round_trips == {**SCRAM_ROUND_TRIPS, "tls": 1}
    assert preferred.tls_version is None
    with pytest.raises(ConnectError, match="sslmode=require asks for TLS but the server does "
                                           "not accept it"):
        probe_once(target.with_params(sslmode="require"))
    assert [(d.driver, d.concurrency) for d in cost.drivers] == [
        ("psycopg", 1), ("psycopg", 4), ("asyncpg", 1), ("asyncpg", 4)]
    assert all(d.latency is not None and d.latency.count == 30 and d.not_measured is None
               for d in cost.drivers)


def test_probe_refuses_a_wrong_password_with_the_servers_reason(target: ConnectionTarget) -> None:
    from poolbench.errors import ConnectError

    with pytest.raises(ConnectError, match="password authentication failed"):
        probe_once(target.with_params(password="wrong"))


def test_the_probe_logs_in_as_libpq_does_when_the_dsn_names_no_password(
        target: ConnectionTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    """The password in PGPASSWORD, not the DSN (as docs/database.md advises): the drivers'
    libpq finds it itself, and the probe, which speaks the protocol itself, logs in with
    the login libpq chose."""
    assert target.password
    unnamed = users_dsn(target, "password")
    monkeypatch.setenv("PGPASSWORD", target.password)
    assert unnamed.logged_in().password == target.password
    cost = connect_cost(unnamed, samples=5, concurrency=(1,), drivers=("psycopg", "asyncpg"))
    assert cost.not_measured is None and cost.total is not None and cost.total.count == 5
    assert all(d.not_measured is None for d in cost.drivers), cost.drivers


def test_the_probe_connects_where_libpq_does_when_the_dsn_names_no_host(
        server: EmbeddedServer, target: ConnectionTarget,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PGHOST and PGPORT, not the DSN, name the server: libpq connects there, and so does
    the probe (it used to try 127.0.0.1:5432). Over a Unix socket, which the probe does not
    time, it says so and the drivers are still measured."""
    unnamed = users_dsn(target, "host", "port")
    monkeypatch.setenv("PGHOST", target.get("host") or "")
    monkeypatch.setenv("PGPORT", target.get("port") or "")
    found = unnamed.logged_in()
    assert (found.get("host"), found.get("port")) == (target.get("host"), target.get("port"))
    cost = connect_cost(unnamed, samples=3, concurrency=(1,), drivers=("psycopg",))
    assert cost.not_measured is None and cost.total is not None and cost.total.count == 3
    assert server.root is not None
    monkeypatch.setenv("PGHOST", str(server.root))  # the server's Unix socket's directory
    cost = connect_cost(unnamed, samples=3, concurrency=(1,), drivers=("psycopg",))
    assert cost.not_measured is not None and "Unix socket" in cost.not_measured
    assert cost.drivers[0].not_measured is None and cost.drivers[0].latency.count == 3


def test_of_a_list_of_hosts_the_probe_times_the_one_libpq_reaches(
        tmp_path: Path, server: EmbeddedServer, target: ConnectionTarget) -> None:
    """``host=a,b port=p,q``: libpq tries each in turn; the probe (which connects without
    libpq) and PgBouncer are given the one it reached, not the list, even when the DSN names
    everything else; each driver is given the list. The first here refuses at once (port 1
    is closed)."""
    host, port = target.get("host") or "", target.get("port") or ""
    listed = target.with_params(host=f"{host},{host}", port=f"1,{port}",
                                target_session_attrs="read-write")
    found = listed.logged_in()
    assert (found.get("host"), found.get("port")) == (host, port)
    cost = connect_cost(listed, samples=3, concurrency=(1,))
    assert cost.not_measured is None and cost.total is not None and cost.total.count == 3
    # each driver is given the list as it takes one (asyncpg: lists of hosts and ports)
    assert [(d.driver, d.not_measured, d.latency and d.latency.count) for d in cost.drivers] \
        == [(driver, None, 3) for driver in ("psycopg", "psycopg2", "asyncpg")]
    # and a run on that DSN, each driver's pool through the list, counts agreeing
    result = run_cli("run", "--dsn", listed.conninfo(), "--strategies",
                     "psycopg:pool,psycopg2:threaded,asyncpg:pool", "-n", "20", "-w", "2",
                     "--warmup", "0", "--trials", "1", "--table", "listed_hosts", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert [(s["name"], s["server"]["ok"]) for s in data["strategies"]] == [
        ("psycopg:pool", True), ("psycopg2:threaded", True), ("asyncpg:pool", True)]
    # a list of Unix sockets' directories: a run, its activity sampler too (which asks
    # where the server runs only of one host and port)
    assert server.root is not None
    sockets = listed.with_params(host=f"{server.root},{server.root}")
    result = run_cli("run", "--dsn", sockets.conninfo(), "--strategies",
                     "psycopg:pool,asyncpg:pool", "-n", "20", "-w", "2", "--warmup", "0",
                     "--trials", "1", "--table", "listed_sockets", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert [(s["name"], s["server"]["ok"]) for s in data["strategies"]] == [
        ("psycopg:pool", True), ("asyncpg:pool", True)]
    assert "server activity sampler" not in data["not_measured"], data["not_measured"]


def test_connect_cost_command_writes_json_and_masks_the_password(
        tmp_path: Path, target: ConnectionTarget) -> None:
    result = run_cli("connect-cost", "--dsn", target.conninfo(), "--samples", "20",
                     "--concurrency", "1,2", "--drivers", "psycopg2", cwd=tmp_path,
                     keep_password=True)  # masked wherever it is shown
    assert result.returncode == 0, result.stderr
    assert "SCRAM key derivation" in result.stdout and "waiting for CPU/GIL" in result.stdout
    data = json.loads((tmp_path / "reports" / "connect_cost.json").read_text())
    assert data["samples"] == 20 and data["total"]["count"] == 20
    assert target.password not in result.stdout + result.stderr + json.dumps(data)


def test_connect_cost_command_with_tls_measures_a_handshake_on_the_embedded_server(
        tmp_path: Path) -> None:
    result = run_cli("connect-cost", "--tls", "--samples", "5", "--concurrency", "1",
                     "--drivers", "psycopg", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "reports" / "connect_cost.json").read_text())
    assert data["tls"] is True and data["not_measured"] is None
    assert data["slices"]["tls"]["count"] == 5 and data["slices"]["tls"]["p50_us"] > 100
    assert data["drivers"][0]["latency"]["count"] == 5


@pytest.fixture(scope="module")
def tls_server() -> Iterator[EmbeddedServer]:
    """A server offering TLS with a self-signed certificate (clients: sslmode=require) that
    logs each connection, saying whether it is over TLS."""
    with EmbeddedServer(tls=True, settings={"log_connections": "on"}) as server:
        yield server


@pytest.fixture(scope="module")
def tls_target(tls_server: EmbeddedServer) -> ConnectionTarget:
    assert tls_server.target is not None and tls_server.target.get("sslmode") == "require"
    return tls_server.target


def test_the_probe_times_tls_as_its_own_slice_and_counts_its_round_trips(
        tls_server: EmbeddedServer, tls_target: ConnectionTarget, tmp_path: Path) -> None:
    before = time.perf_counter_ns()
    times = probe_once(tls_target)
    around = time.perf_counter_ns() - before
    assert times.tls_version == "TLSv1.3" and times.tls_cipher
    assert times.slices["tls"] > 0 and all(ns >= 0 for ns in times.slices.values())
    # The slices fit in the probe's own wall clock, which fits in one timed around it.
    assert sum(times.slices.values()) <= times.wall_ns <= around
    # SSLRequest 1 + TLS 1.3's handshake 2: PostgreSQL 17 takes its key exchange on one
    # curve, prime256v1 (ssl_ecdh_curve; it cannot take X25519), an OpenSSL 3 client
    # (libpq's, Python's) offers an X25519 key first, and the server asks again
    # (HelloRetryRequest). PgBouncer takes X25519: 1 (the PgBouncer test below). The rest
    # as over plain TCP, now over TLS.
    assert times.round_trips == {**SCRAM_ROUND_TRIPS, "tls": 3}
    # TLS 1.2's full handshake: 2 (libpq's ssl_max_protocol_version).
    older = probe_once(tls_target.with_params(ssl_max_protocol_version="TLSv1.2"))
    assert older.tls_version == "TLSv1.2" and older.round_trips == {**SCRAM_ROUND_TRIPS,
                                                                    "tls": 3}
    # verify-ca verifies the chain against sslrootcert, as libpq does: the server's own
    # self-signed certificate verifies it, another does not, a missing file is refused.
    own = tls_server.data_dir / "server.crt"
    assert probe_once(tls_target.with_params(sslmode="verify-ca",
                                             sslrootcert=str(own))).tls_version == "TLSv1.3"
    other, _ = make_self_signed_certificate(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        probe_once(tls_target.with_params(sslmode="verify-ca", sslrootcert=str(other)))
    with pytest.raises(ConnectError, match=r"root certificate file .* does not exist"):
        probe_once(tls_target.with_params(sslmode="verify-ca",
                                          sslrootcert=str(tmp_path / "none.crt")))
    cost = connect_cost(tls_target, samples=10, concurrency=(1,), drivers=("psycopg",))
    # A real handshake: the server signs it with the RSA-2048 key made for it, work of
    # well over 100 µs on any CPU (it holds by the work done, not by the machine's speed).
    assert cost.tls and cost.tls_version == "TLSv1.3" and cost.slices["tls"].p50_us > 100
    assert cost.round_trips == {**SCRAM_ROUND_TRIPS, "tls": 3}
    assert cost.total is not None and cost.unaccounted is not None
    assert cost.parts_sum_us + cost.unaccounted.mean_us == pytest.approx(cost.total.mean_us,
                                                                         rel=0.01, abs=2)
    console = Console(record=True, width=200)
    render_connect_cost(cost, console)
    text = console.export_text()
    assert f"over TLSv1.3 ({cost.tls_cipher})" in text and "round trips" in text


def test_under_tls_every_strategy_connects_over_tls(tls_server: EmbeddedServer,
                                                   tls_target: ConnectionTarget,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--tls on a DSN that names no sslmode: every connection the run makes, each
    strategy's included, is over TLS by the server's own account (its connection log;
    pg_stat_ssl for the connections open at the end of each phase)."""
    # The run's connect cost: 1 probe connection and 1 connect per driver, not 50 (the
    # suite's time; --connect-samples 1); they are connections of the run all the same,
    # checked below.
    # libpq's and asyncpg's default sslmode is prefer, which takes TLS where the server
    # offers it: with the default turned to disable, only a connection given sslmode=require
    # is over TLS.
    monkeypatch.setenv("PGSSLMODE", "disable")
    plain = users_dsn(tls_target, "sslmode")
    log = tls_server.log_file
    starts: list[tuple[str, int]] = []
    open_backends: dict[str, set[bool]] = {}
    events = RunEvents()
    events.strategy_started.add_listener(
        lambda strategy, trials: starts.append((strategy, log.stat().st_size)))
    with psycopg.connect(tls_target.with_params(application_name="poolbench-test").conninfo(),
                         autocommit=True) as watcher:
        def ssl_of_open_backends(measurement: object) -> None:
            rows = watcher.execute(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                "WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()"
            ).fetchall()
            open_backends.setdefault(starts[-1][0], set()).update(r[0] for r in rows)
        events.phase_finished.add_listener(ssl_of_open_backends)
        first = log.stat().st_size
        results = run(RunConfig(target=plain, tls=True, strategies=tuple(REGISTRY), rows=2,
                                workers=1, pool_max=1, warmup=0, trials=1, table="t_tls",
                                out_dir=None, sample_interval_s=0, connect_samples=1),
                      events=events)
    assert [name for name, _ in starts] == list(REGISTRY)
    assert all(s.error_count == 0 for s in results.strategies)
    text = log.read_bytes()
    bounds = [first, *(at for _, at in starts), len(text)]
    for i, (label, begin, end) in enumerate(zip(["before", *REGISTRY], bounds, bounds[1:])):
        authorized = [line for line in text[begin:end].decode(errors="replace").splitlines()
                      if "connection authorized" in line]
        assert i == 0 or authorized, f"{label}: no connection in the server's log"
        assert all("SSL enabled" in line for line in authorized), (label, authorized)
    assert all(seen <= {True} for seen in open_backends.values()), open_backends
    assert open_backends.get("psycopg:pool") == {True}  # its pool was open: seen over TLS
    assert results.config["tls"] is True
    assert [c.tls_version for c in results.connect_cost] == ["TLSv1.3"]


def test_tls_connections_through_the_relay_are_let_go_when_they_close(
        tls_target: ConnectionTarget, tmp_path: Path) -> None:
    """A TLS client closes before the server's close_notify reaches it, so its socket is
    reset by the time the relay passes the server's end of stream on; the relay lets the
    connection go all the same. (It kept each one: after 400, as many as a --tls --rtt
    run without a pool makes in seconds, it refused every new connection.)"""
    trace = tmp_path / "relay.jsonl"

    def let_go() -> list[dict[str, object]]:
        records = [json.loads(line) for line in trace.read_text().splitlines()]
        return [r for r in records if "closed" in r and not r["abort"]]

    with RelayProcess(tls_target, 2.0, trace=trace) as relay:
        for _ in range(5):
            with psycopg.connect(relay.target_for(tls_target).conninfo(),
                                 autocommit=True) as conn:
                assert conn.pgconn.ssl_in_use
                conn.execute("SELECT 1")
        deadline = time.monotonic() + 30  # a poll: the relay closes each pair on its own
        while len(let_go()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(r["conn"] for r in let_go()) == [1, 2, 3, 4, 5]


def test_under_tls_clients_reach_pgbouncer_over_tls(tls_target: ConnectionTarget) -> None:
    with open_route("pgbouncer:transaction", tls_target, pool_size=1, max_clients=10,
                    keep_prepared=False) as route:
        assert route.target.get("sslmode") == "require"
        times = probe_once(route.target)
        with psycopg.connect(route.target.conninfo()) as conn:
            assert conn.pgconn.ssl_in_use
    # PgBouncer takes X25519 (tls_ecdhcurve = auto): TLS 1.3 in one round trip.
    assert times.tls_version == "TLSv1.3" and times.round_trips["tls"] == 2


def test_tls_against_a_server_without_ssl_is_a_one_line_error(
        tmp_path: Path, target: ConnectionTarget) -> None:
    result = run_cli("run", "--dsn", target.conninfo(), "--tls", "--strategies",
                     "psycopg:none", "-n", "5", "-w", "1", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not accept TLS" in lines[0] and "--tls" in lines[0], lines
    assert target.password not in result.stdout + result.stderr


def test_a_run_with_a_no_pool_strategy_carries_the_breakdown(target: ConnectionTarget,
                                                            table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg2:none", "psycopg:pool"),
                            rows=20, workers=3, warmup=0, trials=1, table=table, out_dir=None))
    (cost,) = results.connect_cost
    assert cost.total is not None and cost.total.count == 50
    assert [(d.driver, d.concurrency) for d in cost.drivers] == [("psycopg2", 1),
                                                                 ("psycopg2", 3)]


def test_a_run_measures_connects_through_the_route_its_no_pool_strategy_took(
        target: ConnectionTarget, table: str, admin: psycopg.Connection) -> None:
    def sessions() -> int:
        return admin.execute("SELECT sum(sessions) FROM pg_stat_database").fetchone()[0]

    before = sessions()
    results = run(RunConfig(target=target, strategies=("psycopg2:none",),
                            via=("pgbouncer:transaction",), rows=10, workers=2, warmup=0,
                            trials=1, table=table, out_dir=None, sample_interval_s=0))
    (cost,) = results.connect_cost
    assert cost.route == "pgbouncer:transaction" and not results.not_measured
    assert cost.not_measured is None and cost.total is not None and cost.total.count == 50
    assert all(d.latency is not None and d.latency.count == 50 for d in cost.drivers)
    # Through PgBouncer, the probe's 50 connections and the drivers' 100 are PgBouncer's
    # clients: the server sees only the pooler's few server connections (and the run's
    # own sessions). Straight to the server, it would have counted 150 more.
    assert sessions() - before < 50


def test_a_level_of_more_threads_than_connects_is_reported_as_the_threads_used(
        target: ConnectionTarget) -> None:
    """Each thread makes one connect at least: 8 threads asked for 2 connects run 2, and
    the row says 2, not 8; levels that come to the same are measured once."""
    cost = connect_cost(target, samples=2, concurrency=(8, 1, 2), drivers=("psycopg",))
    assert [(d.driver, d.concurrency, d.latency and d.latency.count)
            for d in cost.drivers] == [("psycopg", 1, 2), ("psycopg", 2, 2)]
