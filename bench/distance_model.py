"""The distance model (analysis/distance.py) against runs through the --rtt relay (issue 19 §3).

A run at loopback is projected to the round trip the relay's own check measured at each
asked distance, and compared with a run through the relay: each strategy's operation, and
a new connection without a pool. Target: within 15%. One worker, so that the connects' CPU
is not shared differently at the two distances. A timing claim, so a bench and not a test:
on a loaded 2-core machine the relay itself adds jitter (see docs/network.md).

Run: python bench/distance_model.py [--rtt 1,5] [--rows 200]
"""

from __future__ import annotations

import argparse

from _common import Report

from poolbench import RunConfig, run
from poolbench.analysis.distance import profile_of, project_run
from poolbench.db.server import EmbeddedServer

STRATEGIES = ("psycopg:none", "psycopg:pool", "asyncpg:pool")
TOLERANCE = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="1,5", help="asked RTTs in ms, comma-separated")
    parser.add_argument("--rows", type=int, default=200, help="rows per phase")
    args = parser.parse_args()
    asked = [float(x) for x in args.rtt.split(",")]
    report = Report("distance_model")
    report.line(f"# {', '.join(STRATEGIES)}, 1 worker, {args.rows} rows per phase, one run at "
                f"loopback projected to each relay run's measured RTT; target within "
                f"{TOLERANCE:.0%}")
    within = total = 0
    with EmbeddedServer() as server:
        settings = dict(target=server.target, strategies=STRATEGIES, rows=args.rows,
                        workers=1, pool_min=1, pool_max=1, warmup=1, trials=1,
                        out_dir=None, sample_interval_s=0)
        here = run(RunConfig(**settings))
        for rtt_asked in asked:
            far = run(RunConfig(**settings, rtt_ms=rtt_asked))
            assert far.rtt is not None
            rtt = far.rtt.measured_ms - far.rtt.base_ms
            report.line(f"--rtt {rtt_asked:g}: the relay's check measured {far.rtt.measured_ms:.3f}"
                        f" ms (base {far.rtt.base_ms:.3f} ms): projecting to {rtt:.3f} ms")
            projected = {d.strategy: d for d in project_run(
                here, rtts_ms=(rtt,), release_round_trips={"asyncpg:pool": 1})}
            for s in far.strategies:
                measured = profile_of(s)
                model = projected[s.name]
                pairs = [("operation", model.operation_ms, measured.latency_ms)]
                if not s.pooled and model.connect_ms is not None:
                    pairs.append(("connect", model.connect_ms, measured.acquire_ms))
                for what, m, got in pairs:
                    ratio = m / got if got else float("nan")
                    ok = abs(ratio - 1) <= TOLERANCE
                    within += ok
                    total += 1
                    report.line(f"  {s.name:<14} {what:<9} model {m:7.3f} ms, measured "
                                f"{got:7.3f} ms = {ratio:.2f}x {'ok' if ok else 'OUTSIDE'}")
    report.line(f"within {TOLERANCE:.0%}: {within} of {total}")
    report.save()


if __name__ == "__main__":
    main()
