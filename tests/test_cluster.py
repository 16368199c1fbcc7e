"""--cluster: the same run spread over a real Dask cluster (LocalCluster with processes, and
a separately started `dask worker`), merged exactly, checked once, cleaned up on a lost node.

Dask is part of the test extra: these tests fail (never skip) without it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import clean_env, cli, run_cli, seed_table, start_cli, table_contents

from poolbench.db.server import free_port
from poolbench.db.target import ConnectionTarget
from poolbench.measure.metrics import decode_histogram
from poolbench.strategies import REGISTRY

SEED_ROWS = 10_000


def results(cwd: Path) -> dict:
    return json.loads((cwd / "reports" / "results.json").read_text())


def test_every_strategy_over_two_nodes(tmp_path: Path, target: ConnectionTarget,
                                       admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 100)
    before = table_contents(admin, table)
    result = run_cli("run", "--dsn", target.conninfo(), "--table", table, "--cluster",
                     "local:2", "--strategies", "all", "-n", "20", "-w", "4", "--pool-max", "4",
                     "--connect-samples", "1",
                     "--warmup", "0", "--trials", "1", "--no-chart", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = results(tmp_path)
    nodes = data["environment"]["cluster"]["nodes"]
    assert len(nodes) == 2 and len({n["address"] for n in nodes}) == 2
    assert [n["workers"] for n in nodes] == [2, 2] and [n["pool_max"] for n in nodes] == [2, 2]
    assert "Ran on 2 nodes" in result.stdout
    assert [s["name"] for s in data["strategies"]] == list(REGISTRY)
    for s in data["strategies"]:
        for p in s["phases"]:
            if s["name"] != "psycopg2:simple":
                assert p["ops"] == 20 and p["errors"] == {}, (s["name"], p["phase"])
            # The merged histogram holds every successful operation of both nodes.
            assert decode_histogram(p["histogram_latency_us"]).get_total_count() == p["ops"]
        assert s["server"]["ok"] is True, (s["name"], s["server"])
    assert data["verification"]["ok"] is True
    assert table_contents(admin, table) == before


def _worker_pids_of(conn: psycopg.Connection, run: subprocess.Popen) -> set[int]:
    """The node processes holding the benchmark's connections (children of the run)."""
    ports = {r[0] for r in conn.execute(
        "SELECT client_port FROM pg_stat_activity WHERE application_name = 'poolbench'")}
    children = {p.pid for p in psutil.Process(run.pid).children(recursive=True)}
    found = set()
    for pid in children:
        try:
            sockets = psutil.Process(pid).net_connections()
            if any(c.laddr and c.laddr.port in ports for c in sockets):
                found.add(pid)
        except psutil.Error:
            continue
    return found


