"""The sweep's adaptive step and budget, checked by what the code decided: after the coarse
grid, the sizes it added are exactly those ``next_sizes`` proposes from the grid's own
points; it stops when the recommendation is pinned, or when the budget cannot pay for one
more size (never by how fast the machine was)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from poolbench import api
from poolbench.analysis.plan import next_sizes
from poolbench.analysis.sweep import recommend
from poolbench.config import RunConfig
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError


def _config(target: ConnectionTarget, table: str) -> RunConfig:
    return RunConfig(target=target, strategies=("psycopg:pool",), rows=40, workers=4,
                     warmup=0, trials=2, table=table, out_dir=None, chart=False,
                     sample_interval_s=0)


def test_the_sweep_adds_the_sizes_next_sizes_proposes_until_pinned(
        target: ConnectionTarget, table: str) -> None:
    results = api.sweep(_config(target, table), pool_sizes=(1, 4), workers=(4,),
                        budget_s=3600)
    adaptive = results.config["adaptive"]
    steps = adaptive["steps"]
    assert steps, adaptive
    # Step 1 from the grid's own points, as the sweep saw them.
    grid = tuple(p for p in results.points if p.pool_size in (1, 4))
    (rec,) = recommend(grid, axis="pool_size", p99_slo_ms=None, server_cores=None)
    assert rec.interval is not None
    proposed = next_sizes([1, 4], rec.pool_size, (rec.interval.low, rec.interval.high))
    assert [pool for _, pool, _ in steps[0]] == list(proposed)
    # Every size measured in its rounds: each point has the sweep's two trials.
    assert sorted(p.pool_size for p in results.points) == sorted(
        {1, 4} | {pool for step in steps for _, pool, _ in step})
    assert all(len(p.trial_throughputs_ops_s) == 2 for p in results.points)
    assert len(results.config["schedule"]) == 2 * len(results.points)
    assert adaptive["stopped"].startswith("pinned")


def test_a_budget_spent_by_the_grid_adds_no_size(target: ConnectionTarget,
                                                 table: str) -> None:
    results = api.sweep(_config(target, table), pool_sizes=(1, 8), workers=(4,),
                        budget_s=1e-6)
    assert results.config["adaptive"]["steps"] == []
    assert results.config["adaptive"]["stopped"].startswith("budget: ")
    assert sorted(p.pool_size for p in results.points) == [1, 8]


def test_without_a_budget_the_grid_alone_runs(target: ConnectionTarget, table: str) -> None:
    results = api.sweep(replace(_config(target, table), trials=1), pool_sizes=(1, 8),
                        workers=(4,))
    assert results.config["adaptive"] == {"budget_s": None, "steps": [], "stopped": None}
    assert sorted(p.pool_size for p in results.points) == [1, 8]


@pytest.mark.parametrize("budget", [0.0, -5.0])
def test_a_budget_that_is_no_time_is_refused(target: ConnectionTarget, table: str,
                                             budget: float) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        api.sweep(_config(target, table), pool_sizes=(1, 8), workers=(4,), budget_s=budget)
