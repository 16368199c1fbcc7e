"""``results.csv``: one flat row per strategy, phase and trial (warm-ups flagged); with
scripts, ``statements.csv`` beside it: one row per strategy, script phase and command
(``pgbench -r``'s figures, over the counted trials)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
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
        _write(path, COLUMNS, (
            (s.name, p.phase, t.trial, int(t.warmup), f"{t.elapsed_s:.6f}", t.ops,
             sum(t.errors.values()), f"{t.throughput_ops_s:.1f}", t.latency.mean_us,
             t.latency.p50_us, t.latency.p95_us, t.latency.p99_us, t.latency.max_us)
            for s in results.strategies for p in s.phases for t in p.trials))


class StatementsCsvExporter:
    """Written only for a run whose phases have statements (a run of scripts)."""

    filename = "statements.csv"

    def applies(self, results: RunResults) -> bool:
        return any(p.statements for s in results.strategies for p in s.phases)

    def write(self, results: RunResults, path: Path) -> None:
        # mean_ms as results.json has it (repr: exact)
        _write(path, STATEMENT_COLUMNS, (
            (s.name, p.phase, f.line, f.command, f.count, f.failures, f.mean_ms)
            for s in results.strategies for p in s.phases for f in p.statements))


def _write(path: Path, columns: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue().encode())
