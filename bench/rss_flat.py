"""Does poolbench's memory stay flat over a long run? One 10-minute mixed phase of
psycopg:pool; the sampler's per-second RSS of the client, first minute against last.
Target: flat (growth under 5 MB from minute 1 to minute 10).
Run: python bench/rss_flat.py [seconds, default 600]
"""

from __future__ import annotations

import statistics
import sys

from _common import Report

from poolbench import RunConfig, run

MIX = (("read", 80), ("update", 10), ("create", 5), ("delete", 5))


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0
    report = Report("rss_flat")
    results = run(RunConfig(strategies=("psycopg:pool",), rows=1000, workers=8, pool_min=8,
                            pool_max=8, warmup=0, trials=1, duration_s=seconds, mix=MIX,
                            out_dir=None))
    s = results.strategies[0]
    timeline = s.activity.timeline if s.activity else ()
    minute = [t.client_rss_mb for t in timeline[5:65] if t.client_rss_mb]
    last = [t.client_rss_mb for t in timeline[-60:] if t.client_rss_mb]
    first_mb, last_mb = statistics.median(minute), statistics.median(last)
    report.line(f"psycopg:pool, mix {dict(MIX)}, 8 workers, {seconds:.0f} s, "
                f"{s.phase('mix').ops:,} operations")
    report.line(f"client RSS, median of the first minute {first_mb:.1f} MB, of the last "
                f"{last_mb:.1f} MB: growth {last_mb - first_mb:+.1f} MB (target < 5 MB)")
    report.save()


if __name__ == "__main__":
    main()
