"""How often ``poolbench compare`` fails an A/A pair, and how often it catches a real 20%
slowdown.

On one embedded server, each pair is three runs of one small configuration in a row:
A, A' (the same configuration again: an A/A pair) and S, the same configuration
against a server made slower. The runs' order rotates from pair to pair (A A' S,
A' S A, S A A'), so that no kind always comes first on a server that has just
deleted a run's rows. ``compare_runs`` (the method ``poolbench compare`` prints) is
applied to A -> A' (a regression there is a false alarm: the gate would fail an
unchanged build) and A' -> S (a throughput regression in a slowed phase is a
detection).

The slowdown is real work the server does, not an edited number: a BEFORE INSERT
OR UPDATE OR DELETE trigger on the run's table makes every row cost extra CPU on the
server (``count(*)`` over ``generate_series(1, n)``), the way a validation or audit
trigger makes every write cost more. CPU work scales with the machine's speed, so the
slowdown stays the same share of an operation when the VM runs faster or slower (the
first version slept ``pg_sleep`` on rows ``id % 10000 < k``: a 1-s trial's few thousand
consecutive ids got anywhere from none to all of its share, and achieved slowdowns ranged
from -27% to 42%). ``n`` is set per phase (create, update, delete) from the first run's
throughput and the server's measured cost of one loop step, so that each worker's
operations take 25% longer (1 / 1.25 = 20% fewer ops/s), then set from four calibration
runs with the trigger, alternating with plain ones (the added time is taken as proportional
to n, and the median of the four estimates of that proportion is used); the slowdown each
pair got is printed. Reads do not fire the trigger: in the A' -> S pairs the read phase is one
more A/A.

The configuration is one a gate can judge on a 2-core machine: 2 workers (8 workers on 2
cores made trials scatter by 25-160% and two runs differ by up to 48%: the first version of
this script, at 2000 rows), phases of ``--duration`` seconds, 8 counted trials.

Besides the 10 A/A pairs run back to back, every pairing of two unslowed runs (A and A' of
all pairs, run up to half an hour apart) is compared too, and every unslowed run against
every slowed one: the rates over those pairings are printed beside the pairs' own.

Run: python bench/compare_false_alarm.py [--pairs 10] [--trials 8] [--duration 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from _common import Report

from poolbench import RunConfig, run
from poolbench.analysis.compare import (
    DEFAULT_THRESHOLD_PCT,
    METHOD,
    RunComparison,
    compare_runs,
    spread_pct,
)
from poolbench.db.admin import AdminSession
from poolbench.db.server import EmbeddedServer
from poolbench.db.workload import ensure_table, quote_ident

TABLE = "compare_false_alarm"
STRATEGY = "psycopg:pool"
SLOWED = ("create", "update", "delete")
TG_OP = {"create": "INSERT", "update": "UPDATE", "delete": "DELETE"}
CALIBRATION_ROUNDS = 4
TARGET_DROP = 0.20  # throughput 20% lower: each operation 25% longer in a closed loop


def one_run(target: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One run as ``poolbench compare`` reads it (results.json's content)."""
    results = run(RunConfig(target=target, strategies=(STRATEGY,), rows=args.rows,
                            duration_s=args.duration or None, workers=args.workers,
                            pool_min=args.workers, pool_max=args.workers, warmup=1,
                            trials=args.trials, table=TABLE, out_dir=None, chart=False,
                            sample_interval_s=0))
    return json.loads(json.dumps(results.to_dict(), default=str))


def throughput(data: dict[str, Any], phase: str) -> float:
    return next(p["throughput_ops_s"] for p in data["strategies"][0]["phases"]
                if p["phase"] == phase)


def install_slowdown(admin: AdminSession, loops: dict[str, int]) -> None:
    """The trigger: ``loops[phase]`` steps of server CPU work on every row of that phase."""
    branches = "".join(f"WHEN '{TG_OP[phase]}' THEN {n} " for phase, n in loops.items())
    body = f"""
        CREATE OR REPLACE FUNCTION compare_false_alarm_slow() RETURNS trigger AS $$
        DECLARE n integer := CASE TG_OP {branches}ELSE 0 END;
        BEGIN
          IF n > 0 THEN
            PERFORM count(*) FROM generate_series(1, n);
          END IF;
          RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
        END $$ LANGUAGE plpgsql"""
    table = quote_ident(TABLE)
    admin.call(lambda c: c.execute(body))
    admin.call(lambda c: c.execute(f"CREATE TRIGGER compare_false_alarm_slow BEFORE INSERT OR "
                                   f"UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION "
                                   "compare_false_alarm_slow()"))


def remove_slowdown(admin: AdminSession) -> None:
    admin.call(lambda c: c.execute(f"DROP TRIGGER IF EXISTS compare_false_alarm_slow ON "
                                   f"{quote_ident(TABLE)}"))


