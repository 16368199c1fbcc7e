"""Latency histograms and operation counters.

Each worker records into its own :class:`OperationRecorder` (no locks on the hot
path); recorders are merged exactly after a phase, because HDR histograms add
bucket by bucket. Percentiles always come from the merged histogram, never from
per-operation lists, so memory stays constant whatever the run length.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from hdrh.histogram import HdrHistogram

# 1 µs .. 1 hour at 3 significant digits: 0.1% relative error on every percentile.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


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


# The histograms every recorder keeps, and every phase result carries.
HISTOGRAMS = ("latency", "acquire", "execute", "scheduled", "failed")


class MissingRow(Exception):
    """A read/update/delete found no row where the run's own insert had put one."""


# HDR's bucket layout for 1 µs lowest and 3 significant digits: values below 2048
# count one by one; above, each power of two holds 1024 sub-buckets.
_SUB_BUCKET_BITS = 11
_HALF = 1 << (_SUB_BUCKET_BITS - 1)


# Values below this many µs are HDR buckets of their own: ``bucket_index(us) == us``.
EXACT_US = 1 << _SUB_BUCKET_BITS


def bucket_index(us: int) -> int:
    """HDR's counts index of a value (µs): the bucket it shares with its HDR neighbours."""
    shift = us.bit_length() - _SUB_BUCKET_BITS
    return us if shift <= 0 else (shift << (_SUB_BUCKET_BITS - 1)) + (us >> shift)


def bucket_value(index: int) -> int:
    """The lowest value of a bucket: recording it lands in the same HDR bucket."""
    if index < 2 * _HALF:
        return index
    shift = (index >> (_SUB_BUCKET_BITS - 1)) - 1
    return (index - (shift << (_SUB_BUCKET_BITS - 1))) << shift


class BucketCounts(dict[int, int]):
    """Counts per HDR bucket, for the hot path.

    ``HdrHistogram.record_value`` costs ~1.6 µs in Python; finding the bucket
    with two shifts and bumping a dict entry costs a tenth of that. The counts
    become an ``HdrHistogram`` once per phase (:meth:`to_hdr`), bucket for bucket
    the histogram that recording each value would have built. Memory is one entry
    per distinct bucket (a few hundred), whatever the number of operations.
    """

    __slots__ = ()

    def __missing__(self, key: int) -> int:
        return 0

    def add(self, other: dict[int, int] | array[int]) -> None:
        for index, count in pairs(other):
            self[index] += count

    def to_hdr(self) -> HdrHistogram:
        hist = new_histogram()
        for index, count in self.items():
            hist.record_value(min(max(bucket_value(index), LOWEST_US), HIGHEST_US), count)
        return hist


def pack(counts: dict[int, int]) -> array[int]:
    """A finished second's buckets, compact (index, count, index, count, ...: 4 bytes each,
    where a dict spends about a hundred per bucket): a long run keeps one per second."""
    return array("I", itertools.chain.from_iterable(counts.items()))


def pairs(counts: dict[int, int] | array[int]) -> Iterable[tuple[int, int]]:
    """(bucket, count) pairs of counts, packed or not."""
    return zip(counts[::2], counts[1::2]) if isinstance(counts, array) else counts.items()


# Per-second latency buckets are coarse: 8 per power of two (a value within 9%), so a second
# holds a few dozen buckets and a long run's series stays small; the phase's own histograms
# keep HDR's 0.1%.
SECOND_BITS = 4


def second_index(us: int) -> int:
    """The per-second bucket of a value in µs: exact below 16 µs, then 8 per power of two."""
    bits = us.bit_length()
    return us if bits <= SECOND_BITS else ((bits - SECOND_BITS) << (SECOND_BITS - 1)) + (
        us >> (bits - SECOND_BITS))


def second_value(index: int) -> int:
    """The lowest value (µs) of a per-second bucket."""
    if index < 1 << SECOND_BITS:
        return index
    shift = (index >> (SECOND_BITS - 1)) - 1
    return (index - (shift << (SECOND_BITS - 1))) << shift


# The highest HDR bucket a recorded value can land in (values are at most an hour): the
# fixed size of a sink's totals.
MAX_BUCKET = bucket_index(HIGHEST_US)


