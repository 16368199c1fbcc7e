"""How the gate does with the run as the unit (several runs per side, ``compare_sides``),
on the runs ``bench/compare_false_alarm.py --keep DIR`` made: its A and A' runs are
unslowed, its S runs slowed by the pg_sleep trigger (create, update, delete).

For k = 2..5 runs per side, ``DRAWS`` random draws (fixed seed) of two disjoint groups
of k unslowed runs (an A/A comparison: a regression is a false alarm) and of k unslowed
against k slowed runs (a throughput regression in a slowed phase is a detection). Draws
reuse runs, so they are not independent: the rates describe these runs, and the runs'
own pairs (compare_false_alarm.txt) stay the primary figures.

Run: python bench/compare_runs_as_unit.py DIR [--threshold 10]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from _common import Report

from poolbench.analysis.compare import (
    DEFAULT_THRESHOLD_PCT,
    METHOD_RUNS,
    RunComparison,
    compare_sides,
    load_results,
)

SLOWED = ("create", "update", "delete")
DRAWS = 200
SEED = 0


def caught(comparison: RunComparison) -> bool:
    return any(c.metric == "throughput" and c.phase in SLOWED for c in comparison.regressions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="compare_false_alarm.py's --keep folder")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT)
    args = parser.parse_args()
    files = sorted(args.runs.glob("pair*.json"))
    plain = [load_results(f) for f in files if not f.stem.endswith("-S")]
    slowed = [load_results(f) for f in files if f.stem.endswith("-S")]
    report = Report("compare_runs_as_unit")
    report.line(f"# runs: {len(plain)} unslowed and {len(slowed)} slowed, from "
                f"bench/compare_false_alarm.py --keep (first run's date: "
                f"{plain[0]['started_at'] if plain and 'started_at' in plain[0] else '?'})")
    report.line(f"# method: {METHOD_RUNS}; --threshold {args.threshold:g}; {DRAWS} draws "
                f"per k, seed {SEED}")
    rng = random.Random(SEED)
    for k in range(2, min(5, len(plain) // 2, len(slowed)) + 1):
        alarms = detections = 0
        for _ in range(DRAWS):
            group = rng.sample(plain, 2 * k)
            alarms += bool(compare_sides(group[:k], group[k:], base_name="A", new_name="A'",
                                         threshold_pct=args.threshold).regressions)
            detections += caught(compare_sides(rng.sample(plain, k), rng.sample(slowed, k),
                                               base_name="A", new_name="S",
                                               threshold_pct=args.threshold))
        report.line(f"{k} runs per side: A/A called a regression in {alarms}/{DRAWS} "
                    f"({alarms / DRAWS:.0%}; target at most 5%); slowed runs caught in "
                    f"{detections}/{DRAWS} ({detections / DRAWS:.0%}; target: all)")
    report.save()


if __name__ == "__main__":
    main()
