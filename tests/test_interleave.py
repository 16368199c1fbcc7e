"""--interleave: one counted trial per window, the strategies' order rotating each round;
each window opens a fresh pool and warms it before its counted trial."""

from __future__ import annotations

from poolbench.api import run, window_schedule
from poolbench.config import RunConfig
from poolbench.db.target import ConnectionTarget
from poolbench.events import RunEvents
from poolbench.measure.runner import trial_plan


def test_trial_plan_puts_a_warm_up_before_every_windows_counted_trial() -> None:
    assert trial_plan(warmup=1, trials=3) == ((0, True), (1, False), (2, False), (3, False))
    # Window k: its own warm-ups (numbered after every counted trial), then counted trial
    # warmup + k, which keeps the number it has in a run without --interleave.
    assert trial_plan(warmup=1, trials=3, window=0) == ((4, True), (1, False))
    assert trial_plan(warmup=1, trials=3, window=2) == ((6, True), (3, False))
    assert trial_plan(warmup=2, trials=2, window=1) == ((6, True), (7, True), (3, False))
    assert trial_plan(warmup=0, trials=2, window=1) == ((1, False),)


def test_window_schedule_rotates_the_order_each_round() -> None:
    assert window_schedule(2, trials=3, interleave=True) == [
        (0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (2, 1)]
    assert window_schedule(2, trials=3, interleave=False) == [(None, 0), (None, 1)]
    assert window_schedule(1, trials=3, interleave=True) == [(None, 0)]  # nothing to rotate


def test_each_window_warms_its_fresh_pool_and_is_counted_on_its_own(
        target: ConnectionTarget, table: str) -> None:
    events = RunEvents()
    started: list[str] = []
    finished: list[tuple[str, int, bool]] = []
    events.strategy_started.add_listener(lambda strategy, trials: started.append(strategy))
    events.phase_finished.add_listener(lambda measurement: finished.append(
        (measurement.phase, measurement.trial, measurement.warmup)))
    results = run(RunConfig(target=target, strategies=("psycopg:pool", "asyncpg:pool"),
                            rows=20, workers=3, pool_min=3, pool_max=3, warmup=1, trials=3,
                            table=table, out_dir=None, interleave=True, sample_interval_s=0),
                  events=events)
    assert started == ["psycopg:pool", "asyncpg:pool", "asyncpg:pool", "psycopg:pool",
                       "psycopg:pool", "asyncpg:pool"]
    # Every window: a whole warm-up trial, then its counted trial, on the same pool.
    reads = [(trial, warm) for phase, trial, warm in finished if phase == "read"]
    assert reads == [(4, True), (1, False), (4, True), (1, False),
                     (5, True), (2, False), (5, True), (2, False),
                     (6, True), (3, False), (6, True), (3, False)]
    assert [s.name for s in results.strategies] == ["psycopg:pool", "asyncpg:pool"]
    for s in results.strategies:
        assert [(t.trial, t.warmup) for t in s.phase("read").trials] == [
            (4, True), (1, False), (5, True), (2, False), (6, True), (3, False)]
        assert s.server is not None and s.server.ok, s.server
        assert s.server.checks[0].server == 120  # six trials of 20 inserts, added up
        # A pool of min = max = 3 opens its 3 connections once per window: counted per
        # window, that is no churn; summed, it was 9 for a pool of 3.
        assert [w["connections_opened"] for w in s.window_stats] == [3, 3, 3]
        assert s.stats["connections_opened"] == 9
    assert not [f for f in results.findings if f.rule == "pool churn"], results.findings