class PhaseSink:
    """What the workers of one phase (and kind) in this process have recorded, handed on by
    each worker as it counts (:class:`OperationRecorder`), under one lock: the per-second
    buckets, and the totals of each histogram. The totals are fixed arrays (a slot per HDR
    bucket up to an hour, allocated the first time a histogram has counts), so a worker
    keeps no counts of its own and a long run's memory does not grow with the buckets its
    tail discovers."""

    # Seconds this far behind the latest one handed on are packed; a worker that counts
    # later, handing on earlier seconds, unpacks each (and it is packed again).
    OPEN_SECONDS = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[int, BucketCounts | array[int]] = {}
        self._open: set[int] = set()  # the seconds still held as dicts
        self.totals: dict[str, np.ndarray] = {}  # int64, a slot per HDR bucket
        self.waits: dict[int, int] = {}  # ns spent acquiring, per second
        self.tenths: dict[int, array[int]] = {}  # operations per 0.1 s, 10 slots per second

    def flush(self, second: int, counts: BucketCounts,
              totals: dict[str, BucketCounts], wait_ns: int = 0,
              tenths: list[int] | None = None) -> None:
        with self._lock:
            if tenths is not None:
                add_tenths(self.tenths, second, tenths)
            if wait_ns:
                self.waits[second] = self.waits.get(second, 0) + wait_ns
            if counts:
                merged = self._seconds.get(second)
                if merged is None:
                    self._seconds[second] = counts
                else:
                    if second not in self._open:
                        merged = self._seconds[second] = BucketCounts(pairs(merged))
                    merged.add(counts)
                self._open.add(second)
                for done in [s for s in self._open if s < second - self.OPEN_SECONDS]:
                    self._seconds[done] = pack(self._seconds[done])
                    self._open.discard(done)
            for kind, found in totals.items():
                slots = self._totals(kind)
                for index, n in found.items():
                    slots[min(index, MAX_BUCKET)] += n

    def add(self, kind: str, indexes: np.ndarray) -> None:
        """Count one operation in each of ``indexes`` (HDR buckets) of one histogram."""
        counted = np.bincount(np.minimum(indexes, MAX_BUCKET), minlength=MAX_BUCKET + 1)
        with self._lock:
            self._totals(kind)[:] += counted

    def _totals(self, kind: str) -> np.ndarray:
        """One histogram's slots, made the first time it has counts."""
        slots = self.totals.get(kind)
        if slots is None:
            slots = self.totals[kind] = np.zeros(MAX_BUCKET + 1, np.int64)
        return slots

    @property
    def seconds(self) -> dict[int, array[int]]:
        """Every second so far, packed and in order (once the workers are done)."""
        return {s: c if s not in self._open else pack(c)
                for s, c in sorted(self._seconds.items())}

    def counts(self, kind: str) -> BucketCounts:
        """One histogram's totals as bucket counts (they travel to a parent process)."""
        slots = self.totals.get(kind)
        if slots is None:
            return BucketCounts()
        found = np.flatnonzero(slots)
        return BucketCounts(zip(found.tolist(), slots[found].tolist()))


# Operations per 0.1 s of a phase: the series steady-state detection judges (MSER-5 needs
# 100 observations: a per-second series of a 10-s trial has 10). Counted as 10 slots per
# second beside the per-second buckets, from the clock reading the operation already made.
TENTHS = 10
TENTH_NS = 1_000_000_000 // TENTHS


def add_tenths(into: dict[int, array[int]], second: int, tenths: list[int] | array[int]
               ) -> None:
    """Add one second's 10 slots to a per-second dict of them."""
    slots = into.get(second)
    if slots is None:
        into[second] = array("q", tenths)
    else:
        for i, n in enumerate(tenths):
            slots[i] += n


def merge_tenths(parts: Iterable[dict[int, array[int]]]) -> tuple[int, ...]:
    """Several recorders' (or kinds') per-second slots as one series of operations per 0.1 s
    from the phase's start (an operation ending before it counts in the first), to the last
    interval with one."""
    seconds: dict[int, array[int]] = {}
    for part in parts:
        for second, tenths in part.items():
            add_tenths(seconds, max(second, 0), tenths)
    if not seconds:
        return ()
    series = [0] * ((max(seconds) + 1) * TENTHS)
    for second, tenths in seconds.items():
        series[second * TENTHS:(second + 1) * TENTHS] = [
            a + b for a, b in zip(series[second * TENTHS:(second + 1) * TENTHS], tenths)]
    while series and not series[-1]:
        series.pop()
    return tuple(series)


