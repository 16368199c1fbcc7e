"""The --rtt delay relay: bytes intact and in order, each chunk held as its schedule says,
gone with its parent, and bad input refused in one line (docs/network.md)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import psutil
import psycopg
import pytest
from conftest import run_cli
from test_errors import assert_one_line_error

from poolbench.api import _check_relay_reachable
from poolbench.config import RunConfig
from poolbench.db.server import free_port
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError
from poolbench.measure.cluster import ClusterNodes
from poolbench.network.relay_process import RelayProcess

RTT_MS = 2.0


def test_many_connections_get_their_own_results_intact_and_in_order(
        target: ConnectionTarget) -> None:
    """Twenty connections at once, each with a result set of its own size (up to ~150 kB,
    many chunks), through one relay: every row arrives, in order, on its own connection;
    the relay's command line carries no password."""
    query = ("SELECT g, md5(%s::text || '-' || g::text) FROM generate_series(1, %s) g "
             "ORDER BY g")
    results: dict[int, list[tuple[int, str]]] = {}
    errors: list[BaseException] = []
    with RelayProcess(target, RTT_MS) as relay:
        assert relay.proc is not None and target.password
        assert not any(target.password in arg for arg in relay.proc.args)
        relayed = relay.target_for(target)
        assert relayed.get("host") == "127.0.0.1" and relayed.get("port") != target.get("port")

        def one(i: int) -> None:
            try:
                with psycopg.connect(relayed.conninfo(), autocommit=True) as conn:
                    results[i] = conn.execute(query, (i, 100 + 200 * i)).fetchall()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(20)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60  # lost bytes would leave a client waiting forever
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        waiting = sum(thread.is_alive() for thread in threads)
    assert not waiting, f"{waiting} connections never got their whole result"
    assert not errors, errors
    with psycopg.connect(target.conninfo(), autocommit=True) as direct:
        for i in range(20):
            assert results[i] == direct.execute(query, (i, 100 + 200 * i)).fetchall()


def test_each_chunk_leaves_when_its_schedule_says(target: ConnectionTarget,
                                                  tmp_path: Path) -> None:
    """The relay's own record of every chunk: towards the client due half a round trip
    after it arrived; towards the server too, but no earlier than one and a half round
    trips after the connection opened (its handshake); never written before it was due
    less the lead its timers take (how late they were learnt to fire, at most a quarter
    of the one-way delay), and written in the order it arrived, also when several chunks
    wait at once."""
    trace = tmp_path / "relay.jsonl"
    with RelayProcess(target, RTT_MS, trace=trace) as relay, psycopg.connect(
            relay.target_for(target).conninfo(), autocommit=True) as conn:
        for i in range(5):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        # A result of many chunks: several wait in the relay at once, each for its own time.
        assert conn.execute("SELECT repeat('x', 300000)").fetchone() == ("x" * 300000,)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    rtt_s = RTT_MS / 1000
    to_server = [r for r in records if r.get("to") == "server"]
    to_client = [r for r in records if r.get("to") == "client"]
    assert len(to_server) >= 6 and len(to_client) >= 6  # startup, auth, five queries
    for r in to_client:
        assert r["due"] - r["arrival"] == pytest.approx(rtt_s / 2, abs=1e-9)
    for r in to_server:
        assert r["due"] - max(r["arrival"], r["opened"] + rtt_s) == pytest.approx(
            rtt_s / 2, abs=1e-9)
    assert to_server[0]["due"] == pytest.approx(to_server[0]["opened"] + 1.5 * rtt_s, abs=1e-9)
    for direction in (to_server, to_client):
        assert all(0 <= r["lead"] <= rtt_s / 8 for r in direction)
        assert all(r["sent"] >= r["due"] - r["lead"] for r in direction)
        assert [r["arrival"] for r in direction] == sorted(r["arrival"] for r in direction)
        assert [r["sent"] for r in direction] == sorted(r["sent"] for r in direction)


