"""What one phase asks of the workers: which statement, how many operations or for how
long, at what rate, and for which rows.

A :class:`PhaseSpec` is plain data (it crosses process boundaries for
``--processes``); a :class:`WorkSource` hands its operations out to workers, one
number at a time, so threads, tasks and processes share one definition of "the
next operation" and of when it is due.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from poolbench.config import Pace
from poolbench.db.workload import Statement, Workload
from poolbench.measure.metrics import now_ns

Params = tuple[object, ...]


@dataclass(frozen=True)
class PhaseSpec:
    phase: str
    statement: Statement
    workload: Workload
    trial: int
    count: int | None  # operations in the phase; None: until the duration is up
    ids: tuple[int, ...] = ()  # rows the read/update/delete operations address
    pace: Pace = Pace()  # noqa: RUF009 (frozen, so one shared default is safe)
    offset: int = 0  # this share's first operation number (--processes)
    stride: int = 1  # operation numbers step by the number of shares

    @classmethod
    def of(cls, phase: str, statement: Statement, workload: Workload, trial: int, *,
           rows: int, ids: tuple[int, ...], pace: Pace) -> PhaseSpec:
        timed = pace.duration_s is not None and phase != "delete"
        count = (None if timed and (phase == "create" or ids)
                 else rows if phase == "create" else len(ids))
        return cls(phase, statement, workload, trial, count, ids, pace)

    def params_at(self, number: int) -> Params:
        if self.phase == "create":
            return self.workload.create_row(self.trial, number)
        index = number % len(self.ids)
        if self.phase == "update":
            return self.workload.update_row(self.trial, index, self.ids[index])
        return (self.ids[index],)

    def share(self, part: int, parts: int) -> PhaseSpec:
        """The operations numbered part, part + parts, ... (one process's share)."""
        return replace(self, offset=part, stride=parts)

    @property
    def expected(self) -> int | None:
        """Operations this phase will attempt, when known in advance (progress bars)."""
        if self.count is not None:
            return self.count
        if self.pace.rate and self.pace.duration_s:
            return int(self.pace.rate * self.pace.duration_s)
        return None


class WorkSource:
    """Hands out a phase's operations: parameters, and the time each is due (rate mode).

    ``next`` is safe to call from many threads: ``itertools.count`` advances
    atomically under the GIL, so each operation number goes to one worker.
    """

    def __init__(self, spec: PhaseSpec) -> None:
        self.spec = spec
        self._numbers = itertools.count()
        self.start_ns = 0
        self.deadline_ns: int | None = None
        self.interval_ns = 1e9 / spec.pace.rate if spec.pace.rate else 0.0

    def start(self, start_ns: int | None = None) -> None:
        """Start the phase clock (schedule and deadline count from here)."""
        self.start_ns = now_ns() if start_ns is None else start_ns
        duration = self.spec.pace.duration_s
        if duration is not None and self.spec.count is None:
            self.deadline_ns = self.start_ns + int(duration * 1e9)

    def next(self) -> tuple[Params, int | None] | None:
        """The next operation's parameters and scheduled start (None: not paced); None at end."""
        spec = self.spec
        number = spec.offset + next(self._numbers) * spec.stride
        if spec.count is not None and number >= spec.count:
            return None
        scheduled = None
        if self.interval_ns:
            scheduled = self.start_ns + int(number * self.interval_ns)
            if self.deadline_ns is not None and scheduled >= self.deadline_ns:
                return None
        elif self.deadline_ns is not None and now_ns() >= self.deadline_ns:
            return None
        return spec.params_at(number), scheduled
