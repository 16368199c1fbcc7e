"""MSER-5 on series with a known answer: a built-in transient is cut to within one batch,
a steady series is not cut, a drifting one never settles, a short one is not judged, and
steady noise is rarely called unsettled (pure functions); then the rule wired into a run:
a trial's operations per 0.1 s, its verdict, the finding, and one short real run."""

from __future__ import annotations

import math
import random
import re

import pytest
from rich.console import Console

from poolbench.analysis.findings import findings, not_steady
from poolbench.analysis.sweep import point_of
from poolbench.api import run
from poolbench.config import RunConfig
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError
from poolbench.events import RunEvents
from poolbench.measure.metrics import HISTOGRAMS, OperationRecorder, PhaseMeasurement, PhaseSink
from poolbench.measure.steady import batch_means, mser, steady_state
from poolbench.measure.summary import phase_result, trial_result
from poolbench.report.console import render
from poolbench.results import SCHEMA_VERSION, RunResults, SteadyVerdict, StrategyResult


def _wiggle(n: int) -> list[float]:
    """Small deterministic noise around 1000 (±5)."""
    return [1000 + 5 * math.sin(i) for i in range(n)]


def test_mser_is_the_truncated_sum_of_squares_over_the_squared_count() -> None:
    values = [1.0, 5.0, 3.0, 4.0]
    # d=0: mean 3.25, squares 5.0625+3.0625+0.0625+0.5625 = 8.75, / 16
    # d=1: mean 4, squares 1+1+0 = 2, / 9; d=2: 0.5 / 4; d=3: 0
    assert mser(values) == pytest.approx((8.75 / 16, 2 / 9, 0.5 / 4, 0.0))
    assert batch_means(list(range(12)), 5) == (2.0, 7.0)  # the partial batch is left out


def test_a_transient_of_20_points_is_cut_at_20() -> None:
    series = [500.0] * 20 + _wiggle(180)
    state = steady_state(series)
    assert (state.cut, state.settled, state.observations) == (20, True, 200)
    assert "settled after 20" in state.reason


@pytest.mark.parametrize("transient", [13, 22, 37])
def test_a_transient_off_the_batch_grid_is_cut_within_one_batch(transient: int) -> None:
    state = steady_state([500.0] * transient + _wiggle(200 - transient))
    assert state.settled and abs(state.cut - transient) < state.batch_size
    assert state.cut % state.batch_size == 0


def test_a_noisy_transient_is_cut_within_one_batch() -> None:
    rng = random.Random(1)
    series = ([500 + rng.gauss(0, 10) for _ in range(20)]
              + [1000 + rng.gauss(0, 10) for _ in range(180)])
    state = steady_state(series)
    assert state.settled and abs(state.cut - 20) <= 5


def test_a_warm_up_that_decays_is_cut_where_it_meets_the_noise() -> None:
    """1000 (1 - e^(-t/5)) reaches within the noise (±5) of 1000 at t ≈ 26."""
    state = steady_state([1000 * (1 - math.exp(-i / 5)) + 5 * math.sin(i)
                          for i in range(200)])
    assert state.settled and 15 <= state.cut <= 35


@pytest.mark.parametrize("series", [_wiggle(200), [1000.0] * 100], ids=["wiggle", "flat"])
def test_a_steady_series_is_not_cut(series: list[float]) -> None:
    state = steady_state(series)
    assert (state.cut, state.settled) == (0, True)
    assert "steady from the start" in state.reason


@pytest.mark.parametrize("slope", [2.0, -2.0, 0.5])
def test_a_drifting_series_never_settles(slope: float) -> None:
    state = steady_state([1000 + slope * i + 5 * math.sin(i) for i in range(200)])
    assert (state.cut, state.settled) == (0, False)
    assert "never settles" in state.reason


def test_a_warm_up_of_half_the_trial_counts_as_never_settling() -> None:
    for transient in (100, 110):
        assert steady_state([500.0] * transient + _wiggle(200 - transient)).settled is False


def test_a_warm_up_well_over_half_the_trial_is_msers_blind_spot() -> None:
    """As the module says: no steady stretch within reach of d <= n/2, so the series
    reads as steady from the start (the warm-up trials are the guard)."""
    state = steady_state([500.0] * 130 + _wiggle(70))
    assert (state.cut, state.settled) == (0, True)


def test_a_constant_series_off_zero_is_steady_despite_rounding() -> None:
    for level in (0.1, 1234.567, 987654.321):
        assert steady_state([level] * 150) == steady_state([0.0] * 150)


def test_a_series_too_short_to_judge_says_how_long_it_must_be() -> None:
    state = steady_state(_wiggle(99))  # 19 batches of 5
    assert (state.cut, state.settled) == (0, None)
    assert "needs 20" in state.reason and "100 observations" in state.reason
    assert steady_state(_wiggle(100)).settled is True


def test_steady_noise_is_rarely_called_unsettled() -> None:
    """The false-alarm rate the module quotes for 20 batches (about 2%), measured on
    white noise with fixed seeds."""
    runs, unsettled = 400, 0
    for seed in range(runs):
        rng = random.Random(seed)
        unsettled += steady_state([1000 + rng.gauss(0, 20) for _ in range(100)]
                                  ).settled is False
    assert unsettled / runs < 0.05


def test_another_batch_size_is_mser_on_its_batches() -> None:
    state = steady_state([500.0] * 20 + _wiggle(80), batch_size=1, min_batches=50)
    assert (state.cut, state.settled, state.batch_size) == (20, True, 1)