def test_a_killed_node_stops_the_run_cleanly(tmp_path: Path, target: ConnectionTarget,
                                             admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, SEED_ROWS)
    before = table_contents(admin, table)
    proc = start_cli("run", "--dsn", target.conninfo(), "--table", table, "--cluster", "local:2",
                     "--strategies", "psycopg:pool", "-n", "1000000", "-w", "4", "--warmup", "0",
                     "--trials", "1", "--no-chart", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        victims: set[int] = set()
        while not victims:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            if admin.execute(f'SELECT count(*) FROM "{table}" WHERE username LIKE %s',
                             ("pb%",)).fetchone()[0]:
                victims = _worker_pids_of(admin, proc)
            time.sleep(0.1)
        os.kill(min(victims), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode not in (0, 130), stderr
    errors = [line for line in stderr.splitlines() if line.startswith("poolbench: error:")]
    assert len(errors) == 1 and "node tcp://" in errors[0] and "lost" in errors[0], stderr
    data = results(tmp_path)
    assert data["partial"] is True and data["verification"]["ok"] is True
    assert admin.execute(f'SELECT count(*) FROM "{table}" WHERE username LIKE %s',
                         ("pb%",)).fetchone()[0] == 0
    assert table_contents(admin, table) == before


def test_a_node_with_other_versions_is_refused_before_any_write(
        tmp_path: Path, target: ConnectionTarget, admin: psycopg.Connection) -> None:
    """A real `dask worker` whose environment has another poolbench installed."""
    fake = tmp_path / "site"
    (fake / "poolbench-9.9.9.dist-info").mkdir(parents=True)
    (fake / "poolbench-9.9.9.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: poolbench\nVersion: 9.9.9\n")
    port = free_port()
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0"], env=clean_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                               f"tcp://127.0.0.1:{port}", "--nworkers", "1", "--no-dashboard"],
                              env=clean_env(PYTHONPATH=str(fake)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        result = run_cli("run", "--dsn", target.conninfo(), "--cluster",
                         f"tcp://127.0.0.1:{port}", "--table", "never_made_cluster",
                         cwd=tmp_path)
    finally:
        worker.terminate()
        scheduler.terminate()
        worker.wait(timeout=30)
        scheduler.wait(timeout=30)
    assert result.returncode == 2, result.stderr
    assert "poolbench 0.1.0 here, 9.9.9 there" in result.stderr, result.stderr
    assert admin.execute("SELECT to_regclass('never_made_cluster')").fetchone()[0] is None


def test_unreachable_scheduler_is_one_line_exit_3(tmp_path: Path,
                                                  target: ConnectionTarget) -> None:
    # Nothing listens there: Dask retries until the timeout, kept short here.
    result = run_cli("run", "--dsn", target.conninfo(), "--cluster",
                     f"tcp://127.0.0.1:{free_port()}", "--cluster-timeout", "1", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith("database: ")]
    assert result.returncode == 3 and len(lines) == 1, result.stderr
    assert "cannot reach the Dask scheduler" in lines[0]


def test_missing_dask_names_the_install(tmp_path: Path, target: ConnectionTarget) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "distributed.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'distributed'\", name='distributed')\n")
    result = run_cli("run", "--dsn", target.conninfo(), "--cluster", "local:2", cwd=tmp_path,
                     env=clean_env(PYTHONPATH=str(shadow)))
    assert result.returncode == 2 and "pip install 'poolbench[dask]'" in result.stderr


@pytest.mark.parametrize(("args", "needle"), [(["--cluster", "local:0"], "local:N"),
                                              (["--nodes", "2"], "--nodes"),
                                              (["--cluster", "local:2", "--processes", "2"],
                                               "--processes"),
                                              (["--cluster-timeout", "0"], "--cluster-timeout")])
def test_bad_cluster_options(tmp_path: Path, args: list[str], needle: str) -> None:
    result = run_cli("run", *args, cwd=tmp_path)
    assert result.returncode == 2 and needle in result.stderr, result.stderr


def test_ctrl_c_stops_every_node_and_cleans_up(tmp_path: Path, target: ConnectionTarget,
                                               admin: psycopg.Connection, table: str) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: poolbench and the
    LocalCluster's node processes alike. The run stops its nodes, sweeps its rows, writes
    partial results and exits 130; a node taking the signal is not a lost node."""
    seed_table(admin, table, SEED_ROWS)
    before = table_contents(admin, table)
    command, env = cli(["run", "--dsn", target.conninfo(), "--table", table, "--cluster",
                        "local:2", "--strategies", "psycopg:pool", "-n", "1000000", "-w", "4",
                        "--warmup", "0", "--trials", "1", "--no-chart"])
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, stdin=subprocess.DEVNULL, start_new_session=True)  # its own group
    try:
        deadline = time.monotonic() + 120
        while len(_worker_pids_of(admin, proc)) < 2:  # both nodes hold connections
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("poolbench: error:")]
    assert len(errors) == 1 and "interrupted" in errors[0] and "lost" not in stderr, stderr
    data = results(tmp_path)
    assert data["partial"] is True and data["verification"]["ok"] is True
    assert table_contents(admin, table) == before


def test_a_sweep_runs_each_point_on_the_cluster(tmp_path: Path, target: ConnectionTarget,
                                                admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 100)
    before = table_contents(admin, table)
    result = run_cli("sweep", "--strategies", "psycopg:pool", "--pool-sizes", "2,4",
                     "--workers", "4", "--duration", "0.5", "--trials", "1", "--warmup", "0",
                     "--cluster", "local:2",
                     "--dsn", target.conninfo(), "--table", table, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "reports" / "sweep.json").read_text())
    assert data["config"]["cluster"] == "local:2"
    nodes = data["environment"]["cluster"]["nodes"]  # the nodes the points ran on
    assert len(nodes) == 2 and [n["pool_max"] for n in nodes] == [2, 2]  # the pool of 4, split
    assert [p["pool_size"] for p in data["points"]] == [2, 4]
    assert all(p["server_ok"] and p["errors"] == 0 and p["throughput_ops_s"] > 0
               for p in data["points"])
    assert table_contents(admin, table) == before