def test_a_run_at_a_distance_reports_the_round_trip_it_measured(
        tmp_path: Path, target: ConnectionTarget, table: str) -> None:
    """`run --rtt 1`: the strategies through the relay, its round trip measured at the
    run's concurrency (4 connections) and reported on the console and in results.json."""
    result = run_cli("run", "--dsn", target.conninfo(), "--rtt", "1", "--strategies",
                     "psycopg:pool", "-n", "20", "-w", "4", "--pool-max", "4", "--trials",
                     "1", "--warmup", "0", "--no-chart", "--sample-interval", "0",
                     "--table", table, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    schema = json.loads((Path(__file__).parents[1] / "src" / "poolbench" /
                         "results.schema.json").read_text())
    jsonschema.validate(data, schema)
    rtt = data["rtt"]
    assert rtt["asked_ms"] == 1 and rtt["concurrency"] == 4 and rtt["round_trips"] >= 4
    assert rtt["error_ms"] == pytest.approx(rtt["measured_ms"] - 1 - rtt["base_ms"], abs=1e-3)
    assert data["config"]["rtt_ms"] == 1 and data["config"]["pooler_near"] == "server"
    assert "rtt: asked 1 ms, measured" in result.stdout
    assert data["verification"]["ok"] and not data["not_measured"]


PARENT = """
import sys, time
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError
from poolbench.measure.cluster import ClusterNodes
from poolbench.network.relay_process import RelayProcess
relay = RelayProcess(ConnectionTarget.from_keywords(source="test", host="127.0.0.1",
                                                    port=sys.argv[1]), 1.0)
relay.start()
print(relay.proc.pid, relay.address[1], flush=True)
time.sleep(600)
"""


def test_the_relay_exits_when_poolbench_dies(tmp_path: Path) -> None:
    """poolbench killed outright (no cleanup of its own runs): the relay sees its stdin end
    and exits, its port closed."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(free_port())],
                              stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        pid, port = (int(v) for v in parent.stdout.readline().split())
        relay = psutil.Process(pid)
        assert relay.is_running() and relay.status() != psutil.STATUS_ZOMBIE
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening while its parent lives
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if relay.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)  # between two looks at the process table
    else:
        relay.kill()
        pytest.fail("the relay outlived its parent")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize(("rtt", "needle"), [("-1", "--rtt -1"), ("20000", "from 0 to 10000")])
def test_bad_rtt_values_are_refused_in_one_line(tmp_path: Path, rtt: str, needle: str) -> None:
    # Nothing listens at the DSN: a value let through would fail later, with code 3.
    dsn = f"postgresql://u:pw@127.0.0.1:{free_port()}/db"
    result = run_cli("run", "--dsn", dsn, "--rtt", rtt, cwd=tmp_path)
    assert_one_line_error(result, 2, needle)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(("settings", "needle"), [
    ({"rtt_ms": float("nan")}, "--rtt nan"),
    ({"pooler_near": "app"}, "give --rtt too"),
    ({"relay_port": 6000}, "give --rtt too"),
    ({"rtt_ms": 1.0, "pooler_near": "app", "via": ("pooler",),
      "pooler_dsn": ConnectionTarget.from_dsn("postgresql://u@127.0.0.1:6432/db", source="t")},
     "cannot do for a pooler you run"),
])
def test_bad_rtt_settings_are_one_line_config_errors(settings: dict[str, object],
                                                     needle: str) -> None:
    with pytest.raises(ConfigError) as error:
        RunConfig(**settings)
    assert error.value.exit_code == 2 and needle in str(error.value)
    assert "\n" not in str(error.value)


def test_a_relay_port_in_use_is_refused_in_one_line(tmp_path: Path, target: ConnectionTarget,
                                                    admin: psycopg.Connection,
                                                    table: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "--dsn", target.conninfo(), "--rtt", "1", "--relay-port",
                         str(port), "--table", table, cwd=tmp_path)
    assert_one_line_error(result, 2, f"--relay-port {port}", "cannot listen",
                          "give a free port")
    assert admin.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None
    assert not list(tmp_path.rglob("results.json"))


def test_cluster_nodes_on_other_machines_are_refused_in_one_line() -> None:
    """The relay listens on this machine's loopback: a node elsewhere could not reach it."""
    here = {"host": socket.gethostname()}
    _check_relay_reachable(ClusterNodes("local:1", None, ("tcp://127.0.0.1:1",), (here,)))
    with pytest.raises(ConfigError) as error:
        _check_relay_reachable(ClusterNodes("tcp://10.0.0.1:8786", None,
                                            ("tcp://127.0.0.1:1", "tcp://10.0.0.2:1"),
                                            (here, {"host": "db-client-2"})))
    assert error.value.exit_code == 2 and "nodes on db-client-2 cannot reach" in str(error.value)
