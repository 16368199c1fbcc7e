"""What one phase asks of the workers: which statement, how many operations or for how
long, at what rate, and for which rows.

A :class:`PhaseSpec` is plain data (it crosses process boundaries for
``--processes``); a :class:`WorkSource` hands its operations out to workers, one
number at a time, so threads, tasks and processes share one definition of "the
next operation" and of when it is due.
"""

from __future__ import annotations

import collections
import functools
import itertools
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from time import perf_counter_ns as now_ns
from typing import TYPE_CHECKING

from poolbench.config import Pace, script_cycle
from poolbench.db.workload import RunTable, Statement
from poolbench.workloads.script import Script

if TYPE_CHECKING:
    from poolbench.workloads.script.plan import ScriptPlan

Params = tuple[object, ...]


@dataclass(frozen=True)
class PhaseSpec:
    phase: str
    statement: Statement
    workload: RunTable
    trial: int
    count: int | None  # operations in the phase; None: until the duration is up
    ids: tuple[int, ...] = ()  # rows the read/update/delete operations address
    pace: Pace = Pace()  # noqa: RUF009 (frozen, so one shared default is safe)
    offset: int = 0  # this share's first operation number (--processes)
    stride: int = 1  # operation numbers step by the number of shares
    # --mix: (kind, weight) pairs, and each kind's statement; ids are then the live rows
    mix: tuple[tuple[str, int], ...] = ()
    statements: tuple[Statement, ...] = ()
    scripts: ScriptPlan | None = None  # -f/-b: each operation one run of a script

    @classmethod
    def of(cls, phase: str, statement: Statement, workload: RunTable, trial: int, *,
           rows: int, ids: tuple[int, ...], pace: Pace) -> PhaseSpec:
        timed = pace.duration_s is not None and phase != "delete"
        count = (None if timed and (phase == "create" or ids)
                 else rows if phase == "create" else len(ids))
        return cls(phase, statement, workload, trial, count, ids, pace)

    @classmethod
    def of_scripts(cls, plan: ScriptPlan, workload: RunTable, trial: int, *, runs: int,
                   pace: Pace) -> PhaseSpec:
        """One phase of scripts: ``runs`` script runs, or ``--duration``."""
        return cls("mix", SCRIPTS, workload, trial,
                   None if pace.duration_s is not None else runs, pace=pace, scripts=plan)

    def params_at(self, number: int) -> Params:
        if self.phase == "create":
            return self.workload.create_row(self.trial, number)
        index = number % len(self.ids)
        if self.phase == "update":
            return self.workload.update_row(self.trial, index, self.ids[index])
        return (self.ids[index],)

    def share(self, part: int, parts: int) -> PhaseSpec:
        """The operations numbered part, part + parts, ... (one process's share); in a mix,
        also its share of the live rows, which only its workers then touch."""
        ids = self.ids[part::parts] if self.mix else self.ids
        return replace(self, offset=part, stride=parts, ids=ids)

    def source(self) -> WorkSource:
        """A fresh source of this phase's operations (one per phase in each process)."""
        if self.scripts is not None:
            return ScriptSource(self)
        return MixSource(self) if self.mix else WorkSource(self)

    @property
    def expected(self) -> int | None:
        """Operations this phase will attempt, when known in advance (progress bars)."""
        if self.count is not None:
            return self.count
        if self.pace.rate and self.pace.duration_s:
            return int(self.pace.rate * self.pace.duration_s)
        return None


# Rows whose operations an unpaced read or delete phase's source makes in advance (7 MB)
MADE_ITEMS = 1 << 16


