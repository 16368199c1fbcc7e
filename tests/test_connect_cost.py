"""What a new connection costs: the protocol probe's slices add up, each driver's connect()
is timed alone and under concurrency, and a run with a no-pool strategy carries the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.measure.connect_probe import SLICES, connect_cost, probe_once


def test_probe_slices_add_up_to_the_connection(target: ConnectionTarget) -> None:
    cost = connect_cost(target, samples=30, concurrency=(1, 4), drivers=("psycopg", "asyncpg"))
    assert set(cost.slices) == set(SLICES) and cost.total.count == 30
    assert cost.parts_sum_us == pytest.approx(cost.total.mean_us, rel=0.10)
    # SCRAM (the embedded server's only method) ran: the client derived its key.
    assert cost.slices["scram_key_derivation"].p50_us > 0
    assert cost.slices["tls"].p50_us < 100  # plain TCP: no handshake to speak of
    assert [(d.driver, d.concurrency) for d in cost.drivers] == [
        ("psycopg", 1), ("psycopg", 4), ("asyncpg", 1), ("asyncpg", 4)]
    assert all(d.latency.count == 30 for d in cost.drivers)


def test_probe_refuses_a_wrong_password_with_the_servers_reason(target: ConnectionTarget) -> None:
    from poolbench.errors import ConnectError

    with pytest.raises(ConnectError, match="password authentication failed"):
        probe_once(target.with_params(password="wrong"))


def test_connect_cost_command_writes_json_and_masks_the_password(
        tmp_path: Path, target: ConnectionTarget) -> None:
    result = run_cli("connect-cost", "--dsn", target.conninfo(), "--samples", "20",
                     "--concurrency", "1,2", "--drivers", "psycopg2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "SCRAM key derivation" in result.stdout and "waiting for CPU/GIL" in result.stdout
    data = json.loads((tmp_path / "reports" / "connect_cost.json").read_text())
    assert data["samples"] == 20 and data["total"]["count"] == 20
    assert target.password not in result.stdout + result.stderr + json.dumps(data)


def test_tls_on_pgservers_binaries_is_refused_clearly(tmp_path: Path) -> None:
    result = run_cli("connect-cost", "--tls", "--samples", "1", cwd=tmp_path)
    assert result.returncode == 2 and "without OpenSSL" in result.stderr, result.stderr


DEBIAN = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_config"))


@pytest.mark.skipif(not DEBIAN, reason="no PostgreSQL built with OpenSSL on this machine "
                    "(pgserver's is not): the TLS slice cannot be measured")
def test_tls_slice_is_measured_on_a_server_built_with_openssl() -> None:
    with EmbeddedServer(tls=True, bin_dir=DEBIAN[-1].parent) as server:
        assert server.target is not None and server.target.get("sslmode") == "require"
        cost = connect_cost(server.target, samples=10, concurrency=(1,), drivers=("psycopg",))
    assert cost.tls and cost.slices["tls"].p50_us > 100  # a real handshake
    assert cost.parts_sum_us == pytest.approx(cost.total.mean_us, rel=0.10)


def test_a_run_with_a_no_pool_strategy_carries_the_breakdown(target: ConnectionTarget,
                                                            table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg2:none", "psycopg:pool"),
                            rows=20, workers=3, warmup=0, trials=1, table=table, out_dir=None))
    cost = results.connect_cost
    assert cost is not None and cost.total.count == 50
    assert [(d.driver, d.concurrency) for d in cost.drivers] == [("psycopg2", 1),
                                                                 ("psycopg2", 3)]
