"""The seed's workload: four phases per trial (create, read, update, delete) on the
``users`` table, every row the run's own (tagged with its run tag, see
:mod:`poolbench.db.workload` for the SQL and the table's shape).

Create makes ``--rows`` rows (or runs for ``--duration``), read and update cycle over the
rows created, delete removes each of them once. The server should count the rows each
phase touched; at the end, the run's rows are gone and every other row is as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poolbench.config import Pace
from poolbench.db.workload import (
    RunTable,
    count_own_rows,
    delete_own_rows,
    ensure_table,
    new_run_tag,
    snapshot_others,
)
from poolbench.results import PHASES, Verification
from poolbench.workloads.base import TrialDriver, WindowWork, Workload
from poolbench.workloads.phase import PhaseSpec

if TYPE_CHECKING:
    from poolbench.db.admin import AdminSession
    from poolbench.db.target import ConnectionTarget
    from poolbench.strategies.base import StrategyInfo

class CrudWork(WindowWork):
    """A window of the four phases: each trial creates its rows, reads and updates them,
    and deletes them."""

    def __init__(self, table: RunTable, rows: int) -> None:
        self.table = table
        self.rows = rows

    def run_trial(self, trial: int, pace: Pace, driver: TrialDriver) -> bool:
        statements = self.table.statements()
        ids: tuple[int, ...] = ()
        for phase in PHASES:
            spec = PhaseSpec.of(phase, statements[phase], self.table, trial, rows=self.rows,
                                ids=ids, pace=pace)
            outcome = driver.run(spec)
            if outcome is None:
                return False
            if phase == "create":
                ids = tuple(outcome.created)
            driver.measured(phase, outcome, outcome.recorders)
        return True


class CrudWorkload(Workload):
    """The seed's CRUD phases on its table (``--table``), on rows of the run's own."""

    name = "crud"

    def set_up(self, admin: AdminSession, target: ConnectionTarget, *, run_tag: str,
               embedded: bool, typed_params: bool) -> None:
        """The table (made if missing, else its shape checked: another shape is refused,
        touching nothing), a run tag no row of it carries yet, and the other rows'
        snapshot for the data check."""
        table = self.config.table
        admin.call(lambda c: ensure_table(c, table))
        tag = run_tag
        while admin.call(lambda c, tag=tag: count_own_rows(c, table, f"{tag}_")) != 0:
            tag = new_run_tag()
        self.table = RunTable(table, tag)
        prefix = self.table.prefix
        self.before = admin.call(lambda c: snapshot_others(c, table, prefix))

    def window(self, admin: AdminSession, strategy: type[StrategyInfo], *,
               prepared_statements: bool) -> WindowWork:
        return CrudWork(self.table, self.config.rows)

    def delete_own_rows(self, admin: AdminSession) -> int:
        table, prefix = self.table.table, self.table.prefix
        return admin.call(lambda c: delete_own_rows(c, table, prefix))

    def verify(self, admin: AdminSession) -> Verification:
        table, prefix = self.table.table, self.table.prefix
        after: Any = admin.call(lambda c: snapshot_others(c, table, prefix))
        return Verification(
            own_rows_left=admin.call(lambda c: count_own_rows(c, table, prefix)),
            other_rows_before=self.before.rows, other_rows_after=after.rows,
            other_rows_digest_before=self.before.digest, other_rows_digest_after=after.digest)
