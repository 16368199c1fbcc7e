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
                     "--table", "sweep_users", "--app-instances", "50", "--warmup", "0.5",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "sweep.json").read_text())
    schema = json.loads(resources.files("poolbench").joinpath("sweep.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert [(p["pool_size"], p["workers"]) for p in data["points"]] == [(1, 8), (2, 8), (4, 8)]
    assert (data["config"]["warmup"], data["config"]["warmup_s"]) == (1, 0.5)
    assert all(p["server_ok"] and p["errors"] == 0 and p["throughput_ops_s"] > 0
               for p in data["points"])
    # The server's samples, per point: never more active backends than the pool holds. A
    # fast statement's backend is mostly idle, waiting on the client, so a 1 s point may
    # sample its one backend active never; shares are then empty, else they add up to 1.
    activity = [(p["pool_size"], p["active_median"], p["active_max"], p["wait_shares"])
                for p in data["points"]]
    assert all(0 <= p["active_median"] <= p["active_max"] <= p["pool_size"]
               and (abs(sum(p["wait_shares"].values()) - 1) < 0.01 if p["active_max"]
                    else p["wait_shares"] == {})
               for p in data["points"]), activity
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



def test_oversubscription_is_found_across_a_sweep(target: ConnectionTarget,
                                                  admin, table: str) -> None:
    """A server that can do only one thing at a time: every update takes one advisory lock
    and holds it 5 ms (a trigger). Throughput is the same at every pool size, and past twice
    the cores the extra backends only queue inside the server, their statements' p99
    growing with the pool. This is the measured situation the rule names; it does not
    depend on how fast this machine's cores are."""
    import os

    from poolbench import RunConfig
    from poolbench.api import sweep
    from poolbench.db.workload import CREATE_TABLE, quote_ident

    admin.execute(CREATE_TABLE.format(table=quote_ident(table)))
    admin.execute("CREATE OR REPLACE FUNCTION pb_serial() RETURNS trigger LANGUAGE plpgsql "
                  "AS $$ BEGIN PERFORM pg_advisory_xact_lock(4242); PERFORM pg_sleep(0.005); "
                  "RETURN NEW; END $$")
    admin.execute(f"CREATE TRIGGER serial BEFORE UPDATE ON {quote_ident(table)} "
                  "FOR EACH ROW EXECUTE FUNCTION pb_serial()")
    cores = os.cpu_count() or 1
    largest = 4 * cores
    config = RunConfig(target=target, strategies=("psycopg:pool",), rows=100,
                       workers=largest, warmup=0, trials=1, table=table, out_dir=None,
                       duration_s=1.5, mix=(("update", 1),), sample_interval_s=0.05)
    results = sweep(config, pool_sizes=(2, 4, largest), workers=(largest,))
    evidence = [(p.pool_size, round(p.throughput_ops_s), p.active_max,
                 p.execute.p99_us) for p in results.points]
    over = [f for f in results.findings if f.rule == "oversubscription"]
    assert len(over) == 1, evidence
    # the evidence is real: the largest pool ran more than twice the cores' backends at once
    assert results.points[-1].active_max > 2 * cores, evidence
    assert f"at {largest}:" in over[0].evidence and "shrink the pool" in over[0].fix
