"""What a new connection costs on the embedded server, slice by slice, and each driver's
connect() alone and at 8 threads (the figures docs/what-we-found.md quotes).
Run: python bench/connect_cost.py [samples, default 200]
"""

from __future__ import annotations

import sys

from _common import Report

from poolbench.api import measure_connect_cost
from poolbench.report.console import SLICE_NAMES, UNACCOUNTED_NAME


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    report = Report("connect_cost")
    cost = measure_connect_cost(samples=samples, concurrency=(1, 8))
    report.line(f"protocol probe, {samples} connections to the embedded server (TCP, SCRAM):")
    if cost.total is None:
        report.line(f"  not measured: {cost.not_measured}")
    else:
        for name, s in cost.slices.items():
            report.line(f"  {SLICE_NAMES[name]:<62} p50 {s.p50_us / 1000:6.2f} ms, "
                        f"mean {s.mean_us / 1000:6.2f} ms")
        if cost.unaccounted is not None:
            report.line(f"  {UNACCOUNTED_NAME:<62} p50 {cost.unaccounted.p50_us / 1000:6.2f} "
                        f"ms, mean {cost.unaccounted.mean_us / 1000:6.2f} ms")
        report.line(f"  {'total (wall clock around each connection)':<62} p50 "
                    f"{cost.total.p50_us / 1000:6.2f} ms, mean {cost.total.mean_us / 1000:6.2f} "
                    f"ms (slices add up to {cost.parts_sum_us / 1000:.2f} ms)")
    for d in cost.drivers:
        if d.latency is None:
            report.line(f"  {d.driver:<9} connect()+close() at {d.concurrency} thread(s): not "
                        f"measured: {d.not_measured}")
            continue
        report.line(f"  {d.driver:<9} connect()+close() at {d.concurrency} thread(s): p50 "
                    f"{d.latency.p50_us / 1000:6.2f} ms, p99 {d.latency.p99_us / 1000:6.2f} ms")
    report.save()


if __name__ == "__main__":
    main()