def seconds_per_loop(admin: AdminSession) -> float:
    """The server's cost of one ``generate_series`` step (the best of five timings)."""
    steps = 500_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        admin.call(lambda c: c.execute(f"SELECT count(*) FROM generate_series(1, {steps})"))
        best = min(best, time.perf_counter() - start)
    return best / steps


def loops_for(speed: dict[str, float], workers: int, stretch: dict[str, float],
              per_loop_s: float) -> dict[str, int]:
    """Loop steps per row, per phase, so each worker's operation takes 25% longer: a worker
    spends workers / throughput seconds per operation (``speed``: ops/s)."""
    added = TARGET_DROP / (1 - TARGET_DROP)
    return {phase: max(1, round(added * workers / speed[phase] / per_loop_s
                                * stretch.get(phase, 1.0))) for phase in SLOWED}


def worst(comparison: RunComparison, *, phases: tuple[str, ...] | None = None,
          metrics: tuple[str, ...] = ("throughput", "p99")) -> float | None:
    """The largest worsening (in %) among the changes the method calls significant and beyond
    the runs' noise: the gate fails at any --threshold below it (None: at none)."""
    worse = [-c.change_pct if c.metric == "throughput" else c.change_pct
             for c in comparison.changes
             if c.significant and c.beyond_noise and c.metric in metrics
             and (phases is None or c.phase in phases)]
    return max(worse, default=None)


def fails(worst_pct: float | None, threshold: float) -> bool:
    return worst_pct is not None and worst_pct > threshold


