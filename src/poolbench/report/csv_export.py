"""``results.csv``: one flat row per strategy, phase and trial (warm-ups flagged); with
scripts, ``statements.csv`` beside it: one row per strategy, script phase and command
(``pgbench -r``'s figures, over the counted trials)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from poolbench.report import atomic_write
from poolbench.results import RunResults

COLUMNS = ("strategy", "phase", "trial", "warmup", "elapsed_s", "ops", "errors",
           "throughput_ops_s", "latency_mean_us", "latency_p50_us", "latency_p95_us",
           "latency_p99_us", "latency_max_us")
# mean_ms empty for a \set (counted, not timed: null in results.json)
STATEMENT_COLUMNS = ("strategy", "phase", "line", "command", "count", "failures", "mean_ms")


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


class StatementsCsvExporter:
    """Written only for a run whose phases have statements (a run of scripts)."""

    filename = "statements.csv"

    def applies(self, results: RunResults) -> bool:
        return any(p.statements for s in results.strategies for p in s.phases)

    def write(self, results: RunResults, path: Path) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(STATEMENT_COLUMNS)
        for s in results.strategies:
            for p in s.phases:
                for f in p.statements:  # mean_ms as results.json has it (repr: exact)
                    writer.writerow((s.name, p.phase, f.line, f.command, f.count, f.failures,
                                     f.mean_ms))
        atomic_write(path, buf.getvalue().encode())
