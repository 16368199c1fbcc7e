"""The one interface every workload implements: *what* the workers do on a connection.

A strategy is how a worker gets a connection; a workload is what it does with it. A
workload, made from the run's config, is asked in this order:

- ``check()``: before anything connects, what it can refuse from the config alone;
- ``set_up(admin, ...)``: on the run's database, before the first strategy: its table
  and the run's tag (the CRUD workloads), pgbench's tables (built-in scripts on the
  embedded server), what its drivers must know of the statements;
- ``window(admin, strategy, ...)``: for each strategy's window (one strategy on one
  route between two snapshots of the server's counters), a :class:`WindowWork`, which
  runs that window's trials as phases (:class:`~poolbench.workloads.phase.PhaseSpec`:
  plain data, handed to the executor's workers, threads, tasks, processes or nodes),
  says how each phase is measured (by kind), and what the server should have counted;
- ``delete_own_rows(admin)`` after each window and at the end, ``verify(admin)`` last.

Adding a workload is one module here and one line in :data:`poolbench.workloads.REGISTRY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from poolbench.config import Pace, RunConfig
from poolbench.db.workload import RunTable
from poolbench.results import Verification

if TYPE_CHECKING:
    from poolbench.db.admin import AdminSession
    from poolbench.db.target import ConnectionTarget
    from poolbench.strategies.base import StrategyInfo
    from poolbench.workloads.phase import PhaseSpec
    from poolbench.workloads.script.plan import ScriptPlan


class PhaseOutcome(Protocol):
    """What a phase's run hands back to its workload: the rows it left alive (a CRUD
    create phase: the ids it made; a mix: the rows still alive) and each worker's
    recorders, one per kind it measured (``.kind``)."""

    created: list[int]
    recorders: list[Any]


class TrialDriver(Protocol):
    """How a window's trials reach the executor: ``run`` one phase (None when the stop
    event cut it short: the trial ends there); ``measured`` files some of its recorders
    as one phase of results (``read``, ``mix:create``, ``script:NAME``)."""

    def run(self, spec: PhaseSpec) -> PhaseOutcome | None: ...
    def measured(self, phase: str, outcome: PhaseOutcome, recorders: Sequence[Any]) -> None: ...


@dataclass(frozen=True)
class ScriptCounts:
    """What a strategy's script runs should have made the server count: the transactions
    their complete runs committed and rolled back, and what the strategy or its driver adds
    of its own in this mode, if anything (then the counts are shown, not checked)."""

    committed: int
    rolled_back: int
    extra: str | None = None
    prepared: bool = False  # the driver prepares the statements (-M prepared, asyncpg)


class WindowWork(ABC):
    """One strategy's work in one window: its trials, and what the server should count."""

    table: RunTable
    plan: ScriptPlan | None = None  # scripts, as this strategy on this route sends them

    @abstractmethod
    def run_trial(self, trial: int, pace: Pace, driver: TrialDriver) -> bool:
        """Run one trial's phases through ``driver``; False if the stop event cut it."""

    def ops_by_phase(self, measured: Sequence[tuple[str, int]]) -> dict[str, int]:
        """Successful operations per phase the server knows (its rows' phases), from
        (kind, operations) of every measured phase, warm-up included."""
        ops: Counter[str] = Counter()
        for kind, n in measured:
            ops[self.phase_of(kind)] += n
        return dict(ops)

    def phase_of(self, kind: str) -> str:
        """The phase the server counts a measured kind's operations under (itself)."""
        return kind

    def script_counts(self, ops: dict[str, int], *,
                      strategy_extra: str | None) -> ScriptCounts | None:
        """Scripts: the transactions the server should count (None: checked by rows)."""
        return None


class Workload(ABC):
    """One workload of a run, made from its config (see the module's docstring)."""

    name: ClassVar[str]
    # Its rows carry the run's tag in the run's table: the data check runs at the end.
    makes_rows: ClassVar[bool] = True
    # Which reference --baseline pgbench runs for it: "crud" (the CRUD phases as pgbench
    # scripts) or "scripts" (the same script files).
    baseline: ClassVar[str] = "crud"

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.table = RunTable(config.table, "")

    @property
    def run_tag(self) -> str:
        return self.table.run_tag

    def check(self) -> None:  # noqa: B027 (most workloads refuse nothing of their own)
        """Refuse, in one line, what the config alone shows cannot run."""

    @abstractmethod
    def set_up(self, admin: AdminSession, target: ConnectionTarget, *, run_tag: str,
               embedded: bool, typed_params: bool) -> None:
        """Make what the workload needs on the run's database (nothing written before
        every check passed); ``typed_params``: a strategy encodes values by type."""

    @abstractmethod
    def window(self, admin: AdminSession, strategy: type[StrategyInfo], *,
               prepared_statements: bool) -> WindowWork:
        """The work of one strategy's window (rows it needs are made now, before the
        server's counters are read)."""

    def read_only(self) -> bool:
        """Whether its sessions are read-only (scripts on a server poolbench did not
        start, without --allow-writes or --clone)."""
        return False

    def protocol_note(self, strategy: type[StrategyInfo], *,
                      prepared_statements: bool) -> str | None:
        """What pgbench's ``-M`` became on this strategy's driver (scripts), else None."""
        return None

    def delete_own_rows(self, admin: AdminSession) -> int:
        """Delete every row the run made (by its tag), on a fresh connection if the
        server dropped the admin's; how many."""
        return 0

    def verify(self, admin: AdminSession) -> Verification | None:
        """The data check at the end: the run's rows gone, every other row untouched."""
        return None
