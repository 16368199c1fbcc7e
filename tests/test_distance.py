"""The distance model: known answers on built figures (no database), and one real run that
carries the projection into its results, console and findings."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from poolbench import RunConfig, run
from poolbench.analysis.distance import (
    connect_round_trips,
    connections_busy,
    measured_at_ms,
    operations_per_connection_s,
    profile_of,
    project_run,
    protocol_round_trips,
    script_statements,
    size_at_distance,
    sslmode_of,
)
from poolbench.analysis.findings import findings
from poolbench.analysis.sweep import SweepPoint
from poolbench.config import ScriptFile
from poolbench.db.target import ConnectionTarget
from poolbench.report.console import render_distances
from poolbench.results import (
    SCHEMA_VERSION,
    Comparison,
    ConnectCost,
    DriverComparison,
    LatencySummary,
    PhaseResult,
    RunResults,
    StrategyResult,
)

SCHEMA = json.loads((Path(__file__).parents[1] / "src" / "poolbench" /
                     "results.schema.json").read_text())


def _summary(mean_us: float) -> LatencySummary:
    return LatencySummary(100, mean_us, int(mean_us), int(mean_us), int(mean_us), int(mean_us))


def _phase(name: str, *, ops: int = 100, latency_us: float, acquire_us: float,
           execute_us: float, throughput: float = 1000.0) -> PhaseResult:
    return PhaseResult(phase=name, trials=(), median_s=ops / throughput, min_s=0.0, max_s=0.0,
                       ops=ops, throughput_ops_s=throughput, errors={},
                       latency=_summary(latency_us), acquire=_summary(acquire_us),
                       execute=_summary(execute_us), histogram_latency_us="",
                       histogram_acquire_us="", histogram_execute_us="",
                       failed=_summary(0), histogram_failed_us="")


def _strategy(name: str, pooled: bool, *phases: PhaseResult) -> StrategyResult:
    return StrategyResult(name=name, pooled=pooled, is_async=False, per_operation="",
                          open_s=0.0, phases=phases, stats={}, leftover_rows_deleted=0)


def _cost(*, scram: bool = True, tls: bool = False) -> ConnectCost:
    slices = {"tcp": _summary(100), "tls": _summary(900 if tls else 0),
              "auth_exchange": _summary(2000), "scram_key_derivation": _summary(
                  1000 if scram else 0), "backend_start": _summary(500),
              "first_query": _summary(100)}
    return ConnectCost(samples=50, tls=tls, slices=slices, total=_summary(4600), drivers=())


def _run(*strategies: StrategyResult, cost: ConnectCost | None = None,
         pairs: tuple[tuple[str, str], ...] = (), config: dict | None = None) -> RunResults:
    comparison = Comparison(drivers=tuple(
        DriverComparison(driver="psycopg", no_pool=a, no_pool_s=1.0, pooled=b, pooled_s=0.5,
                         gain_pct=50.0) for a, b in pairs))
    return RunResults(schema_version=SCHEMA_VERSION, run_tag="pb00000000", partial=False,
                      started_at="", finished_at="", config=config or {}, environment={},
                      strategies=strategies, comparison=comparison, verification=None,
                      connect_cost=(cost,) if cost else ())


@pytest.mark.parametrize(("tls", "auth", "connect", "first_query"), [
    (None, "scram-sha-256", 4, 1),  # TCP 1, startup -> SASL -> Continue -> Final: 3
    (None, "md5", 3, 1),
    (None, "trust", 2, 1),
    ("TLSv1.3", "scram-sha-256", 6, 1),  # + SSLRequest 1 + TLS 1.3's handshake 1
    ("TLSv1.2", "scram-sha-256", 7, 1),  # TLS 1.2's full handshake: 2
])
def test_round_trips_are_counted_from_the_protocol(tls: str | None, auth: str, connect: int,
                                                   first_query: int) -> None:
    slices = protocol_round_trips(tls_version=tls, auth=auth)
    assert sum(v for k, v in slices.items() if k != "first_query") == connect
    assert slices["first_query"] == first_query
    assert slices["scram_key_derivation"] == slices["backend_start"] == 0


def test_a_connects_round_trips_follow_what_the_probe_saw() -> None:
    """SCRAM when the probe derived a key; TLS 1.3 when it went over TLS."""
    assert connect_round_trips(_cost(), sslmode="disable").round_trips == 4
    assert connect_round_trips(_cost(tls=True)).round_trips == 6
    assert connect_round_trips(_cost(scram=False), sslmode="disable").round_trips == 3
    assert connect_round_trips(_cost(tls=True)).source == "protocol (SCRAM, TLSv1.3)"
    # sslmode=prefer (libpq's and asyncpg's default) asks for TLS first: 'N' costs one more
    assert connect_round_trips(_cost()).round_trips == 5
    assert connect_round_trips(_cost(), sslmode="require").round_trips == 4
    assert sslmode_of({"target": "postgresql://u:***@h/db?sslmode=disable"}) == "disable"


@dataclass(frozen=True)
class _CountedCost(ConnectCost):
    """A connect cost whose probe counted its round trips (as the TLS work's probe does)."""

    round_trips: dict[str, int] = field(default_factory=dict)


@pytest.mark.parametrize(("counted", "expected"), [
    ({"tcp": 1, "tls": 3, "auth_exchange": 3, "first_query": 1}, 7),  # a HelloRetryRequest
    ({"tcp": 1, "tls": 1, "auth_exchange": 3, "first_query": 1}, 5),  # prefer, refused: once
    ({"tcp": 1, "tls": 0, "auth_exchange": 3, "first_query": 1}, 5),  # + the driver's SSLRequest
])
def test_the_probes_own_counts_are_used_where_the_results_carry_them(
        counted: dict[str, int], expected: int) -> None:
    cost = _CountedCost(**{**_cost().__dict__, "round_trips": counted})
    trips = connect_round_trips(cost)
    assert trips.round_trips == expected and trips.source.startswith("probe")


def test_a_connect_of_k_round_trips_costs_base_plus_k_rtt() -> None:
    """A no-pool operation: a 3 ms connect (5 round trips: TCP, the SSLRequest of
    sslmode=prefer, SCRAM's 3) and a 1 ms statement, 4.5 ms in all; at RTT r it connects in
    3 + 5r and takes 4.5 + 6r."""
    none = _strategy("psycopg:none", False, _phase("read", latency_us=4500, acquire_us=3000,
                                                   execute_us=1000))
    rows = project_run(_run(none, cost=_cost()))
    assert [d.rtt_ms for d in rows] == [0.2, 0.5, 1.0, 2.0, 5.0]
    for d in rows:
        assert d.connect_ms == pytest.approx(3 + 5 * d.rtt_ms)
        assert d.connect_round_trips == 5 and d.operation_round_trips == 6
        assert d.operation_ms == pytest.approx(4.5 + 6 * d.rtt_ms)
        assert d.statement_ms == pytest.approx(1 + d.rtt_ms)


def test_a_run_measured_through_the_relay_projects_from_its_own_rtt() -> None:
    """Measured at 2 ms added (the relay's --rtt): at 5 ms, three more per round trip."""
    none = _strategy("psycopg:none", False, _phase("read", latency_us=16500, acquire_us=13000,
                                                   execute_us=3000))
    at = {d.rtt_ms: d for d in project_run(_run(none, cost=_cost(), config={"rtt_ms": 2.0}))}
    assert at[5.0].connect_ms == pytest.approx(13 + 5 * 3)
    assert at[5.0].operation_ms == pytest.approx(16.5 + 6 * 3)
    assert at[0.2].operation_ms == pytest.approx(16.5 - 6 * 1.8)


@pytest.mark.parametrize(("s", "r"), [(1.0, 0.2), (1.0, 1.0), (0.5, 5.0)])
def test_statements_holding_s_at_rtt_r_give_one_over_s_plus_r_per_connection(
        s: float, r: float) -> None:
    """A pooled strategy whose statements hold a connection s ms: at RTT r each connection
    does 1/(s + r) operations per second, so X operations per second keep X·(s + r) busy."""
    pooled = _strategy("psycopg:pool", True, _phase(
        "read", latency_us=(s + 0.25) * 1000, acquire_us=250, execute_us=s * 1000,
        throughput=2000.0))
    (d,) = project_run(_run(pooled), rtts_ms=(r,))
    assert d.held_ms == pytest.approx(s + r)
    assert operations_per_connection_s(d.held_ms) == pytest.approx(1000 / (s + r))
    assert d.connections_busy == pytest.approx(2000 * (s + r) / 1000)
    assert connections_busy(2000, s + r) == pytest.approx(d.connections_busy)
    # a pool that resets each connection on release holds it a round trip more
    (reset,) = project_run(_run(pooled), rtts_ms=(r,), release_round_trips={"psycopg:pool": 1})
    assert reset.held_ms == pytest.approx(s + 2 * r) and reset.operation_round_trips == 2


def test_the_pool_saves_the_connects_round_trips_at_each_distance() -> None:
    none = _strategy("psycopg:none", False, _phase("read", latency_us=4500, acquire_us=3000,
                                                   execute_us=1000))
    pool = _strategy("psycopg:pool", True, _phase("read", latency_us=1200, acquire_us=100,
                                                  execute_us=1000))
    rows = project_run(_run(none, pool, cost=_cost(),
                            pairs=(("psycopg:none", "psycopg:pool"),)))
    saved = [d.saved_ms for d in rows if d.strategy == "psycopg:none"]
    assert saved == pytest.approx([3.3 + 5 * r for r in (0.2, 0.5, 1.0, 2.0, 5.0)])
    gains = [d.gain_pct for d in rows if d.strategy == "psycopg:none"]
    # at r: (4.5 + 6r - (1.2 + r)) / (4.5 + 6r)
    assert gains == pytest.approx([(3.3 + 5 * r) / (4.5 + 6 * r) * 100
                                   for r in (0.2, 0.5, 1.0, 2.0, 5.0)])
    assert all(d.gain_pct is None for d in rows if d.strategy == "psycopg:pool")
    # the pool's own connect: the probe's slices up to ReadyForQuery (3.6 ms) + 5r
    assert [d.connect_ms for d in rows if d.strategy == "psycopg:pool"] == pytest.approx(
        [3.6 + 5 * r for r in (0.2, 0.5, 1.0, 2.0, 5.0)])
    data = json.loads(json.dumps(replace(_run(none, pool), distances=rows).to_dict()))
    jsonschema.validate(data["distances"], SCHEMA["properties"]["distances"])


def test_a_scripts_statements_are_its_round_trips_begin_and_commit_included() -> None:
    text = "\\set aid random(1, 10)\nBEGIN;\nSELECT :aid;\nUPDATE t SET v = 1;\nCOMMIT;\n"
    statements = script_statements((ScriptFile("tx", "tx.sql", text, 1),
                                    ScriptFile("one", "one.sql", "SELECT 1;\n", 3)))
    assert statements == {"script:tx": 4, "script:one": 1}
    mixed = _strategy("psycopg:pool", True,
                      _phase("mix", ops=400, latency_us=2000, acquire_us=0, execute_us=2000),
                      _phase("script:tx", ops=100, latency_us=5000, acquire_us=0,
                             execute_us=5000),
                      _phase("script:one", ops=300, latency_us=1000, acquire_us=0,
                             execute_us=1000))
    profile = profile_of(mixed, statements)
    assert profile is not None and profile.round_trips == pytest.approx((100 * 4 + 300) / 400)


def _point(size: int, throughput: float, held_us: float, workers: int = 64) -> SweepPoint:
    return SweepPoint(strategy="psycopg:pool", pool_size=size, workers=workers,
                      throughput_ops_s=throughput, latency=_summary(held_us + 100),
                      acquire=_summary(100), execute=_summary(held_us), errors=0,
                      server_ok=True, run_tag="pb00000000")


def test_the_recommended_pool_grows_with_the_time_a_connection_is_held() -> None:
    """4 connections recommended where each operation holds one 1 ms: at 1 ms RTT it holds
    it 2 ms, so the same 3,000 ops/s need twice the pool; at 5 ms, six times."""
    curve = (_point(2, 1800, 1000), _point(4, 3000, 1000), _point(8, 3050, 1000))
    at1 = size_at_distance(curve, recommended=4, rtt_ms=1.0)
    assert at1.pool_size == 8 and at1.held_ms == pytest.approx(2.0)
    assert at1.connections_busy == pytest.approx(6.0)
    assert "holds its connection 2.00 ms there (1.00 ms measured at 0 ms" in at1.reason
    assert size_at_distance(curve, recommended=4, rtt_ms=5.0).pool_size == 24
    # measured through a 1 ms relay: back at 0 ms, the pool it needs shrinks again
    assert size_at_distance((_point(8, 3000, 2000),), recommended=8, rtt_ms=0.0,
                            measured_at_ms=1.0).pool_size == 4
    few = size_at_distance((_point(4, 3000, 1000, workers=16),), recommended=4, rtt_ms=5.0)
    assert few.pool_size == 24 and "more than the 16 clients" in few.reason


def test_connect_bound_at_distance_is_found_when_connecting_dominates_at_1_ms() -> None:
    none = _strategy("psycopg:none", False, _phase("read", latency_us=4500, acquire_us=3000,
                                                   execute_us=1000))
    pool = _strategy("psycopg:pool", True, _phase("read", latency_us=1200, acquire_us=100,
                                                  execute_us=1000))
    results = _run(none, pool, cost=_cost(), pairs=(("psycopg:none", "psycopg:pool"),),
                   config={"pool_max": 4})
    results = replace(results, distances=project_run(results))
    (found,) = [f for f in findings(results, server_cores=None)
                if f.rule == "connect-bound at distance"]
    assert found.strategy == "psycopg:none"
    assert found.evidence.startswith("at 1 ms RTT a new connection costs 8.00 ms (5 round "
                                     "trips), 76% of each operation's 10.50 ms")
    # Long statements (50 ms): connecting is not what an operation waits for, even at 1 ms.
    slow = _strategy("psycopg:none", False, _phase("read", latency_us=53500, acquire_us=3000,
                                                   execute_us=50000))
    results = _run(slow, cost=_cost(), config={"pool_max": 4})
    results = replace(results, distances=project_run(results))
    assert "connect-bound at distance" not in {
        f.rule for f in findings(results, server_cores=None)}


def test_a_run_projects_itself_to_other_distances(target: ConnectionTarget, table: str,
                                                  tmp_path: Path) -> None:
    results = run(RunConfig(target=target, strategies=("psycopg:none", "psycopg:pool"),
                            rows=20, workers=2, warmup=0, trials=1, table=table,
                            out_dir=tmp_path, sample_interval_s=0, connect_samples=1))
    rows = {(d.strategy, d.rtt_ms): d for d in results.distances}
    assert len(rows) == 10
    at1 = rows[("psycopg:none", 1.0)]
    # The embedded server speaks SCRAM without TLS: TCP 1, libpq's SSLRequest (sslmode
    # prefer) refused 1, startup and SCRAM 3; the probe counted its own 4 on the wire.
    assert at1.connect_round_trips == 5
    assert at1.connect_round_trips_from == "probe + the SSLRequest sslmode=prefer sends"
    assert at1.pooled_by == "psycopg:pool" and at1.operation_round_trips == 6
    # What the pool saves per operation grows by the connect's 5 round trips per ms of RTT.
    saved = [rows[("psycopg:none", r)].saved_ms for r in (0.2, 0.5, 1.0, 2.0, 5.0)]
    assert saved[-1] - saved[0] == pytest.approx(5 * 4.8)
    assert "connect-bound at distance" in {f.rule for f in results.findings}
    jsonschema.validate(json.loads((tmp_path / "results.json").read_text()), SCHEMA)
    out = io.StringIO()
    render_distances(results, Console(file=out, width=200))
    assert "at other distances" in out.getvalue() and f"{at1.connect_ms:.2f} (5)" in \
        out.getvalue()


def test_the_model_matches_runs_through_the_relay_at_two_distances(target: ConnectionTarget,
                                                                  table: str) -> None:
    """§3's check: a run through the relay at one distance, projected to the round trip the
    relay's own check measured at another, against the run there, within 15%: each
    strategy's operation, and a new connection without a pool. Both runs go through the
    relay and the distances are far (20 and 60 ms), so what the model adds, round trips ×
    the 40 ms between them, is most of each figure, and what a loaded machine adds to a
    connect's CPU is in both runs: what this checks is the round trips the model counts
    (6 per operation without a pool, 5 of them its connect; 1 with one), not how fast the
    machine is (bench/distance_model.py projects a loopback run to 1 and 5 ms)."""
    settings = dict(target=target, strategies=("psycopg:none", "psycopg:pool"), rows=2,
                    workers=1, pool_min=1, pool_max=1, warmup=0, trials=1, table=table,
                    out_dir=None, sample_interval_s=0, connect_samples=0)
    near, far = (run(RunConfig(**settings, rtt_ms=asked)) for asked in (20.0, 60.0))
    for asked, result in ((20.0, near), (60.0, far)):
        # The relay's timers fire early by at most a quarter of each one-way delay.
        assert result.rtt is not None and measured_at_ms(result) > 0.75 * asked
    model = {d.strategy: d for d in project_run(near, rtts_ms=(measured_at_ms(far),))}
    assert model["psycopg:none"].measured_at_ms == measured_at_ms(near)
    assert model["psycopg:none"].operation_round_trips == 6
    assert model["psycopg:pool"].operation_round_trips == 1
    measured = {s.name: profile_of(s) for s in far.strategies}
    for name, profile in measured.items():
        assert profile is not None
        assert model[name].operation_ms == pytest.approx(profile.latency_ms, rel=0.15), name
    none = model["psycopg:none"]
    assert none.connect_ms == pytest.approx(measured["psycopg:none"].acquire_ms, rel=0.15)
