"""Latency histograms and operation counters.

Each worker records into its own :class:`OperationRecorder` (no locks on the hot
path); recorders are merged exactly after a phase, because HDR histograms add
bucket by bucket. Percentiles always come from the merged histogram, never from
per-operation lists, so memory stays constant whatever the run length.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

# 1 µs .. 1 hour at 3 significant digits: 0.1% relative error on every percentile.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 95.0, 99.0)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def decode_histogram(encoded: str) -> HdrHistogram:
    """Inverse of ``encode_histogram``; raw figures in results.json decode with this."""
    return HdrHistogram.decode(encoded)


def encode_histogram(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


def merge_histograms(hists: list[HdrHistogram]) -> HdrHistogram:
    merged = new_histogram()
    for h in hists:
        merged.add(h)
    return merged


def error_class(exc: BaseException) -> str:
    """A stable name for an error: exception type plus SQLSTATE when the driver has one."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return f"{type(exc).__name__}[{code}]" if code else type(exc).__name__


class MissingRow(Exception):
    """A read/update/delete found no row where the run's own insert had put one."""


class OperationRecorder:
    """One worker's timings (nanosecond clock, recorded in µs) and errors for one phase.

    ``latency`` is the whole operation (acquire + statement + release);
    ``acquire`` is the wait for a pooled connection, or the connect for ``none``;
    ``execute`` is the statement round trip(s), including the commit if any.
    """

    __slots__ = ("acquire", "errors", "execute", "latency", "ok")

    def __init__(self) -> None:
        self.latency = new_histogram()
        self.acquire = new_histogram()
        self.execute = new_histogram()
        self.errors: Counter[str] = Counter()
        self.ok = 0

    def record(self, t0: int, t1: int, t2: int, t3: int) -> None:
        self.ok += 1
        self.latency.record_value(max((t3 - t0) // 1000, LOWEST_US))
        self.acquire.record_value(max((t1 - t0) // 1000, LOWEST_US))
        self.execute.record_value(max((t2 - t1) // 1000, LOWEST_US))

    def fail(self, exc: BaseException) -> None:
        self.errors[error_class(exc)] += 1


@dataclass(frozen=True)
class PhaseMeasurement:
    """What one phase of one trial measured, all workers merged."""

    phase: str
    trial: int
    warmup: bool
    elapsed_s: float
    ops: int
    errors: dict[str, int]
    latency: HdrHistogram
    acquire: HdrHistogram
    execute: HdrHistogram

    @classmethod
    def merge(cls, *, phase: str, trial: int, warmup: bool, elapsed_s: float,
              recorders: list[OperationRecorder]) -> PhaseMeasurement:
        errors: Counter[str] = Counter()
        for r in recorders:
            errors.update(r.errors)
        return cls(phase=phase, trial=trial, warmup=warmup, elapsed_s=elapsed_s,
                   ops=sum(r.ok for r in recorders), errors=dict(sorted(errors.items())),
                   latency=merge_histograms([r.latency for r in recorders]),
                   acquire=merge_histograms([r.acquire for r in recorders]),
                   execute=merge_histograms([r.execute for r in recorders]))


@dataclass(frozen=True)
class LatencySummary:
    """Figures of one histogram, in microseconds (HDR: 0.1% value precision)."""

    count: int
    mean_us: float
    p50_us: int
    p95_us: int
    p99_us: int
    max_us: int

    @classmethod
    def of(cls, hist: HdrHistogram) -> LatencySummary:
        if hist.get_total_count() == 0:
            return cls(0, 0.0, 0, 0, 0, 0)
        p = hist.get_percentile_to_value_dict(list(PERCENTILES))
        return cls(count=int(hist.get_total_count()), mean_us=round(hist.get_mean_value(), 1),
                   p50_us=int(p[50.0]), p95_us=int(p[95.0]), p99_us=int(p[99.0]),
                   max_us=int(hist.get_max_value()))


def median(values: list[float]) -> float:
    """Median (mean of the middle two for an even count)."""
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def now_ns() -> int:
    return time.perf_counter_ns()
