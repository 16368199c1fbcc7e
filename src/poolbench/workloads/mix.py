"""``--mix``: the CRUD statements in one timed phase per trial, each operation's kind by
weight (pgbench's ``-f script@weight``), measured per kind (``mix:read``...).

A window starts on ``--rows`` rows made for it (one statement, outside the server's
counted window, tagged like every row of the run); reads, updates and deletes take a
live row (:class:`~poolbench.workloads.phase.LiveRows`), a create adds one, and the next
trial takes on the rows still alive. An operation that finds no row free creates one, so
a mix may show creates it did not ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolbench.config import Pace
from poolbench.db.workload import RunTable, make_rows
from poolbench.workloads.base import TrialDriver, WindowWork
from poolbench.workloads.crud import CrudWorkload
from poolbench.workloads.phase import PhaseSpec

if TYPE_CHECKING:
    from poolbench.db.admin import AdminSession
    from poolbench.strategies.base import StrategyInfo


class MixWork(WindowWork):
    """A window of mixed phases over rows made for it."""

    def __init__(self, table: RunTable, mix: tuple[tuple[str, int], ...], rows: int,
                 live: tuple[int, ...]) -> None:
        self.table = table
        self.mix = mix
        self.rows = rows
        self.live = list(live)

    def run_trial(self, trial: int, pace: Pace, driver: TrialDriver) -> bool:
        statements = self.table.statements()
        spec = PhaseSpec("mix", statements["read"], self.table, trial,
                         count=None if pace.duration_s is not None else self.rows,
                         ids=tuple(self.live), pace=pace, mix=self.mix,
                         statements=tuple(statements.values()))
        outcome = driver.run(spec)
        if outcome is None:
            return False
        self.live[:] = outcome.created  # the rows still alive: the next trial's to touch
        # Kinds in the mix's order; creates made because no row was free are shown even
        # when the mix has none, so every operation the server counted is in a kind.
        kinds = [kind for kind, _ in self.mix]
        if "create" not in kinds and any(r.kind == "create" and (r.ok or r.errors)
                                         for r in outcome.recorders):
            kinds.append("create")
        for kind in kinds:
            driver.measured(f"mix:{kind}", outcome,
                            [r for r in outcome.recorders if r.kind == kind])
        return True

    def phase_of(self, kind: str) -> str:
        """A mix's kinds (``mix:create``) count as their phase's."""
        return kind.removeprefix("mix:")


class MixWorkload(CrudWorkload):
    """The CRUD statements mixed by ``--mix`` weights, on the CRUD workload's table."""

    name = "mix"

    def window(self, admin: AdminSession, strategy: type[StrategyInfo], *,
               prepared_statements: bool) -> WindowWork:
        table, rows = self.table, self.config.rows
        return MixWork(table, self.config.mix, rows,
                       admin.call(lambda c: make_rows(c, table.table, table, rows)))
