"""``results.csv``: one flat row per strategy, phase and trial (warm-ups flagged)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from poolbench.report import atomic_write
from poolbench.results import RunResults

COLUMNS = ("strategy", "phase", "trial", "warmup", "elapsed_s", "ops", "errors",
           "throughput_ops_s", "latency_mean_us", "latency_p50_us", "latency_p95_us",
           "latency_p99_us", "latency_max_us")


class CsvExporter:
    filename = "results.csv"

    def write(self, results: RunResults, path: Path) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for s in results.strategies:
            for p in s.phases:
                for t in p.trials:
                    lat = t.latency
                    writer.writerow((s.name, p.phase, t.trial, int(t.warmup),
                                     f"{t.elapsed_s:.6f}", t.ops, sum(t.errors.values()),
                                     f"{t.throughput_ops_s:.1f}", lat.mean_us, lat.p50_us,
                                     lat.p95_us, lat.p99_us, lat.max_us))
        atomic_write(path, buf.getvalue().encode())
