"""--mix: one mixed phase per trial, each operation's kind by weight, per-kind and whole-mix
results, exact server counts, and nothing but the run's own rows touched."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from conftest import seed_table, table_contents

from poolbench import RunConfig, run
from poolbench.db.target import ConnectionTarget

MIX = (("create", 5), ("read", 80), ("update", 10), ("delete", 5))


@pytest.mark.parametrize("processes", [1, 2])
def test_mix_keeps_exact_counts_and_foreign_rows(processes: int, target: ConnectionTarget,
                                                 admin: psycopg.Connection, table: str) -> None:
    """200 operations a trial (two cycles of 100 in each process's share): every kind runs
    exactly its cycle's count, whatever the timing (a --duration trial ends mid-cycle, where
    the shares drift; the deal itself is what is checked here)."""
    from poolbench.config import mix_cycle

    seed_table(admin, table, 10_000)
    before = table_contents(admin, table)
    rows = 200
    results = run(RunConfig(target=target, strategies=("psycopg:pool", "asyncpg:pool"),
                            rows=rows, workers=4, pool_max=4, warmup=1, trials=2, table=table,
                            out_dir=None, mix=MIX, processes=processes))
    per_trial = {f"mix:{kind}": n * rows // 100 for kind, n in mix_cycle(MIX)}
    assert per_trial == {"mix:create": 10, "mix:read": 160, "mix:update": 20, "mix:delete": 10}
    for s in results.strategies:
        assert [p.phase for p in s.phases] == ["mix", "mix:create", "mix:read", "mix:update",
                                               "mix:delete"]
        whole, kinds = s.phases[0], s.phases[1:]
        assert whole.ops == sum(k.ops for k in kinds) > 0
        assert all(k.error_count == 0 for k in s.phases), [k.errors for k in s.phases]
        # Weights hold exactly: each trial (the warm-up too) dealt its cycles' counts.
        assert {k.phase: [t.ops for t in k.trials] for k in kinds} == {
            kind: [n] * 3 for kind, n in per_trial.items()}, s.name
        assert [t.ops for t in whole.trials] == [rows] * 3
        assert s.server is not None and s.server.ok, s.server
        created = sum(t.ops for t in s.phase("mix:create").trials)
        assert s.server.checks[0].server == created  # the prefill is outside the window
    assert results.verification is not None and results.verification.ok
    assert table_contents(admin, table) == before


def test_mix_under_a_rate(target: ConnectionTarget, table: str) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=100, workers=4,
                            pool_max=4, warmup=0, trials=1, table=table, out_dir=None,
                            mix=(("read", 3), ("update", 1)), duration_s=2.0, rate=300.0))
    whole = results.strategies[0].phase("mix")
    assert whole.ops == 600 and whole.scheduled is not None and whole.scheduled.count == 600
    assert results.strategies[0].phase("mix:update").ops == 150
    # the charts name the mixed phase and its kinds, not CRUD's phases
    from poolbench.report.chart import ChartExporter
    from poolbench.report.html import _figures

    fig = ChartExporter().figure(results)
    assert {ax.get_xlabel().split(" (solid")[0] for ax in fig.axes} == {
        "phase (mix: all; then each kind)"}
    titles = [str(f["layout"].get("xaxis", {}).get("title")) for _, f in _figures(results)]
    assert sum("phase (mix: all; then each kind)" in t for t in titles) == 2, titles
    assert not any("CRUD" in t for t in titles), titles


def test_warmup_in_seconds_runs_first_and_is_not_counted(target: ConnectionTarget,
                                                         table: str) -> None:
    """A sweep's --warmup SECONDS: the warm-up trial runs 0.4 s on the same pool, is kept
    flagged, and only the counted trial (1.5 s) makes the figures; the server saw both. A
    timed trial ends only once its deadline has passed, so each lasts at least its time
    (how much longer depends on the machine)."""
    from poolbench.measure.metrics import decode_histogram

    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=100, workers=4,
                            pool_min=4, pool_max=4, warmup=1, warmup_s=0.4, trials=1,
                            table=table, out_dir=None, mix=(("read", 3), ("update", 1)),
                            duration_s=1.5))
    (s,) = results.strategies
    whole = s.phase("mix")
    warm, counted = whole.trials
    assert warm.warmup and not counted.warmup
    assert warm.elapsed_s >= 0.4 and counted.elapsed_s >= 1.5
    assert warm.ops > 0 and whole.ops == counted.ops
    assert decode_histogram(whole.histogram_latency_us).get_total_count() == counted.ops
    assert s.server is not None and s.server.ok, s.server
    # the rows the server updated include the warm-up's
    (updated,) = [c for c in s.server.checks if c.name == "rows updated"]
    assert updated.server == sum(t.ops for t in s.phase("mix:update").trials)
    assert updated.server > s.phase("mix:update").ops  # more than the counted trial's
    assert results.config["warmup_s"] == 0.4


def test_a_mix_without_creates_makes_rows_when_none_is_free(tmp_path: Path,
                                                             target: ConnectionTarget,
                                                             table: str) -> None:
    """Four workers, three rows, half the operations deletes: soon no row is free, and an
    operation makes one instead of failing. Those creates are shown as ``mix:create``, so the
    kinds still add up to the whole and to what the server counted; the rows the mix left
    alive (if any) are swept, and said to be, not blamed on failed deletes."""
    from conftest import run_cli

    result = run_cli("run", "--strategies", "psycopg:pool,asyncpg:pool", "--mix",
                     "read=1,delete=1", "-n", "3", "--workers", "4", "--duration", "1",
                     "--trials", "1", "--warmup", "0", "--dsn", target.conninfo(), "--table",
                     table, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    for s in data["strategies"]:
        phases = {p["phase"]: p for p in s["phases"]}
        assert list(phases) == ["mix", "mix:read", "mix:delete", "mix:create"]
        assert phases["mix"]["ops"] == sum(p["ops"] for name, p in phases.items()
                                           if name != "mix")
        assert phases["mix:create"]["ops"] > 0 and s["error_count"] == 0
        assert s["server"]["ok"], s["server"]
        left = s["leftover_rows_deleted"]  # may be none: the last operations can be deletes
        said = f"{s['name']}: the end-of-strategy sweep deleted the {left} rows the mix left"
        assert (said in result.stdout) == (left > 0), (left, result.stdout[-1500:])
    assert "failed deletes" not in result.stdout
    assert data["verification"]["ok"]


def test_the_rarest_kind_accepted_runs_once_in_each_cycle(target: ConnectionTarget,
                                                         table: str) -> None:
    """Known answer: a mix deals its kinds out in cycles of 100 operations by rounded
    shares. delete=1 against read=198 is a share of 0.5025, one in each cycle, so 200
    operations hold exactly 2 deletes (read=199 rounds it to none and is refused)."""
    from poolbench.config import mix_cycle

    mix = (("read", 198), ("delete", 1))
    assert mix_cycle(mix) == (("read", 99), ("delete", 1))
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=200, workers=2,
                            pool_max=2, warmup=0, trials=1, table=table, out_dir=None,
                            mix=mix))
    s = results.strategies[0]
    assert (s.phase("mix:delete").ops, s.phase("mix:read").ops) == (2, 198)
    assert s.server is not None and s.server.ok, s.server


@pytest.mark.parametrize("spec", ["read=80,scan=20", "read=x", "read=0", "",
                                  "read=99999999999999999999,create=1"])  # once hung
def test_bad_mix_is_a_usage_error(tmp_path, spec: str) -> None:
    from conftest import run_cli

    result = run_cli("run", "--mix", spec, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "--mix" in result.stderr, result.stderr
    assert "((" not in result.stderr  # as written, not as a Python tuple