def verdict(comparison: RunComparison) -> str:
    return ", ".join(f"{c.phase} {c.metric} {c.change_pct:+.1f}%"
                     for c in comparison.regressions) or "no regression"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10, help="A/A pairs (and slowed runs)")
    parser.add_argument("--trials", type=int, default=8, help="counted trials per run")
    parser.add_argument("--duration", type=float, default=1.0,
                        help="seconds per phase (0: --rows per phase)")
    parser.add_argument("--rows", type=int, default=2000, help="rows per phase (--duration 0)")
    parser.add_argument("--workers", type=int, default=2, help="workers (= pool size)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT,
                        help="compare's --threshold")
    parser.add_argument("--keep", type=Path, help="also write each run's results.json here "
                        "(pairNN-A.json ...), to try other methods on the same runs")
    args = parser.parse_args()
    report = Report("compare_false_alarm")
    size = f"{args.duration:g} s per phase" if args.duration else f"{args.rows} rows"
    report.line(f"# {STRATEGY}, {args.workers} workers and pool, {size}, 1 warm-up "
                f"and {args.trials} counted trials per run, {args.pairs} pairs, "
                f"--threshold {args.threshold:g}, on one embedded server")
    report.line(f"# method: {METHOD}")
    aa_worst: list[float | None] = []
    slow_worst: list[float | None] = []
    per_phase: dict[str, list[float | None]] = {phase: [] for phase in SLOWED}
    unjudged: set[str] = set()
    achieved: dict[str, list[float]] = {phase: [] for phase in SLOWED}
    plain_runs: list[dict[str, Any]] = []
    slowed_runs: list[dict[str, Any]] = []
    with EmbeddedServer(max_connections=100) as server:
        target = server.target
        admin = AdminSession(target)
        admin.call(lambda c: ensure_table(c, TABLE))
        # Calibration: the added share of an operation's time grows in proportion to the
        # loop steps per row (added = c * n). A first n from a plain run's throughput and
        # the server's cost per step; then CALIBRATION_ROUNDS slowed runs, each beside a
        # plain one, each giving an estimate of c per phase (its slowdown against the
        # plain runs' median); the pairs use the median of those estimates, so that one
        # noisy run does not set the slowdown (the first version corrected from single runs
        # and overshot: 25-29% instead of 20%).
        per_loop = seconds_per_loop(admin)
        plains = [one_run(target, args)]
        target_added = TARGET_DROP / (1 - TARGET_DROP)
        base = {phase: throughput(plains[0], phase) for phase in SLOWED}
        loops = loops_for(base, args.workers, {}, per_loop)
        estimates: dict[str, list[float]] = {phase: [] for phase in SLOWED}
        for round_ in range(CALIBRATION_ROUNDS):
            install_slowdown(admin, loops)
            try:
                slowed = one_run(target, args)
            finally:
                remove_slowdown(admin)
            plains.append(one_run(target, args))
            base = {phase: statistics.median(throughput(r, phase) for r in plains)
                    for phase in SLOWED}
            for phase in SLOWED:
                drop = min(0.9, max(0.01, 1 - throughput(slowed, phase) / base[phase]))
                estimates[phase].append((1 / (1 - drop) - 1) / loops[phase])
            loops = {phase: max(1, round(target_added / statistics.median(estimates[phase])))
                     for phase in SLOWED}
            report.line(f"# calibration {round_ + 1}: n = " + ", ".join(
                f"{n} ({phase})" for phase, n in loops.items()))
        on = ", ".join(f"{n} ({phase})" for phase, n in loops.items())
        report.line(f"# trigger: count(*) over generate_series(1, n) on every row, n = {on}; "
                    f"one step costs the server {per_loop * 1e9:.0f} ns")
        for pair in range(args.pairs):
            runs: dict[str, dict[str, Any]] = {}
            order = ("A", "A'", "S")[pair % 3:] + ("A", "A'", "S")[:pair % 3]
            for kind in order:
                if kind == "S":
                    install_slowdown(admin, loops)
                try:
                    runs[kind] = one_run(target, args)
                finally:
                    if kind == "S":
                        remove_slowdown(admin)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for kind, data in runs.items():
                    name = f"pair{pair + 1:02d}-{kind.replace(chr(39), 'p')}.json"
                    (args.keep / name).write_text(json.dumps(data))
            plain_runs += [runs["A"], runs["A'"]]
            slowed_runs.append(runs["S"])
            aa = compare_runs(runs["A"], runs["A'"], base_name="A", new_name="A'",
                              threshold_pct=args.threshold)
            slow = compare_runs(runs["A'"], runs["S"], base_name="A'", new_name="S",
                                threshold_pct=args.threshold)
            aa_worst.append(worst(aa))
            slow_worst.append(worst(slow, phases=SLOWED, metrics=("throughput",)))
            for phase in SLOWED:
                per_phase[phase].append(worst(slow, phases=(phase,), metrics=("throughput",)))
            unjudged.update(w for w in aa.warnings + slow.warnings
                            if w.startswith("no change can be judged"))
            drops = {phase: 1 - throughput(runs["S"], phase) / throughput(runs["A'"], phase)
                     for phase in SLOWED}
            for phase, drop in drops.items():
                achieved[phase].append(drop)
            report.line(f"pair {pair + 1} ({' '.join(order)}): A/A {verdict(aa)}; "
                        f"slowed by {', '.join(f'{d:.0%} ({p})' for p, d in drops.items())}: "
                        f"{verdict(slow)}")
        admin.close()
    report.line("slowdown achieved (median over pairs): " + ", ".join(
        f"{phase} {statistics.median(v):.1%}" for phase, v in achieved.items()))
    report.line("the gate at other --threshold values (same runs): threshold, A/A pairs "
                "failed, slowed runs caught")
    for threshold in sorted({2.5, 5.0, 7.5, 10.0, 12.5, 15.0, args.threshold}):
        alarms = sum(fails(w, threshold) for w in aa_worst)
        caught = sum(fails(w, threshold) for w in slow_worst)
        report.line(f"  {threshold:>5g}%: {alarms}/{args.pairs} false alarms, "
                    f"{caught}/{args.pairs} caught")
    false_alarms = sum(fails(w, args.threshold) for w in aa_worst)
    detections = sum(fails(w, args.threshold) for w in slow_worst)
    report.line(f"false alarms: {false_alarms} of {args.pairs} A/A pairs failed the gate at "
                f"--threshold {args.threshold:g} ({false_alarms / args.pairs:.0%}; target at "
                "most 5%)")
    report.line(f"detection: {detections} of {args.pairs} slowed runs failed the gate on a "
                f"slowed phase's throughput ({detections / args.pairs:.0%}; target: all); by "
                "phase: " + ", ".join(f"{phase} {sum(fails(w, args.threshold) for w in v)}/"
                                      f"{args.pairs}" for phase, v in per_phase.items()))
    every_aa = [worst(compare_runs(a, b, base_name="A", new_name="B",
                                   threshold_pct=args.threshold))
                for i, a in enumerate(plain_runs) for b in plain_runs[i + 1:]]
    every_slow = [worst(compare_runs(a, s, base_name="A", new_name="S",
                                     threshold_pct=args.threshold),
                        phases=SLOWED, metrics=("throughput",))
                  for a in plain_runs for s in slowed_runs]
    aa_failed = sum(fails(w, args.threshold) for w in every_aa)
    slow_caught = sum(fails(w, args.threshold) for w in every_slow)
    report.line(f"every pairing of two unslowed runs: {aa_failed} of {len(every_aa)} failed the "
                f"gate; every unslowed run against every slowed run: {slow_caught} of "
                f"{len(every_slow)} caught")
    report.line("run-to-run drift of the unslowed runs' median throughput (max - min over "
                f"{len(plain_runs)} runs, / median): " + ", ".join(
                    f"{phase} {spread_pct([throughput(r, phase) for r in plain_runs]):.0f}%"
                    for phase in ("create", "read", "update", "delete")))
    for warning in sorted(unjudged):
        report.line(f"warning: {warning}")
    report.save()


if __name__ == "__main__":
    main()
