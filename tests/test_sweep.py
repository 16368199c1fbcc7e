"""`poolbench sweep`: a real sweep over pool sizes completes, fits, recommends, and writes
its versioned JSON and chart; the sweep's arithmetic (a point's throughput over its
trials, one curve per client count, no-pool strategies as references, "still scaling")
is checked on points whose right answer is known by construction."""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from conftest import clean_env, run_cli
from rich.console import Console

from poolbench.analysis.sweep import (
    SWEEP_SCHEMA_VERSION,
    SweepPoint,
    SweepResults,
    models,
    point_of,
    recommend,
)
from poolbench.db.target import ConnectionTarget
from poolbench.measure.metrics import PhaseMeasurement, new_histogram
from poolbench.measure.summary import phase_result
from poolbench.report.sweep_view import render_sweep, sweep_png
from poolbench.results import (
    SCHEMA_VERSION,
    LatencySummary,
    PhaseResult,
    RunResults,
    StrategyResult,
)

SCHEMA = json.loads(resources.files("poolbench").joinpath("sweep.schema.json").read_text())


def summary(p99_us: int) -> LatencySummary:
    return LatencySummary(100, p99_us / 2, p99_us // 2, p99_us, p99_us, p99_us)


def point(strategy: str, pool: int, clients: int, ops_s: float, p99_us: int = 2_000,
          trials: tuple[float, ...] = ()) -> SweepPoint:
    per_trial = {"trial_throughputs_ops_s": trials} if trials else {}
    return SweepPoint(strategy, pool, clients, ops_s, summary(p99_us), summary(10),
                      summary(p99_us), 0, True, "pb00000000", **per_trial)


def sweep_of(points: tuple[SweepPoint, ...], axis: str = "pool_size") -> SweepResults:
    return SweepResults(schema_version=SWEEP_SCHEMA_VERSION, partial=False, axis=axis,
                        config={}, environment={}, points=points,
                        models=models(points, axis),
                        recommendations=recommend(points, axis=axis, p99_slo_ms=None,
                                                  server_cores=2))


def console_text(results: SweepResults) -> str:
    out = io.StringIO()
    render_sweep(results, Console(file=out, width=250, color_system=None))
    return out.getvalue()


def measured(phase: str, trial: int, ops: int, seconds: float,
             warmup: bool = False) -> PhaseMeasurement:
    return PhaseMeasurement(phase=phase, trial=trial, warmup=warmup, elapsed_s=seconds,
                            ops=ops, errors={}, latency=new_histogram(),
                            acquire=new_histogram(), execute=new_histogram(),
                            scheduled=new_histogram(), failed=new_histogram())


def run_of(trials: dict[str, list[tuple[int, float]]]) -> tuple[RunResults, StrategyResult]:
    """A run of one strategy whose phases measured (ops, seconds) per trial, after a
    warm-up trial (trial 0) of 10,000 operations in 1 s that must not count."""
    return run_of_phases(tuple(phase_result(name, [
        measured(name, 0, 10_000, 1.0, warmup=True)] + [
        measured(name, i, ops, seconds) for i, (ops, seconds) in enumerate(figures, 1)])
        for name, figures in trials.items()))


def run_of_phases(phases: tuple[PhaseResult, ...]) -> tuple[RunResults, StrategyResult]:
    """A run of one strategy (psycopg:pool) with these phases."""
    strategy = StrategyResult(name="psycopg:pool", pooled=True, is_async=False,
                              per_operation="acquire", open_s=0.0, phases=phases, stats={},
                              leftover_rows_deleted=0)
    run = RunResults(schema_version=SCHEMA_VERSION, run_tag="pb00000000", partial=False,
                     started_at="", finished_at="", config={}, environment={},
                     strategies=(strategy,), comparison=None, verification=None)
    return run, strategy


@pytest.mark.parametrize(("trials", "throughput", "per_trial"), [
    # one mixed phase, three equal trials: each 1,000 ops/s, and so is the point
    ({"mix": [(2_000, 2.0)] * 3}, 1_000.0, (1_000.0,) * 3),
    # trials that differ: all their operations over all their seconds
    ({"mix": [(1_000, 2.0), (1_500, 3.0), (600, 1.0)]}, 3_100 / 6, (500.0, 500.0, 600.0)),
    # four phases (no mix): a trial's phases summed, then the trials
    ({"create": [(100, 1.0), (100, 1.0)], "read": [(300, 1.0), (500, 1.0)]},
     1_000 / 4, (200.0, 300.0)),
])
def test_a_points_throughput_is_its_trials_operations_over_their_seconds(
        trials: dict[str, list[tuple[int, float]]], throughput: float,
        per_trial: tuple[float, ...]) -> None:
    """--trials N reported N× the throughput: ops summed over trials, over one trial's
    seconds. The warm-up trial counts in neither."""
    run, strategy = run_of(trials)
    got = point_of(run, strategy, pool_size=4, workers=8)
    assert got.throughput_ops_s == pytest.approx(throughput)
    assert got.trial_throughputs_ops_s == pytest.approx(per_trial)


def test_a_points_p99_interval_comes_from_each_trials_merged_phases() -> None:
    """Each counted trial's p99 merges that trial's phases (and never the warm-up's): trial
    1's creates at 8 ms set its p99, not its reads at 3 ms; trial 2 runs at 5 ms; the
    warm-up at 100 ms counts nowhere. Two trials: the interval is their range."""
    def at(phase: str, trial: int, us: int, warmup: bool = False) -> PhaseMeasurement:
        m = measured(phase, trial, 100, 1.0, warmup=warmup)
        for _ in range(100):
            m.latency.record_value(us)
        return m

    phases = tuple(phase_result(name, [at(name, 0, 100_000, warmup=True), at(name, 1, one),
                                       at(name, 2, 5_000)])
                   for name, one in (("create", 8_000), ("read", 3_000)))
    run, strategy = run_of_phases(phases)
    got = point_of(run, strategy, pool_size=4, workers=8)
    assert got.trial_p99s_us == pytest.approx((8_000, 5_000), rel=0.01)
    ci = got.p99_interval
    assert ci is not None and ci.n == 2
    assert (ci.low, ci.high) == pytest.approx((5_000, 8_000), rel=0.01)
    assert "trials' p99 ms" in console_text(sweep_of((got,)))


def test_a_grid_fits_and_recommends_per_client_count() -> None:
    """At 2 clients a pool above 2 buys nothing; at 16 clients throughput grows to 8. One
    curve across both would mix them; each client count gets its own answer."""
    at_two = {1: 1_000, 2: 1_900, 4: 1_900, 8: 1_900}
    at_sixteen = {1: 1_000, 2: 2_000, 4: 3_600, 8: 6_000}
    points = tuple(point("psycopg:pool", size, clients, ops)
                   for size in (1, 2, 4, 8)
                   for clients, ops in ((2, at_two[size]), (16, at_sixteen[size])))
    results = sweep_of(points)
    assert len(results.models) == len(results.recommendations) == 2
    assert [(m.strategy, m.workers, m.points) for m in results.models] == [
        ("psycopg:pool", 2, 4), ("psycopg:pool", 16, 4)]
    assert [(r.workers, r.pool_size) for r in results.recommendations] == [(2, 2), (16, 8)]
    text = console_text(results)
    assert "Recommended for psycopg:pool at 2 clients: 2: 100%" in text
    assert "Recommended for psycopg:pool at 16 clients: 8: 100%" in text
    assert "USL model, psycopg:pool at 16 clients:" in text
    jsonschema.validate(json.loads(json.dumps(results.to_dict())), SCHEMA)
    assert sweep_png(results).startswith(b"\x89PNG")


def test_a_strategy_without_a_pool_is_a_reference_line_not_a_pool_size() -> None:
    points = (point("psycopg:none", 0, 8, 700, p99_us=9_000),
              *(point("psycopg:pool", size, 8, ops)
                for size, ops in ((1, 900), (2, 1_700), (4, 2_000), (8, 2_000))))
    results = sweep_of(points)
    assert [m.strategy for m in results.models] == ["psycopg:pool"]
    assert [(r.strategy, r.pool_size) for r in results.recommendations] == [
        ("psycopg:pool", 4)]
    data = json.loads(json.dumps(results.to_dict()))
    jsonschema.validate(data, SCHEMA)
    assert data["references"] == ["psycopg:none"]
    text = console_text(results)
    assert "psycopg:none at 8 clients has no pool: a reference line, not a pool size" in text
    assert "700 ops/s, p99 9.0 ms" in text
    assert "Recommended for psycopg:none" not in text and "psycopg:none:" not in text
    assert sweep_png(results).startswith(b"\x89PNG")
    # over clients, a strategy without a pool is a curve like any other
    over_clients = sweep_of(tuple(point("psycopg:none", 0, clients, 500 * clients)
                                  for clients in (1, 2, 4, 8)), axis="workers")
    assert [(m.strategy, m.workers) for m in over_clients.models] == [("psycopg:none", None)]
    assert [r.pool_size for r in over_clients.recommendations] == [8]


@pytest.mark.parametrize(("figures", "still_scaling"), [
    ({1: 1_000, 2: 2_000, 4: 4_000, 8: 8_000}, True),  # best at the largest: no knee seen
    ({1: 1_000, 2: 2_000, 4: 4_000, 8: 4_100}, False),  # levelled off at 4
])
def test_still_scaling_at_the_largest_size_says_try_larger(figures: dict[int, float],
                                                            still_scaling: bool) -> None:
    results = sweep_of(tuple(point("psycopg:pool", n, 64, ops) for n, ops in figures.items()))
    (rec,) = results.recommendations
    assert ("still scaling at 8: try larger sizes" in rec.reason) is still_scaling
    if still_scaling:  # linear: the law's κ is 0, no knee to show
        (model,) = results.models
        assert model.trusted and model.peak_n is None


def test_the_model_is_fitted_to_each_trial() -> None:
    """Points whose means follow the law exactly, from trials ±30% apart: the model sees
    the trials, so its residual is about 30% and it is not trusted."""
    from poolbench.analysis.usl import usl

    results = sweep_of(tuple(point("psycopg:pool", n, 64, usl(n, 1000, 0.1, 0.001),
                                   trials=(usl(n, 1000, 0.1, 0.001) * 0.7,
                                           usl(n, 1000, 0.1, 0.001) * 1.3))
                             for n in (1, 2, 4, 8)))
    (model,) = results.models
    assert not model.trusted and model.residual_pct > 25


def test_a_grid_sweep_recommends_a_size_per_client_count(tmp_path: Path,
                                                         target: ConnectionTarget) -> None:
    """A real grid: pool sizes × client counts, two trials a point, and a strategy without
    a pool beside them as a reference."""
    result = run_cli("sweep", "--strategies", "psycopg:none,psycopg:pool", "--pool-sizes",
                     "1,4", "--workers", "2,8", "--trials", "2", "--duration", "0.25",
                     "--dsn", target.conninfo(), "--table", "sweep_users", "--app-instances",
                     "50", "--warmup", "0.1", "--connect-samples", "1", cwd=tmp_path,
                     env={**clean_env(), "COLUMNS": "1000"})
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "sweep.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert [(p["strategy"], p["pool_size"], p["workers"]) for p in data["points"]] == [
        ("psycopg:none", 0, 2), ("psycopg:none", 0, 8),
        *(("psycopg:pool", size, clients) for size in (1, 4) for clients in (2, 8))]
    assert (data["config"]["warmup"], data["config"]["warmup_s"]) == (1, 0.1)
    assert data["config"]["duration_s"] == 0.25 and data["config"]["trials"] == 2
    assert all(p["server_ok"] and p["errors"] == 0 and p["throughput_ops_s"] > 0
               for p in data["points"])
    # Two rounds: every point once per round, each round in its own order; the order
    # the sweep ran is recorded.
    grid = {(p["strategy"], p["pool_size"], p["workers"]) for p in data["points"]}
    ran = [tuple(step) for step in data["config"]["schedule"]]
    assert data["config"]["rounds"] == 2 and len(ran) == 2 * len(grid)
    assert set(ran[:len(grid)]) == set(ran[len(grid):]) == grid
    assert ran[:len(grid)] != ran[len(grid):]  # a fresh order each round (seed 0)
    # Two trials: the point's throughput is theirs (between them), never their sum.
    assert all(len(p["trial_throughputs_ops_s"]) == 2
               and min(p["trial_throughputs_ops_s"]) <= p["throughput_ops_s"]
               <= max(p["trial_throughputs_ops_s"]) for p in data["points"]), data["points"]
    # The server's samples, per point: never more active backends than the pool holds. A
    # fast statement's backend is mostly idle, waiting on the client, so a 1 s point may
    # sample its one backend active never; shares are then empty, else they add up to 1.
    pooled = [p for p in data["points"] if p["pool_size"]]
    activity = [(p["pool_size"], p["active_median"], p["active_max"], p["wait_shares"])
                for p in pooled]
    assert all(0 <= p["active_median"] <= p["active_max"] <= p["pool_size"]
               and (abs(sum(p["wait_shares"].values()) - 1) < 0.01 if p["active_max"]
                    else p["wait_shares"] == {})
               for p in pooled), activity
    # one curve per client count; the strategy without a pool is a reference line
    assert data["references"] == ["psycopg:none"]
    assert [(m["strategy"], m["workers"], m["points"], m["trusted"])
            for m in data["models"]] == [("psycopg:pool", 2, 2, False),
                                         ("psycopg:pool", 8, 2, False)]  # 2 points < 4
    assert [(r["strategy"], r["workers"]) for r in data["recommendations"]] == [
        ("psycopg:pool", 2), ("psycopg:pool", 8)]
    for rec in data["recommendations"]:
        curve = [p for p in pooled if p["workers"] == rec["workers"]]
        best = max(p["throughput_ops_s"] for p in curve)
        chosen = next(p for p in curve if p["pool_size"] == rec["pool_size"])
        # the recommendation's own rule applied to its own figures (not a claim on speed)
        assert chosen["throughput_ops_s"] >= 0.95 * best
        assert all(p["throughput_ops_s"] < 0.95 * best for p in curve
                   if p["pool_size"] < rec["pool_size"])  # the smallest such size
        assert (f"Recommended for psycopg:pool at {rec['workers']} clients: "
                f"{rec['pool_size']}, 95% interval ") in result.stdout
        # COLUMNS is the console's width, as for run: the whole recommendation on its line
        assert (f"Recommended for psycopg:pool at {rec['workers']} clients: {rec['reason']}"
                in result.stdout.splitlines())
        assert "50 app instances" in rec["capacity_note"]
    assert "psycopg:none at 8 clients has no pool: a reference line" in result.stdout
    assert "Recommended for psycopg:none" not in result.stdout
    assert "rule of thumb (HikariCP)" in result.stdout
    assert (tmp_path / "reports" / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_bad_sweep_lists_are_refused(tmp_path: Path) -> None:
    result = run_cli("sweep", "--pool-sizes", "1,x", cwd=tmp_path)
    assert result.returncode == 2 and "--pool-sizes" in result.stderr


def test_each_point_and_each_recommendation_carry_their_interval() -> None:
    """A knee at 8 measured with ±0.5% trials: the point intervals are tight and the
    recommendation is pinned ("8, 95% interval 8-8"). The same curve with ±15% trials
    (every size within reach of the best): the resampled rule picks sizes from 1 up."""
    knee = {1: 100.0, 2: 200.0, 4: 400.0, 8: 800.0, 16: 810.0}
    spread = (-0.005, -0.0025, 0.0, 0.0025, 0.005, 0.001, -0.001)
    tight = tuple(point("psycopg:pool", n, 64, ops, trials=tuple(ops * (1 + d) for d in spread))
                  for n, ops in knee.items())
    results = sweep_of(tight)
    (rec,) = results.recommendations
    assert rec.pool_size == 8 and rec.interval is not None
    assert (rec.interval.low, rec.interval.high) == (8, 8)
    assert rec.reason.startswith("8, 95% interval 8-8: ")
    at8 = next(p for p in results.points if p.pool_size == 8)
    # point() builds points by hand: their interval comes from point_of in a real sweep
    assert at8.throughput_interval is None
    flat = tuple(point("psycopg:pool", n, 64, 1000.0, trials=tuple(
        1000.0 * (1 + 0.15 * ((i * 7 + n) % 5 - 2) / 2) for i in range(7))) for n in knee)
    (rec,) = sweep_of(flat).recommendations
    assert rec.interval is not None and rec.interval.low is not None
    assert rec.interval.high is not None and rec.interval.high > rec.interval.low
    assert f", 95% interval {rec.interval.low}-{rec.interval.high}" in rec.reason
    jsonschema.validate(json.loads(json.dumps(sweep_of(flat).to_dict())), SCHEMA)
    one = tuple(point("psycopg:pool", n, 64, ops) for n, ops in knee.items())
    (rec,) = sweep_of(one).recommendations
    assert rec.interval is not None and rec.interval.low is None
    assert "no interval: one trial per size" in console_text(sweep_of(one))


def test_a_points_interval_is_the_median_of_its_trials_with_a_bootstrap_interval() -> None:
    """point_of: 7 trials of a run give the median and a percentile bootstrap interval
    inside the trials' range; the console shows it."""
    run, strategy = run_of({"create": [(100 * k, 1.0) for k in (10, 11, 12, 13, 14, 15, 16)]})
    p = point_of(run, strategy, pool_size=4, workers=8)
    ci = p.throughput_interval
    assert ci is not None and ci.n == 7 and ci.value == 1300.0 and ci.method == "percentile"
    assert ci.low is not None and ci.high is not None
    assert 1000.0 <= ci.low < 1300.0 < ci.high <= 1600.0
    text = console_text(sweep_of((p,)))
    assert f"1,300 [{ci.low:,.0f}, {ci.high:,.0f}]" in text


def test_the_recommended_pool_grows_with_the_rtt_as_littles_law_says() -> None:
    """Known answer: the application asks 1,000 operations a second of statements that
    hold a connection s = 2 ms; at RTT r each connection does 1/(s + r) of them, so a pool
    of P serves min(1000, P/(s + r)). The smallest size within 95% of the best is the
    smallest P >= 0.95 × 1000 × (s + r): 2 at 0 ms, 3 at 1 ms, 7 at 5 ms, which is also
    what the distance model projects from the 0 ms curve (held time × Little's law)."""
    from math import ceil

    from poolbench.analysis.distance import size_at_distance

    demand, held_s, acquire_ms = 1000.0, 0.002, 0.1

    def at(pool: int, rtt_ms: float) -> SweepPoint:
        held_ms = held_s * 1000 + rtt_ms
        ops = min(demand, pool / (held_ms / 1000))
        latency = LatencySummary(100, (held_ms + acquire_ms) * 1000, 3_000, 3_000, 3_000,
                                 3_000)
        return SweepPoint("psycopg:pool", pool, 16, ops, latency,
                          LatencySummary(100, acquire_ms * 1000, 100, 100, 100, 100),
                          LatencySummary(100, held_ms * 1000, 3_000, 3_000, 3_000, 3_000),
                          0, True, "pb00000000", rtt_ms=rtt_ms)

    rtts = (0.0, 1.0, 5.0)
    points = tuple(at(pool, r) for r in rtts for pool in range(1, 11))
    results = sweep_of(points)
    by_rtt = {r.rtt_ms: r for r in results.recommendations}
    assert list(by_rtt) == list(rtts) and len(results.recommendations) == 3
    assert [m.rtt_ms for m in results.models] == list(rtts)
    sizes = [by_rtt[r].pool_size for r in rtts]
    assert sizes == [ceil(0.95 * demand * (held_s + r / 1000) - 1e-9) for r in rtts] \
        == [2, 3, 7]
    at_zero = tuple(p for p in points if p.rtt_ms == 0)
    assert sizes[1:] == [size_at_distance(at_zero, recommended=sizes[0], rtt_ms=r).pool_size
                         for r in rtts[1:]]
    # the reason names the time a connection is held there and the busy connections
    assert "at 1 ms RTT each operation holds its connection 3.00 ms" in by_rtt[1.0].reason
    assert "1,000 ops/s keep 7.0 connections busy (Little's law)" in by_rtt[5.0].reason
    text = console_text(results)
    assert "Recommended for psycopg:pool at 16 clients, 5 ms RTT: 7" in text
    assert "RTT ms" in text
    assert "RTT ms" not in console_text(sweep_of(at_zero))
    jsonschema.validate(json.loads(json.dumps(results.to_dict())), SCHEMA)


@pytest.mark.parametrize(("command", "rtt", "needle"), [
    ("sweep", "0,-1", "-1 is out of range"), ("sweep", "0,1,1", "1 is given twice"),
    ("sweep", "0,x", "--rtt '0,x'"), ("run", "0,1", "an axis of poolbench sweep")])
def test_bad_rtt_axes_are_refused_in_one_line(tmp_path: Path, command: str, rtt: str,
                                              needle: str) -> None:
    from test_errors import assert_one_line_error

    result = run_cli(command, "--dsn", "postgresql://u:pw@127.0.0.1:1/db", "--rtt", rtt,
                     cwd=tmp_path)
    assert_one_line_error(result, 2, needle)
    assert not (tmp_path / "reports").exists()


def test_a_sweep_at_two_rtts_recommends_per_rtt(tmp_path: Path,
                                                target: ConnectionTarget) -> None:
    """A real sweep with `--rtt 0,2`: each RTT's points (0 direct, 2 through the relay,
    its round trip measured), and one recommendation per RTT naming the held time."""
    result = run_cli("sweep", "--strategies", "psycopg:pool", "--pool-sizes", "1,2",
                     "--workers", "2", "--rtt", "0,2", "--trials", "1", "--duration", "0.3",
                     "--warmup", "0", "--no-chart", "--sample-interval", "0",
                     "--dsn", target.conninfo(), "--table", "sweep_users", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "reports" / "sweep.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["schema_version"] == 5 and data["config"]["rtts_ms"] == [0, 2]
    assert [(p["rtt_ms"], p["pool_size"]) for p in data["points"]] == [
        (0, 1), (0, 2), (2, 1), (2, 2)]
    assert all(p["errors"] == 0 and p["throughput_ops_s"] > 0 for p in data["points"])
    direct, relayed = data["points"][:2], data["points"][2:]
    assert all(p["rtt_measured_ms"] is None for p in direct)
    assert all(p["rtt_measured_ms"] >= 2 for p in relayed), relayed
    assert [r["rtt_ms"] for r in data["recommendations"]] == [0, 2]
    assert all(r["pool_size"] in (1, 2) and f"at {r['rtt_ms']:g} ms RTT" in r["reason"]
               and "holds its connection" in r["reason"] for r in data["recommendations"])
    assert "RTT ms" in result.stdout