class WorkSource:
    """Hands out a phase's operations: parameters, and the time each is due (rate mode).

    ``next`` is safe to call from many threads: ``itertools.count`` advances
    atomically under the GIL, so each operation number goes to one worker.

    What the executor's workers do with each operation is one of three shapes, named by
    ``loop``, each timed by the executor (acquire, the work, release) and written out
    there for speed: ``statement``, one statement per operation (its row checked);
    ``mix``, one statement chosen per operation, its row booked (:class:`MixSource`);
    ``script``, one run of a script, its statements in order (:class:`ScriptSource`).
    ``kinds``: what each worker records apart (none: one recorder for the phase).
    """

    loop = "statement"
    kinds: tuple[str, ...] = ()

    def __init__(self, spec: PhaseSpec) -> None:
        self.spec = spec
        self._numbers = itertools.count()
        self.start_ns = 0
        self.deadline_ns: int | None = None
        self.interval_ns = 1e9 / spec.pace.rate if spec.pace.rate else 0.0
        # An unpaced phase of one row by id per operation (read, delete) takes _next_row,
        # whose operations are made here, before the phase clock starts (no allocation per
        # operation), for up to MADE_ITEMS rows (112 bytes each); more are made as handed out.
        self._by_row = not self.interval_ns and spec.phase in ("read", "delete")
        self._items = ([((row,), None) for row in spec.ids]
                       if self._by_row and len(spec.ids) <= MADE_ITEMS else None)

    def start(self, start_ns: int | None = None) -> None:
        """Start the phase clock (schedule and deadline count from here)."""
        self.start_ns = now_ns() if start_ns is None else start_ns
        duration = self.spec.pace.duration_s
        if duration is not None and self.spec.count is None:
            self.deadline_ns = self.start_ns + int(duration * 1e9)
        if self._by_row:
            self.next = self._next_row()  # type: ignore[method-assign]

    def _next_row(self) -> Callable[[], tuple[Params, None] | None]:
        """:meth:`next` for an unpaced phase whose operation is one row by id (read, delete):
        the same numbers, rows and end, without ``due``'s and ``params_at``'s calls and
        attribute reads (harness_ir.txt: the source's next was 5k instructions of 24k).
        A phase of a count whose operations are made hands them out of a C iterator
        (operation ``n`` is ``items[n % len(items)]``: ``islice`` over the list, or over
        ``cycle`` of it when the count goes round the rows), whose ``next`` allocates
        nothing, so it runs to its end under the GIL, as ``itertools.count``'s does (an
        iterator that made a tuple could start a garbage collection, whose finalizers could
        let another thread in halfway). Otherwise a closure takes the next number and makes
        the operation, or looks at the clock for a duration's deadline."""
        spec, numbers, deadline = self.spec, self._numbers, self.deadline_ns
        offset, stride, count = spec.offset, spec.stride, spec.count
        ids, items, rows = spec.ids, self._items, len(spec.ids)
        if items is not None and deadline is None:
            # cycle keeps a copy of all it cycles: only when the count goes round the rows
            made = itertools.cycle(items) if count is None or count > rows else items
            return functools.partial(next, itertools.islice(made, offset, count, stride), None)

        def next_row() -> tuple[Params, None] | None:
            number = offset + next(numbers) * stride
            if (count is not None and number >= count) or \
                    (deadline is not None and now_ns() >= deadline):
                return None
            return items[number % rows] if items is not None else ((ids[number % rows],), None)
        return next_row

    @property
    def keeps_rows(self) -> bool:
        """Whether its operations' results are rows to keep (a create phase's ids)."""
        return self.spec.phase == "create"

    def alive(self, created: list[int]) -> list[int]:
        """The rows the phase leaves for the next one, from those its workers kept."""
        return created

    def next(self) -> tuple[Params, int | None] | None:
        """The next operation's parameters and scheduled start (None: not paced); None at end."""
        due = self.due()
        return None if due is None else (self.spec.params_at(due[0]), due[1])

    def due(self) -> tuple[int, int | None] | None:
        """The next operation's number and scheduled start (``start_ns + number / rate``;
        None: not paced); None at the end of the phase. This is the pacing plan: the
        workers only wait for each start, so tests check the plan here, not by timing."""
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
        return number, scheduled


