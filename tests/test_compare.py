"""`poolbench compare`: a CI gate over two results.json files.

The tests of the method build result files whose answer is known by construction
(trials of chosen values and spread); the CLI tests use one real run.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import pytest
from conftest import run_cli
from scipy.stats import rankdata

from poolbench.analysis.compare import (
    METHOD_RUNS,
    CompareInputError,
    compare_runs,
    compare_sides,
    holm,
)
from poolbench.config import RunConfig
from poolbench.db.target import ConnectionTarget
from poolbench.results import SCHEMA_VERSION

PHASES = ("create", "read", "update", "delete")


def synthetic(throughputs: dict[str, list[float]], *, p99: dict[str, list[float]] | None = None,
              **config: object) -> dict:
    """A results.json's content: one strategy, these phases with these counted trials'
    throughputs (and p99s, else 2000 µs each) after one warm-up trial; the config is a real
    RunConfig's, with ``config`` over it."""
    phases = []
    for phase, values in throughputs.items():
        p99s = (p99 or {}).get(phase, [2000.0] * len(values))
        trials = [{"trial": 0, "warmup": True, "throughput_ops_s": values[0] / 2,
                   "latency": {"p50_us": 500, "p99_us": 9000}}]
        trials += [{"trial": i + 1, "warmup": False, "throughput_ops_s": v,
                    "latency": {"p50_us": 500, "p99_us": q}}
                   for i, (v, q) in enumerate(zip(values, p99s))]
        phases.append({"phase": phase, "throughput_ops_s": sorted(values)[len(values) // 2],
                       "latency": {"p50_us": 500, "p99_us": sorted(p99s)[len(p99s) // 2]},
                       "trials": trials})
    settings = RunConfig(strategies=("psycopg:pool",), trials=len(next(iter(
        throughputs.values())))).public_dict()
    settings.update(config)
    return {"schema_version": SCHEMA_VERSION, "run_tag": "pb00000000", "partial": False,
            "config": settings,
            "environment": {"host": "bench", "cpu_count": 2, "poolbench": "1", "python": "3",
                            "machine": "x86_64", "packages": {}, "server":
                            {"server_version": "16.1"}},
            "strategies": [{"name": "psycopg:pool", "phases": phases}]}


def every_phase(values: list[float]) -> dict[str, list[float]]:
    return {phase: list(values) for phase in PHASES}


def compared(base: dict, new: dict, threshold: float = 5.0):
    return compare_runs(base, new, base_name="base", new_name="new", threshold_pct=threshold)


def change(comparison, phase: str, metric: str):
    return next(c for c in comparison.changes if c.phase == phase and c.metric == metric)


STEADY = [1000.0, 1004.0, 1008.0, 1012.0, 1016.0, 1020.0]  # 2% spread


def test_holm_known_answer() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> made
    # non-decreasing: 0.02, 0.03, 0.06, 0.06; given back in the input's order.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.02]) == pytest.approx([0.5, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # never below an earlier step


def test_holm_over_every_figure_compared() -> None:
    """Four phases, three figures: a family of 12. Six trials against six that separate
    completely give p = 2 / C(12, 6) = 0.00216, 0.026 once multiplied by 12: a
    regression. Five against five give at best 2 / C(10, 5) = 0.0079: below 0.05 alone,
    but they cannot reach 0.05 / 12, so they cannot be judged."""
    slower = every_phase(STEADY)
    slower["read"] = [v * 0.7 for v in STEADY]
    result = compared(synthetic(every_phase(STEADY)), synthetic(slower))
    five = compared(synthetic(every_phase(STEADY[:5])),
                    synthetic({k: v[:5] for k, v in slower.items()}))
    assert not five.regressions
    assert change(five, "read", "throughput").significant is None
    read = change(result, "read", "throughput")
    assert read.p_value == pytest.approx(2 / math.comb(12, 6))
    assert [(c.phase, c.metric) for c in result.regressions] == [("read", "throughput")]
    assert result.family == 12
    assert read.p_holm == pytest.approx(12 * 2 / math.comb(12, 6))
    assert any("need at least 6 counted trials per run" in w for w in five.warnings)


def test_exact_distribution_without_ties() -> None:
    """Nine trials against nine, completely apart: exactly 2 of the C(18, 9) splits are as
    extreme, p = 2 / 48620 (the normal approximation says about 4e-4)."""
    base = [1000.0 + i for i in range(9)]
    new = [900.0 + i for i in range(9)]
    result = compared(synthetic({"mix": base}, mix={"read": 1}),
                      synthetic({"mix": new}, mix={"read": 1}))
    assert change(result, "mix", "throughput").p_value == pytest.approx(2 / math.comb(18, 9))


def brute_force_p(base: list[float], new: list[float]) -> float:
    """Two-sided p of U (mid-ranks) over every split of the pooled values."""
    pooled = base + new

    def u(chosen: tuple[int, ...]) -> float:
        ranks = rankdata(pooled)
        return sum(ranks[i] for i in chosen) - len(base) * (len(base) + 1) / 2

    observed = u(tuple(range(len(base))))
    splits = [u(c) for c in itertools.combinations(range(len(pooled)), len(base))]
    lower = sum(s <= observed + 1e-9 for s in splits) / len(splits)
    upper = sum(s >= observed - 1e-9 for s in splits) / len(splits)
    return min(1.0, 2 * min(lower, upper))


def test_tied_percentiles_use_the_permutation_distribution() -> None:
    """HDR buckets make p99s tie; the p is that of every split of the pooled trials."""
    base_p99 = [2000.0, 2000.0, 2100.0, 2100.0, 2200.0, 2300.0]
    new_p99 = [2100.0, 2200.0, 2200.0, 2300.0, 2300.0, 2400.0]
    result = compared(synthetic({"mix": STEADY}, p99={"mix": base_p99}, mix={"read": 1}),
                      synthetic({"mix": STEADY}, p99={"mix": new_p99}, mix={"read": 1}))
    p99 = change(result, "mix", "p99")
    assert p99.p_value == pytest.approx(brute_force_p(base_p99, new_p99))
    assert change(result, "mix", "throughput").p_value == 1.0


BIMODAL = [950.0, 955.0, 960.0, 1400.0, 1410.0, 1420.0]  # interquartile spread 38% of 1180
LOWER = [900.0, 905.0, 910.0, 915.0, 920.0, 930.0]  # -35%, every trial below BIMODAL's


def test_a_significant_change_inside_the_runs_noise_is_no_regression() -> None:
    """One phase (a family of 3). Trials completely apart (significant after Holm), but a
    change (-35%) smaller than the base run's interquartile spread (38%: its trials sit
    in two groups): a run whose trials scatter that much cannot show such a change as
    more than its own noise."""
    result = compared(synthetic({"mix": BIMODAL}, mix={"read": 1}),
                      synthetic({"mix": LOWER}, mix={"read": 1}))
    figure = change(result, "mix", "throughput")
    assert not result.regressions
    assert figure.significant and figure.ranges_apart and not figure.beyond_noise
    q1, q3 = 955.0 + 0.25 * 5, 1400.0 + 0.75 * 10  # linear interpolation, as numpy
    assert figure.spread_pct == pytest.approx((q3 - q1) / 1180 * 100)


def test_one_outlying_trial_does_not_hide_a_change() -> None:
    """Trials that overlap by one (an outlier of the new run above the base's lowest;
    p = 4 / 924, significant after Holm) and a -28% change: the interquartile spread
    ignores the outlier (max - min would be 30%), so the drop is a regression."""
    overlapping = [1002.0, 700.0, 710.0, 720.0, 730.0, 740.0]
    result = compared(synthetic({"mix": STEADY}, mix={"read": 1}),
                      synthetic({"mix": overlapping}, mix={"read": 1}))
    figure = change(result, "mix", "throughput")
    assert figure.significant and not figure.ranges_apart and figure.beyond_noise
    assert [c.metric for c in result.regressions] == ["throughput"]


def test_the_gate_says_why_a_change_is_noise_and_what_differs(tmp_path: Path) -> None:
    base = synthetic({"mix": BIMODAL}, mix={"read": 1})
    new = synthetic({"mix": LOWER}, mix={"read": 2}, interleave=True)
    new["partial"] = True
    result = run_cli("compare", str(write(tmp_path / "base.json", base)),
                     str(write(tmp_path / "new.json", new)), "--markdown", "cmp.md",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "config differs: interleave False -> True" in text
    assert "config differs: mix {'read': 1} -> {'read': 2}" in text
    assert "new.json is a partial run (interrupted)" in text
    markdown = (tmp_path / "cmp.md").read_text()  # the console wraps the table's cells
    assert ("| -34.6% | within run-to-run noise (p=0.006, but the change is within the runs' "
            "38% interquartile spread) |") in markdown
    assert "Holm (1979)" in markdown and "interleave False -> True" in markdown


def test_a_20_percent_drop_beyond_the_noise_is_a_regression() -> None:
    result = compared(synthetic({"mix": STEADY}, mix={"read": 1}),
                      synthetic({"mix": [v * 0.8 for v in STEADY]}, mix={"read": 1}),
                      threshold=10.0)
    assert [c.metric for c in result.regressions] == ["throughput"]
    assert result.regressions[0].change_pct == pytest.approx(-20.0)


def test_every_setting_that_differs_is_warned_about() -> None:
    base = synthetic(every_phase(STEADY))
    other = dict(mix={"read": 80, "update": 20}, interleave=True, cluster="local:2", nodes=2,
                 acquire_timeout_s=5.0, statement_timeout_s=1.0, sample_interval_s=0,
                 keep_prepared=True, via=["direct", "pgbouncer:transaction"], warmup_s=2.0,
                 out_dir="elsewhere", target_source="--dsn")
    new = synthetic(every_phase(STEADY), **other)
    warnings = compared(base, new).warnings
    for key in other:
        said = [w for w in warnings if w.startswith(f"config differs: {key} ")]
        if key in ("out_dir", "target_source"):  # where the reports went: not a setting
            assert not said, said
        else:
            assert len(said) == 1, (key, warnings)
    assert "config differs: interleave False -> True" in warnings
    # A key only one run has (written by another poolbench version) is a difference too.
    newer = copy.deepcopy(base)
    newer["config"]["pool_timeout_s"] = 3
    assert "config differs: pool_timeout_s None -> 3" in compared(base, newer).warnings


def test_partial_runs_are_warned_about() -> None:
    base = synthetic(every_phase(STEADY), strategies=["psycopg:pool", "asyncpg:pool"])
    new = synthetic(every_phase(STEADY))
    base["partial"] = True
    phase = new["strategies"][0]["phases"][3]
    phase["trials"] = phase["trials"][:4]  # the warm-up and 3 of 6 counted trials
    del new["strategies"][0]["phases"][2]
    warnings = compared(base, new).warnings
    assert "base is a partial run (interrupted): only what it finished is compared" in warnings
    assert "base has no results for asyncpg:pool" in warnings
    assert "new: psycopg:pool has no update phase" in warnings
    assert "new: psycopg:pool delete has 3 of 6 counted trials" in warnings
    assert compared(synthetic(every_phase(STEADY)), synthetic(every_phase(STEADY))).warnings == ()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory, target: ConnectionTarget) -> dict:
    cwd = tmp_path_factory.mktemp("compare")
    # Open loop at a fixed rate: each trial's throughput is the rate, within a few percent,
    # so a 30% drop stands out of the noise of this machine.
    result = run_cli("run", "--dsn", target.conninfo(), "--strategies", "psycopg:pool", "-n",
                     "1", "-w", "4", "--warmup", "1", "--trials", "6", "--rate", "400",
                     "--duration", "0.25", "--no-chart", "--table", "compare_users", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads((cwd / "reports" / "results.json").read_text())


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_identical_runs_pass_the_gate(tmp_path: Path, base_run: dict) -> None:
    base = write(tmp_path / "base.json", base_run)
    result = run_cli("compare", str(base), str(base), "--markdown", "cmp.md", "--html",
                     "cmp.html", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REGRESSION" not in result.stdout and "significant (p" not in result.stdout
    text = " ".join(result.stdout.split())  # the console wraps long lines
    assert "Mann–Whitney U" in text and "Holm (1979)" in text
    assert "bench/compare_false_alarm.py" in text
    assert "| psycopg:pool | read | throughput [ops/s] |" in (tmp_path / "cmp.md").read_text()
    assert "<table>" in (tmp_path / "cmp.html").read_text()


def test_throughput_lowered_30_percent_fails_the_gate(tmp_path: Path, base_run: dict) -> None:
    slower = copy.deepcopy(base_run)
    phase = slower["strategies"][0]["phases"][1]  # read
    assert phase["phase"] == "read"
    phase["throughput_ops_s"] *= 0.7
    for trial in phase["trials"]:
        trial["throughput_ops_s"] *= 0.7
    result = run_cli("compare", str(write(tmp_path / "base.json", base_run)),
                     str(write(tmp_path / "new.json", slower)), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "regression: psycopg:pool read throughput -30.0%" in result.stdout
    assert "regression: psycopg:pool create" not in result.stdout  # only what changed


def test_other_settings_or_machine_are_warned_about(tmp_path: Path, base_run: dict) -> None:
    other = copy.deepcopy(base_run)
    other["config"]["workers"] = 8
    other["environment"]["cpu_count"] = 64
    result = run_cli("compare", str(write(tmp_path / "base.json", base_run)),
                     str(write(tmp_path / "new.json", other)), cwd=tmp_path)
    assert result.returncode == 0
    assert "config differs: workers 4 -> 8" in result.stdout
    assert "environment differs: cpu_count" in result.stdout


def test_one_trial_each_cannot_be_judged(tmp_path: Path, base_run: dict) -> None:
    one = copy.deepcopy(base_run)
    for phase in one["strategies"][0]["phases"]:
        phase["trials"] = phase["trials"][:2]  # the warm-up and one counted trial
        phase["throughput_ops_s"] *= 0.5
    result = run_cli("compare", str(write(tmp_path / "base.json", one)),
                     str(write(tmp_path / "new.json", one)), cwd=tmp_path)
    assert result.returncode == 0 and "cannot be judged" in result.stdout


def test_older_schema_versions_are_read(tmp_path: Path, base_run: dict) -> None:
    old = copy.deepcopy(base_run)
    old["schema_version"] = 2
    old["harness_us_per_op"] = 2.4
    for strategy in old["strategies"]:
        for key in ("route", "prepared_statements", "pooler"):
            strategy.pop(key)
        for phase in strategy["phases"]:
            phase.pop("failed")
            phase.pop("histogram_failed_us")
    v1 = copy.deepcopy(old)
    v1["schema_version"] = 1
    v1.pop("calibration")
    v1.pop("harness_us_per_op")
    for version, data in ((2, old), (1, v1)):
        result = run_cli("compare", str(write(tmp_path / f"v{version}.json", data)),
                         str(write(tmp_path / "now.json", base_run)), cwd=tmp_path)
        assert result.returncode == 0, (version, result.stderr)


@pytest.mark.parametrize("content", ["not json at all", '{"schema_version": 99}', "[1, 2]",
                                     '{"schema_version": 3}',
                                     '{"schema_version": 5, "points": [], '
                                     '"recommendations": []}'])  # a sweep.json
def test_unreadable_input_exits_2(tmp_path: Path, base_run: dict, content: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    base = write(tmp_path / "base.json", base_run)
    result = run_cli("compare", str(base), "bad.json", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.json" in lines[0], result.stderr
    result = run_cli("compare", str(base), "missing.json", cwd=tmp_path)
    assert result.returncode == 2 and "missing.json" in result.stderr


def test_what_would_make_exit_1_lie_is_refused_with_exit_2(tmp_path: Path,
                                                           base_run: dict) -> None:
    """Exit 1 means a regression, so a gate can trust it: a threshold of nan (which no
    change exceeds), an output file that cannot be written (checked before comparing), and
    two runs with nothing in common each exit 2 in one line, even with a 30% drop."""
    slower = copy.deepcopy(base_run)
    for phase in slower["strategies"][0]["phases"]:
        phase["throughput_ops_s"] *= 0.7
        for trial in phase["trials"]:
            trial["throughput_ops_s"] *= 0.7
    base = str(write(tmp_path / "base.json", base_run))
    new = str(write(tmp_path / "new.json", slower))
    (tmp_path / "folder").mkdir()
    for extra in (["--threshold", "nan"], ["--markdown", "missing/x.md"],
                  ["--html", "folder"]):
        result = run_cli("compare", base, new, *extra, cwd=tmp_path)
        assert result.returncode == 2, (extra, result.stdout + result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    other = copy.deepcopy(base_run)
    for strategy in other["strategies"]:
        strategy["name"] = "asyncpg:none"
    result = run_cli("compare", base, str(write(tmp_path / "other.json", other)),
                     cwd=tmp_path)
    assert result.returncode == 2 and "nothing was compared" in result.stderr


def test_runs_whose_trials_scatter_more_than_the_threshold_are_warned_about() -> None:
    """A gate cannot see a change smaller than the runs' own scatter: it says so."""
    result = compared(synthetic({"mix": BIMODAL}, mix={"read": 1}),
                      synthetic({"mix": BIMODAL}, mix={"read": 1}), threshold=10.0)
    (warning,) = [w for w in result.warnings if "vary by" in w]
    assert warning.startswith("these runs' trials vary by 38% within a run")
    steady = compared(synthetic({"mix": STEADY}, mix={"read": 1}),
                      synthetic({"mix": STEADY}, mix={"read": 1}), threshold=10.0)
    assert not [w for w in steady.warnings if "vary by" in w]


# --- several runs per side: the run as the unit ---------------------------------------------


def runs_at(levels: list[float], spread: float = 0.01) -> list[dict]:
    """One run per level: six trials within ±spread of it, on every phase."""
    return [synthetic(every_phase([level * (1 + spread * k / 5) for k in (-5, -3, -1, 1, 3, 5)]))
            for level in levels]


def test_runs_as_the_unit_known_answer() -> None:
    """Welch's t on the logs of the runs' medians, against scipy's own on the same values;
    a 20% drop measured by four runs a side that drift ±3% between runs is a regression,
    and the same runs against themselves are not."""
    from scipy.stats import ttest_ind

    base_levels = [1000.0, 1030.0, 970.0, 1010.0]
    new_levels = [v * 0.8 for v in (990.0, 1020.0, 1000.0, 975.0)]
    result = compare_sides(runs_at(base_levels), runs_at(new_levels), base_name="a",
                           new_name="b", threshold_pct=10.0)
    assert result.method == METHOD_RUNS and result.family == 4 * 3
    read = change(result, "read", "throughput")
    # each run's figure: its trials' median = its level
    expected = ttest_ind([math.log(v) for v in base_levels], [math.log(v) for v in new_levels],
                         equal_var=False).pvalue
    assert read.p_value == pytest.approx(expected)
    geometric = math.exp(sum(map(math.log, new_levels)) / 4) / math.exp(
        sum(map(math.log, base_levels)) / 4) - 1
    assert read.change_pct == pytest.approx(geometric * 100)
    assert {(c.phase, c.metric) for c in result.regressions} == {
        (phase, "throughput") for phase in PHASES}
    same = compare_sides(runs_at(base_levels), runs_at(base_levels[::-1]), base_name="a",
                         new_name="b", threshold_pct=10.0)
    assert not same.regressions


def test_runs_that_drift_more_than_the_change_are_no_regression() -> None:
    """Runs ±25% apart on each side: a 15% drop is not significant, whatever its trials
    say (each run's trials agree within 1%: the single-run method would call it)."""
    base = runs_at([1000.0, 1250.0, 800.0, 1100.0, 900.0])
    new = runs_at([v * 0.85 for v in (1000.0, 1250.0, 800.0, 1100.0, 900.0)][::-1])
    result = compare_sides(base, new, base_name="a", new_name="b", threshold_pct=10.0)
    assert not result.regressions
    assert all(not c.significant for c in result.changes if c.metric == "throughput")
    single = compare_runs(base[0], new[-1], base_name="a", new_name="b", threshold_pct=10.0)
    assert single.regressions  # one run each: the drift cannot be told from a change


def test_a_side_of_one_run_against_several_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CompareInputError, match="1 run"):
        compare_sides(runs_at([1000.0]), runs_at([1000.0, 990.0]), base_name="a",
                      new_name="b")


def test_folders_of_runs_through_the_cli(tmp_path: Path) -> None:
    """``poolbench compare old/ new/``: every results.json below each folder is a run."""
    for side, levels in (("old", [1000.0, 1030.0, 970.0]), ("new", [800.0, 790.0, 810.0])):
        for i, data in enumerate(runs_at(levels)):
            write(tmp_path / side / f"run{i}" / "results.json", data)
    result = run_cli("compare", "old", "new", "--markdown", "cmp.md", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    markdown = (tmp_path / "cmp.md").read_text()
    assert "the run as the unit" in markdown and "REGRESSION" in markdown
    (tmp_path / "empty").mkdir()
    result = run_cli("compare", "old", "empty", cwd=tmp_path)
    assert result.returncode == 2 and "no results.json" in result.stderr


def test_a_script_run_is_one_mixed_phase_not_missing_four() -> None:
    scripts = [{"name": "read.sql", "path": "read.sql", "weight": 1, "sha256": "ab"}]
    base = synthetic({"mix": STEADY}, scripts=scripts)
    result = compared(base, copy.deepcopy(base))
    assert not [w for w in result.warnings if "has no" in w], result.warnings
