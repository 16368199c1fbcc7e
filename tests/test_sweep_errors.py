"""A sweep that fails keeps what it measured: the points done are written, marked partial,
and the error's own exit follows; the largest point is refused before the first runs."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from poolbench import api
from poolbench.config import RunConfig
from poolbench.db.target import ConnectionTarget
from poolbench.errors import CapacityError


def _config(target: ConnectionTarget, table: str, out: Path) -> RunConfig:
    return RunConfig(target=target, strategies=("psycopg:pool",), rows=20, workers=2,
                     warmup=0, trials=1, table=table, out_dir=out, chart=False,
                     sample_interval_s=0)


def test_the_largest_point_is_refused_before_the_first_runs(
        tmp_path: Path, target: ConnectionTarget, table: str) -> None:
    began: list[object] = []
    with pytest.raises(CapacityError, match="--pool-max 200 "):
        api.sweep(_config(target, table, tmp_path), pool_sizes=(1, 200), workers=(2,),
                  on_point=lambda done, total, point: began.append(point))
    assert began == []  # not even the first point began
    assert not (tmp_path / "sweep.json").exists()


def test_an_error_at_a_later_point_writes_the_points_done(
        tmp_path: Path, target: ConnectionTarget, table: str) -> None:
    held: list[psycopg.Connection] = []
    first: list[tuple[int, int]] = []

    def fill_the_server(done: int, total: int, point: object) -> None:
        # After the first point, this test takes every free connection: the second
        # point's own capacity check then refuses it, as a busy server would.
        if done != 1:
            return
        first.append((point.pool_size, point.workers))  # type: ignore[attr-defined]
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            free = conn.execute(
                "SELECT current_setting('max_connections')::int"
                " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            ).fetchone()[0]
        held.extend(psycopg.connect(target.conninfo()) for _ in range(free))

    try:
        with pytest.raises(CapacityError) as caught:
            api.sweep(_config(target, table, tmp_path), pool_sizes=(1, 2), workers=(2,),
                      on_point=fill_the_server)
    finally:
        for conn in held:
            conn.close()
    assert held, "the test never filled the server"
    partial = caught.value.results
    assert partial is not None and partial.partial
    assert first and [(p.pool_size, p.workers) for p in partial.points] == first
    written = json.loads((tmp_path / "sweep.json").read_text())
    assert written["partial"] is True
    assert [(p["pool_size"], p["workers"]) for p in written["points"]] == first
    assert written["config"]["schedule"] == [["psycopg:pool", *first[0]]]


def test_the_cli_refuses_a_sweep_whose_largest_point_does_not_fit(
        tmp_path: Path, target: ConnectionTarget) -> None:
    from conftest import run_cli

    # The capacity check refuses the largest size before any point: exit 2, one line.
    result = run_cli("sweep", "--strategies", "psycopg:pool", "--pool-sizes", "1,200",
                     "-w", "2", "--duration", "1", "--dsn", target.conninfo(), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "--pool-max 200" in result.stderr
    assert not (tmp_path / "reports" / "sweep.json").exists()
