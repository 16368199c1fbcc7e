"""`poolbench sweep`: a real sweep over pool sizes completes, fits, recommends, and writes
its versioned JSON and chart."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
from conftest import run_cli

from poolbench.db.target import ConnectionTarget


def test_sweep_over_pool_sizes_recommends_a_size(tmp_path: Path,
                                                 target: ConnectionTarget) -> None:
    result = run_cli("sweep", "--strategies", "psycopg:pool", "--pool-sizes", "1,2,4",
                     "--workers", "8", "--duration", "1", "--dsn", target.conninfo(),
                     "--table", "sweep_users", "--app-instances", "50", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "sweep.json").read_text())
    schema = json.loads(resources.files("poolbench").joinpath("sweep.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert [(p["pool_size"], p["workers"]) for p in data["points"]] == [(1, 8), (2, 8), (4, 8)]
    assert all(p["server_ok"] and p["errors"] == 0 and p["throughput_ops_s"] > 0
               for p in data["points"])
    (model,) = data["models"]
    assert model["points"] == 3 and model["trusted"] is False  # fewer than 4 points
    (rec,) = data["recommendations"]
    assert rec["pool_size"] in (1, 2, 4)
    best = max(p["throughput_ops_s"] for p in data["points"])
    chosen = next(p for p in data["points"] if p["pool_size"] == rec["pool_size"])
    assert chosen["throughput_ops_s"] >= 0.95 * best
    assert all(p["throughput_ops_s"] < 0.95 * best for p in data["points"]
               if p["pool_size"] < rec["pool_size"])  # the smallest such size
    assert f"Recommended for psycopg:pool: {rec['pool_size']}:" in result.stdout
    assert "rule of thumb (HikariCP)" in result.stdout
    assert "50 app instances" in rec["capacity_note"]
    assert (tmp_path / "reports" / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_bad_sweep_lists_are_refused(tmp_path: Path) -> None:
    result = run_cli("sweep", "--pool-sizes", "1,x", cwd=tmp_path)
    assert result.returncode == 2 and "--pool-sizes" in result.stderr