def fine_counts(coarse: dict[int, int] | array[int]) -> BucketCounts:
    """Per-second buckets as ordinary ones (each at its bucket's lowest value)."""
    counts = BucketCounts()
    for index, n in pairs(coarse):
        counts[bucket_index(max(second_value(index), 1))] += n
    return counts


class StatementCounters:
    """Per command of one script (pgbench ``-r``), one worker's or many merged: the
    nanoseconds its successful executions took (a ``\\sleep``: the time slept), how many
    succeeded and failed, and how many runs of the script started (every ``\\set`` of a
    run is evaluated once per run, before its connection is taken). Preallocated lists,
    one slot per command (``Script.commands``'s index): the hot path only adds to a slot.
    ``commands``: each command's (line, text as pgbench -r shows it, timed?)."""

    __slots__ = ("commands", "count", "failed", "ns", "runs")

    def __init__(self, commands: tuple[tuple[int, str, bool], ...]) -> None:
        self.commands = commands
        self.ns = [0] * len(commands)
        self.count = [0] * len(commands)
        self.failed = [0] * len(commands)
        self.runs = 0

    def add(self, other: StatementCounters) -> None:
        for mine, theirs in ((self.ns, other.ns), (self.count, other.count),
                             (self.failed, other.failed)):
            for i, n in enumerate(theirs):
                mine[i] += n
        self.runs += other.runs

    @classmethod
    def merged(cls, parts: Iterable[StatementCounters | None]) -> StatementCounters | None:
        """The sum of ``parts`` (None where none has any: not a script)."""
        found = [p for p in parts if p is not None]
        if not found:
            return None
        total = cls(found[0].commands)
        for part in found:
            total.add(part)
        return total


# A recorder keeps this many operations' clock readings as Python ints (four each: about
# 160 bytes) before packing them into an int64 array (32 bytes each); packed readings are
# counted, with numpy, once COUNT_OPERATIONS of them are kept (64 KB) and at the phase's end,
# after its clock has stopped. Packing takes the GIL throughout (it reads Python ints);
# counting's array operations let it go, and with many worker threads each hand-off of the
# GIL costs more than the arithmetic (bench/results/overhead.txt), so they come rarely. Not
# more rarely: each count's arrays, in every worker thread's malloc arena, stay in the
# process's RSS (over rss_flat's 10-minute run, counting 16,384 at a time grew 28.9 MB,
# 4,096 at a time 7.0 MB, against 2.5 MB counting each 1,024 inside the phase).
BATCH_OPERATIONS = 1024
COUNT_OPERATIONS = 2 * BATCH_OPERATIONS


def _log_indexes(us: np.ndarray, bits: int) -> np.ndarray:
    """Each value's index in buckets exact below ``2**bits``, then ``2**(bits - 1)`` per
    power of two (µs, int64; exact below 2**53): :func:`bucket_index` and
    :func:`second_index` over an array."""
    big = us >= 1 << bits
    if not big.any():
        return us
    out = us.copy()
    values = us[big]
    shift = np.frexp(values.astype(np.float64))[1].astype(np.int64) - bits
    out[big] = (shift << (bits - 1)) + (values >> shift)
    return out


def bucket_indexes(us: np.ndarray) -> np.ndarray:
    """:func:`bucket_index` of each value (µs, int64; exact below 2**53)."""
    return _log_indexes(us, _SUB_BUCKET_BITS)


def second_indexes(us: np.ndarray) -> np.ndarray:
    """:func:`second_index` of each value (µs, int64; exact below 2**53)."""
    return _log_indexes(us, SECOND_BITS)


def _us(ns: np.ndarray) -> np.ndarray:
    """Nanoseconds to whole µs, 0 counted as 1 (``ns // 1000 or 1``)."""
    us = ns // 1000
    us[us == 0] = 1
    return us


# Several counts keyed by one int64 each, so one np.unique counts them all: key = slot *
# base + value, for values within ±base / 2: _KEYS for the three histograms' µs buckets
# (an hour's is 23,000), _SECOND_KEYS for (second, per-second bucket) pairs (a
# non-negative duration's per-second bucket is below 500; the clock's seconds fit 2**53).
_KEYS = 1 << 41
_SECOND_KEYS = 1 << 10


# The histograms a batch counts together: HISTOGRAMS' first three, slots 0, 1, 2.
_HISTOGRAM_SLOTS = np.arange(3) * _KEYS


