"""What the activity sampler costs: the same pooled read workload with the sampler every
100 ms and with it off, alternating, best of 5 each. Target: within 1%.
Run: python bench/sampler_cost.py [seconds per phase, default 3]
"""

from __future__ import annotations

import sys

from _common import Report

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer

ROUNDS = 5


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    report = Report("sampler_cost")
    with EmbeddedServer(max_connections=100) as server:
        figures: dict[float, list[float]] = {0.1: [], 0.0: []}
        shares = []
        for _ in range(ROUNDS):
            for interval in figures:
                results = run(RunConfig(target=server.target, strategies=("psycopg:pool",),
                                        rows=1, workers=8, pool_min=8, pool_max=8, warmup=0,
                                        trials=1, duration_s=seconds, out_dir=None,
                                        sample_interval_s=interval))
                s = results.strategies[0]
                figures[interval].append(s.phase("read").throughput_ops_s)
                if s.activity is not None and s.activity.client_cpu_s:
                    shares.append(s.activity.sampler_cpu_s / s.activity.client_cpu_s)
    on, off = max(figures[0.1]), max(figures[0.0])
    report.line(f"psycopg:pool reads, 8 workers, {seconds:g} s per phase, best of {ROUNDS}: "
                f"sampler every 100 ms {on:,.0f} ops/s, off {off:,.0f} ops/s = "
                f"{on / off:.3f}x (target within 1%; this machine's run-to-run noise is larger)")
    report.line("each round, on / off ops/s: " + ", ".join(
        f"{a:,.0f} / {b:,.0f}" for a, b in zip(figures[0.1], figures[0.0], strict=True)))
    report.line(f"the sampler's own CPU: {max(shares):.2%} of the client process's CPU at most "
                f"over {len(shares)} runs (measured with thread_time in its thread)")
    report.save()


if __name__ == "__main__":
    main()
