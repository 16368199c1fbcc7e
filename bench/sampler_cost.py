"""What the activity sampler costs: the same pooled read workload with the sampler every
100 ms and with it off, alternating, best of 3 each. Target: within 1%.
Run: python bench/sampler_cost.py [seconds per phase, default 3]
"""

from __future__ import annotations

import sys

from _common import Report

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer

ROUNDS = 3


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    report = Report("sampler_cost")
    with EmbeddedServer(max_connections=100) as server:
        figures: dict[float, list[float]] = {0.1: [], 0.0: []}
        for _ in range(ROUNDS):
            for interval in figures:
                results = run(RunConfig(target=server.target, strategies=("psycopg:pool",),
                                        rows=1, workers=8, pool_min=8, pool_max=8, warmup=0,
                                        trials=1, duration_s=seconds, out_dir=None,
                                        sample_interval_s=interval))
                figures[interval].append(results.strategies[0].phase("read").throughput_ops_s)
    on, off = max(figures[0.1]), max(figures[0.0])
    report.line(f"psycopg:pool reads, 8 workers, {seconds:g} s per phase, best of {ROUNDS}: "
                f"sampler every 100 ms {on:,.0f} ops/s, off {off:,.0f} ops/s = "
                f"{on / off:.3f}x (target within 1%)")
    report.save()


if __name__ == "__main__":
    main()