def _slots(keys: np.ndarray, base: int) -> Iterable[tuple[int, list[int], list[int]]]:
    """Each slot's (slot, values, counts) of keyed values (value order within a slot)."""
    keys, n = np.unique(keys, return_counts=True)
    slots = (keys + base // 2) // base
    values = (keys - slots * base).tolist()
    counts = n.tolist()
    found, starts = np.unique(slots, return_index=True)
    ends = [*starts[1:].tolist(), len(values)]
    for slot, start, end in zip(found.tolist(), starts.tolist(), ends):
        yield slot, values[start:end], counts[start:end]


def _add(into: BucketCounts, indexes: list[int], counts: list[int]) -> None:
    if into:
        for index, count in zip(indexes, counts):
            into[index] += count
    else:
        into.update(zip(indexes, counts))


class OperationRecorder:
    """One worker's timings (nanosecond clock, counted in µs buckets) and errors for one phase.

    Successful operations: ``latency`` is the whole operation (acquire +
    statement + release); ``acquire`` is the wait for a pooled connection, or
    the connect for ``none``; ``execute`` is the statement round trip(s).
    ``failed`` is the whole time of each *failed* operation, from asking for a
    connection to the failure (an acquire that timed out after 30 s counts
    30 s here). ``scheduled`` (open-loop ``--rate`` runs only) counts every
    operation, failed ones included, from the time it was due to its end, so a
    stalled pool cannot hide. ``held_too_long`` counts connections kept out of
    the pool longer than the leak threshold, whether the operation succeeded
    or not (HikariCP's leak detection).

    ``record`` only keeps the operation's clock readings (packed every
    :data:`BATCH_OPERATIONS`); they are counted (with numpy) once
    :data:`COUNT_OPERATIONS` are kept and by :meth:`flush` / :meth:`finish`, into the
    same buckets, seconds and tenths counting them one by one would give. Until then the
    counts, ``ok`` and the per-second series leave out the operations kept: read them
    after :meth:`finish`.
    """

    __slots__ = ("acquire", "current_second", "errors", "execute", "failed", "held_too_long",
                 "kind", "late", "latency", "leak_ns", "ok", "origin_ns", "packed",
                 "scheduled", "seconds", "sink", "statements", "tenths", "times",
                 "wait_by_second", "waits")

    def __init__(self, leak_threshold_s: float = float("inf"), kind: str = "",
                 sink: PhaseSink | None = None) -> None:
        self.kind = kind  # in a mix, the kind of operation this recorder counts
        # Where each batch's counts go: the phase's shared sink (memory per second is then
        # one merged dict per phase, not one per worker, and the totals are the sink's
        # fixed arrays); without one, this recorder keeps them.
        self.sink = sink
        self.times: list[int] = []  # t0, t1, t2, t3 of each operation not yet packed
        self.packed: list[np.ndarray] = []  # and of those packed, not yet counted
        self.late: list[int] = []  # and of those that were due: t3 - due
        # The second the last counted operation ended in (a failed acquire's wait counts there)
        self.current_second = 0
        self.latency = BucketCounts()
        self.acquire = BucketCounts()
        self.execute = BucketCounts()
        self.scheduled = BucketCounts()
        self.failed = BucketCounts()
        # Latency buckets per second of the phase (second 0 starts at origin_ns, the phase
        # clock's start, set by the executor once the phase starts): the per-second series.
        self.seconds: dict[int, BucketCounts | array[int]] = {}
        # Nanoseconds spent acquiring (waiting for a pooled connection, or connecting), per
        # second: a second's total divided by one second is the mean number of workers
        # acquiring in it (Little's law), the pool's waiters.
        self.waits: dict[int, int] = {}
        self.wait_by_second: dict[int, int] = {}  # failed acquires' waits not yet handed on
        # Operations per 0.1 s, 10 slots per second: the series MSER-5 judges
        # (measure/steady.py).
        self.tenths: dict[int, array[int]] = {}
        self.origin_ns = 0
        self.errors: Counter[str] = Counter()
        self.ok = 0
        self.held_too_long = 0
        self.leak_ns = leak_threshold_s * 1e9
        # A script's kind: its per-command counters, which the script runners add to
        self.statements: StatementCounters | None = None

    def record(self, t0: int, t1: int, t2: int, t3: int, scheduled: int | None = None) -> None:
        # The hot path: four ints kept, nothing counted (a list's extend: an array's, or
        # counting each operation, costs several times more; harness_ir.txt).
        times = self.times
        times += (t0, t1, t2, t3)
        if scheduled is not None:
            self.late.append(t3 - scheduled)
        if len(times) >= BATCH_OPERATIONS * 4:
            self.kept()

    def kept(self) -> None:
        """Pack the readings kept once a batch's worth is there, and count once
        COUNT_OPERATIONS are packed. The executor's unpaced loops append their readings to
        ``times`` themselves (a call of :meth:`record` costs more than its work) and call
        this at each progress step."""
        if len(self.times) >= BATCH_OPERATIONS * 4:
            self._pack()
            if len(self.packed) * BATCH_OPERATIONS >= COUNT_OPERATIONS:
                self.flush()

    def _pack(self) -> None:
        """The readings kept as ints, into one int64 array."""
        times = self.times
        self.packed.append(np.fromiter(times, np.int64, len(times)))
        times.clear()

    def flush(self) -> None:
        """Count the operations kept, and hand every count so far on to the sink (if there
        is one)."""
        per_second = self._count_batch() if self.times or self.packed else {}
        for second, wait in self.wait_by_second.items():
            counts, tenths, waited = per_second.get(second) or (BucketCounts(), None, 0)
            per_second[second] = counts, tenths, waited + wait
        self.wait_by_second = {}
        sink = self.sink
        if sink is not None:
            for second, (counts, tenths, wait) in per_second.items():
                sink.flush(second, counts, {}, wait, tenths)
            found = {kind: counts for kind in HISTOGRAMS if (counts := getattr(self, kind))}
            if found:
                sink.flush(self.current_second, BucketCounts(), found)
                for kind in found:
                    setattr(self, kind, BucketCounts())
            return
        for second, (counts, tenths, wait) in per_second.items():
            if counts:
                self.seconds.setdefault(second, BucketCounts()).add(counts)
            if tenths is not None:
                add_tenths(self.tenths, second, tenths)
            if wait:
                self.waits[second] = self.waits.get(second, 0) + wait

    def _count_batch(self) -> dict[int, tuple[BucketCounts, list[int] | None, int]]:
        """Count the operations kept into the histograms; return, per second they ended in,
        their latency buckets, operations per 0.1 s and ns acquiring."""
        times, late = self.times, self.late
        if times:
            self._pack()
        t = (self.packed[0] if len(self.packed) == 1 else np.concatenate(self.packed)
             ).reshape(-1, 4)
        self.packed = []
        self.ok += len(t)
        # latency, acquire and execute of each operation, keyed by histogram (slot 0, 1, 2)
        ns = t[:, (3, 1, 2)] - t[:, (0, 0, 1)]
        us = _us(ns)
        sink = self.sink
        if sink is not None:  # straight into the sink's slots, no bucket by bucket
            indexes = bucket_indexes(us)
            for slot in range(3):
                sink.add(HISTOGRAMS[slot], indexes[:, slot])
        else:
            for slot, indexes, counts in _slots(bucket_indexes(us) + _HISTOGRAM_SLOTS, _KEYS):
                _add(getattr(self, HISTOGRAMS[slot]), indexes, counts)
        if late:
            due = bucket_indexes(_us(np.fromiter(late, np.int64, len(late))))
            late.clear()
            if sink is not None:
                sink.add("scheduled", due)
            else:
                keys, n = np.unique(due, return_counts=True)
                _add(self.scheduled, keys.tolist(), n.tolist())
        if self.leak_ns < 1 << 63:  # no int64 is above it otherwise
            # int > float compares exactly in Python; an int > the float's floor does too
            self.held_too_long += int(np.count_nonzero(t[:, 3] - t[:, 1]
                                                       > math.floor(self.leak_ns)))
        tenth = (t[:, 3] - self.origin_ns) // TENTH_NS
        second = tenth // TENTHS
        self.current_second = int(second[-1])
        several = bool((second != second[0]).any())
        per_second: dict[int, tuple[BucketCounts, list[int] | None, int]] = {}
        for s, indexes, counts in _slots(second * _SECOND_KEYS + second_indexes(us[:, 0]),
                                         _SECOND_KEYS):
            per_second[s] = (BucketCounts(zip(indexes, counts)), [0] * TENTHS,
                             int(ns[second == s, 1].sum()) if several else int(ns[:, 1].sum()))
        keys, n = np.unique(tenth, return_counts=True)
        for key, count in zip(keys.tolist(), n.tolist()):
            s, i = divmod(key, TENTHS)
            per_second[s][1][i] = count  # type: ignore[index]
        return per_second

    def finish(self) -> None:
        """End of the phase: everything counted and handed on, the sink let go (it cannot
        travel)."""
        self.flush()
        self.sink = None

    def fail(self, exc: BaseException, stage: str, t0: int, t_end: int,
             scheduled: int | None = None, held_ns: int = 0) -> None:
        """Count a failed operation by the step that failed and the error's class, and
        record its time (from ``t0`` to ``t_end``) in ``failed`` and ``scheduled``."""
        self.errors[f"{stage}: {error_class(exc)}"] += 1
        self.failed[bucket_index((t_end - t0) // 1000 or 1)] += 1
        if stage == "acquire":  # all of its time was spent acquiring
            # in the second the last successful operation ended in, counted or not
            last = (self.times[-1] if self.times
                    else int(self.packed[-1][-1]) if self.packed else None)
            second = (self.current_second if last is None
                      else (last - self.origin_ns) // TENTH_NS // TENTHS)
            self.wait_by_second[second] = self.wait_by_second.get(second, 0) + t_end - t0
        if scheduled is not None:
            self.scheduled[bucket_index((t_end - scheduled) // 1000 or 1)] += 1
        if held_ns > self.leak_ns:
            self.held_too_long += 1


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
    scheduled: HdrHistogram
    failed: HdrHistogram
    held_too_long: int = 0
    seconds: dict[int, array[int]] | None = None  # per second of the phase, merged, packed
    waits: dict[int, int] | None = None  # ns spent acquiring per second, all workers
    statements: StatementCounters | None = None  # a script's per-command counters, merged
    # Successful operations per 0.1 s from the phase's start, all workers (they sum to ops)
    tenths: tuple[int, ...] = ()

    @classmethod
    def merge(cls, *, phase: str, trial: int, warmup: bool, elapsed_s: float,
              recorders: list[OperationRecorder]) -> PhaseMeasurement:
        errors: Counter[str] = Counter()
        merged = {kind: BucketCounts() for kind in HISTOGRAMS}
        for r in recorders:
            errors.update(r.errors)
            for kind, counts in merged.items():
                counts.add(getattr(r, kind))
        return cls(phase=phase, trial=trial, warmup=warmup, elapsed_s=elapsed_s,
                   ops=sum(r.ok for r in recorders), errors=dict(sorted(errors.items())),
                   held_too_long=sum(r.held_too_long for r in recorders),
                   seconds=merge_seconds(r.seconds for r in recorders),
                   waits=merge_waits(r.waits for r in recorders),
                   tenths=merge_tenths(r.tenths for r in recorders),
                   statements=StatementCounters.merged(r.statements for r in recorders),
                   **{kind: counts.to_hdr() for kind, counts in merged.items()})


def merge_seconds(parts: Iterable[dict[int, BucketCounts | array[int]]]
                  ) -> dict[int, array[int]]:
    """Per-second buckets of several recorders (or kinds) added up: packed, in order."""
    seconds: dict[int, BucketCounts] = {}
    for part in parts:
        for second, counts in part.items():
            seconds.setdefault(second, BucketCounts()).add(counts)
    return {s: pack(c) for s, c in sorted(seconds.items())}


def merge_waits(parts: Iterable[dict[int, int]]) -> dict[int, int]:
    """Nanoseconds spent acquiring per second, added up over recorders (or kinds)."""
    total: Counter[int] = Counter()
    for part in parts:
        total.update(part)
    return dict(sorted(total.items()))


def median(values: list[float]) -> float:
    """Median (mean of the middle two for an even count)."""
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# The clock of every timing: the C function itself, not a Python function calling it (four
# reads per operation; a Python frame each would cost about 0.1 µs per operation).
now_ns = time.perf_counter_ns


# Percentiles at which HdrHistogram's plotter samples a latency curve: ever closer to 100,
# so a log-scaled 1/(1 - p) axis shows the tail.
CURVE_PERCENTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99,
                     99.999, 100.0)


def percentile_curve(encoded: str) -> list[tuple[float, int]]:
    """(percentile, µs) pairs of an encoded histogram for a percentile plot; empty if none."""
    if not encoded:
        return []
    hist = decode_histogram(encoded)
    if hist.get_total_count() == 0:
        return []
    values = hist.get_percentile_to_value_dict(list(CURVE_PERCENTILES))
    return [(p, int(values[p])) for p in CURVE_PERCENTILES]
