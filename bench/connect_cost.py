"""What a new connection costs on the embedded server, slice by slice, and each driver's
connect() alone and at 8 threads (the figures docs/what-we-found.md quotes).
Run: python bench/connect_cost.py [samples, default 200]
"""

from __future__ import annotations

import sys

from _common import Report

from poolbench.api import measure_connect_cost
from poolbench.report.console import SLICE_NAMES


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    report = Report("connect_cost")
    cost = measure_connect_cost(samples=samples, concurrency=(1, 8))
    report.line(f"protocol probe, {samples} connections to the embedded server (TCP, SCRAM):")
    for name, s in cost.slices.items():
        report.line(f"  {SLICE_NAMES[name]:<62} p50 {s.p50_us / 1000:6.2f} ms, "
                    f"mean {s.mean_us / 1000:6.2f} ms")
    report.line(f"  {'total':<62} p50 {cost.total.p50_us / 1000:6.2f} ms, mean "
                f"{cost.total.mean_us / 1000:6.2f} ms (slices add up to "
                f"{cost.parts_sum_us / 1000:.2f} ms)")
    for d in cost.drivers:
        report.line(f"  {d.driver:<9} connect()+close() at {d.concurrency} thread(s): p50 "
                    f"{d.latency.p50_us / 1000:6.2f} ms, p99 {d.latency.p99_us / 1000:6.2f} ms")
    report.save()


if __name__ == "__main__":
    main()