class LiveRows:
    """The rows a mix may touch: created by the run and not deleted. An operation takes a
    row for itself (no other worker can read or update a row being deleted) and gives it
    back when done, unless it deleted it. A lock per take/give: a few hundred nanoseconds."""

    def __init__(self, ids: tuple[int, ...]) -> None:
        self._free = collections.deque(ids)
        self._lock = threading.Lock()
        self._out = 0

    def take(self) -> int | None:
        with self._lock:
            if not self._free:
                return None
            self._out += 1
            return self._free.popleft()

    def give(self, row_id: int) -> None:
        with self._lock:
            self._out -= 1
            self._free.append(row_id)

    def gone(self) -> None:
        with self._lock:
            self._out -= 1

    def add(self, row_id: int) -> None:
        with self._lock:
            self._free.append(row_id)

    def remaining(self) -> list[int]:
        with self._lock:
            return list(self._free)


# The nominal statement of a phase of scripts (each of their statements is its own).
SCRIPTS = Statement("mix", "", None)


class ScriptSource(WorkSource):
    """A phase of scripts: each operation's script by weight (pgbench's ``-f FILE@W``), as a
    fixed shuffled cycle of the weights over their common divisor, so every cycle holds
    them exactly. The scripts are parsed here, once per phase in each process."""

    loop = "script"

    def __init__(self, spec: PhaseSpec) -> None:
        super().__init__(spec)
        assert spec.scripts is not None
        self.kinds = spec.scripts.kinds
        self.scripts: tuple[Script, ...] = spec.scripts.parse()
        counts = script_cycle(tuple(f.weight for f in spec.scripts.files))
        cycle = [i for i, n in enumerate(counts) for _ in range(n)]
        random.Random(0).shuffle(cycle)
        self.cycle = cycle

    def next_script(self) -> tuple[int, int | None] | None:
        """The next operation: its script's index, and its scheduled start."""
        due = self.due()
        if due is None:
            return None
        number, scheduled = due
        # Each process walks the whole cycle with its own operations, as a mix does.
        spec = self.spec
        return self.cycle[(number - spec.offset) // spec.stride % len(self.cycle)], scheduled


MixItem = tuple[Statement, Params, "int | None", "int | None"]


class MixSource(WorkSource):
    """A mixed phase: each operation's kind by weight (pgbench's ``script@weight``, as a
    fixed shuffled cycle of 100 so every 100 operations hold the weights exactly)."""

    loop = "mix"

    def __init__(self, spec: PhaseSpec) -> None:
        super().__init__(spec)
        # An operation that finds no row free makes one, so a mix can always create.
        self.kinds = tuple(dict.fromkeys([*(kind for kind, _ in spec.mix), "create"]))
        self.live = LiveRows(spec.ids)
        by_kind = {s.phase: s for s in spec.statements}
        total = sum(w for _, w in spec.mix)
        cycle = [by_kind[k] for k, w in spec.mix for _ in range(round(w * 100 / total))]
        random.Random(0).shuffle(cycle)
        self.cycle = cycle or [by_kind["read"]]
        self.create = by_kind["create"]

    def next_mix(self) -> MixItem | None:
        """The next operation: statement, parameters, scheduled start, the row it took."""
        due = self.due()
        if due is None:
            return None
        number, scheduled = due
        # Each process walks the whole cycle with its own operations, so the weights hold
        # in every share however fast each runs.
        spec = self.spec
        statement = self.cycle[(number - spec.offset) // spec.stride % len(self.cycle)]
        if statement.phase != "create":
            taken = self.live.take()
            if taken is not None:
                if statement.phase == "update":
                    return statement, spec.workload.update_row(spec.trial, number, taken), \
                        scheduled, taken
                return statement, (taken,), scheduled, taken
            statement = self.create  # no row free to touch: make one instead
        return statement, spec.workload.create_row(spec.trial, number), scheduled, None

    @property
    def keeps_rows(self) -> bool:
        return False  # its rows are booked in ``live``

    def alive(self, created: list[int]) -> list[int]:
        return self.live.remaining()

    def settle(self, statement: Statement, result: int | None, taken: int | None) -> None:
        """Book the operation's row: a new one, one given back, or one gone."""
        if taken is None:
            if result is not None:
                self.live.add(result)
        elif statement.phase == "delete" and result == 1:
            self.live.gone()
        else:
            self.live.give(taken)