@pytest.mark.parametrize(("series", "kwargs", "message"), [
    ([1.0, math.nan] * 60, {}, "finite"),
    ([1.0] * 100, {"batch_size": 0}, "batch_size"),
    ([1.0] * 100, {"min_batches": 1}, "min_batches"),
])
def test_bad_input_is_a_one_line_error(series: list[float], kwargs: dict,
                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        steady_state(series, **kwargs)


# --- wired into a run: the recorder's operations per 0.1 s, the trial's verdict, the finding


def _recorded(per_tenth: list[int], sink: PhaseSink | None = None) -> OperationRecorder:
    """A recorder that saw ``per_tenth[i]`` operations end in the i-th 0.1 s of its phase
    (each 1 ms long), handed on to ``sink`` as a worker does when one is given."""
    rec = OperationRecorder(sink=sink)
    for i, n in enumerate(per_tenth):
        for j in range(n):
            t3 = i * 100_000_000 + 1 + j * (99_000_000 // n)
            rec.record(t3 - 1_000_000, t3 - 900_000, t3 - 100_000, t3)
    rec.finish()
    if sink is not None:  # as the executor does: the sink's series rides on a recorder
        rec.seconds, rec.tenths = sink.seconds, dict(sink.tenths)
        for kind in HISTOGRAMS:
            setattr(rec, kind, sink.counts(kind))
    return rec


def _trial(per_tenth: list[int], *, elapsed_s: float, trial: int = 1) -> PhaseMeasurement:
    # Two workers: one hands its seconds to a sink, one keeps them; merged as in a phase.
    half = [n // 2 for n in per_tenth]
    rest = [n - h for n, h in zip(per_tenth, half)]
    return PhaseMeasurement.merge(phase="read", trial=trial, warmup=False, elapsed_s=elapsed_s,
                                  recorders=[_recorded(half, PhaseSink()), _recorded(rest)])


def test_a_trial_with_a_two_second_warm_up_is_cut_there_and_its_figures_kept() -> None:
    # 12 s at 0.1 s: 40 ops per interval for 2 s, then a flat 100 (±2).
    series = [40] * 20 + [100 + (i * 7) % 5 - 2 for i in range(100)]
    m = _trial(series, elapsed_s=12.0)
    assert m.tenths == tuple(series) and sum(m.tenths) == m.ops
    result = trial_result(m)
    assert result.steady == SteadyVerdict(cut_s=2.0, settled=True, observations=120,
                                          reason="settled after 20 of 120 observations")
    assert result.ops == sum(series) and result.throughput_ops_s == sum(series) / 12.0
    assert not_steady("psycopg:pool", (phase_result("read", [m]),)) is None


def test_a_drifting_trial_never_settles_and_is_a_finding() -> None:
    m = _trial([40 + i for i in range(120)], elapsed_s=12.0)
    assert trial_result(m).steady.settled is False
    finding = not_steady("psycopg:pool", (phase_result("read", [m]),))
    assert finding is not None and finding.rule == "not steady"
    assert finding.evidence.startswith("trial 1 of psycopg:pool read never settled (MSER-5")
    assert "White 1997" in finding.evidence and "--duration" in finding.fix


def test_a_sweep_point_counts_its_trials_judged_and_settled() -> None:
    """Trial 1 settles after a warm-up, trial 2 drifts, trial 3 is too short to judge: the
    point has 2 judged, 1 settled, and the run's findings name trial 2 only."""
    phase = phase_result("read", [
        _trial([40] * 20 + [100] * 100, elapsed_s=12.0, trial=1),
        _trial([40 + i for i in range(120)], elapsed_s=12.0, trial=2),
        _trial([100] * 5, elapsed_s=0.5, trial=3)])
    strategy = StrategyResult(name="psycopg:pool", pooled=True, is_async=False,
                              per_operation="acquire", open_s=0.0, phases=(phase,), stats={},
                              leftover_rows_deleted=0)
    results = RunResults(schema_version=SCHEMA_VERSION, run_tag="pb00000000", partial=False,
                         started_at="", finished_at="", config={}, environment={},
                         strategies=(strategy,), comparison=None, verification=None)
    point = point_of(results, strategy, pool_size=4, workers=8)
    assert (point.trials_judged, point.trials_settled) == (2, 1)
    (finding,) = findings(results, server_cores=None)
    assert finding.evidence.startswith("trial 2 of psycopg:pool read never settled")


def test_a_short_run_is_not_judged_once_and_its_intervals_sum_to_its_operations(
        target: ConnectionTarget, table: str) -> None:
    measured: list[PhaseMeasurement] = []
    events = RunEvents()
    events.phase_finished.add_listener(lambda measurement: measured.append(measurement))
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), duration_s=0.5,
                            workers=2, warmup=0, trials=1, table=table, out_dir=None,
                            sample_interval_s=0), events=events)
    assert measured and all(sum(m.tenths) == m.ops > 0 for m in measured)
    verdicts = [t.steady for p in results.strategies[0].phases for t in p.trials]
    assert verdicts and all(v is not None and v.settled is None and v.observations < 100
                            for v in verdicts)
    console = Console(record=True, width=200)
    render(results, console)
    text = console.export_text()
    assert len(re.findall(r"steady state: not judged: \d+ intervals < 100", text)) == 1
