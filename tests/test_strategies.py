"""Every strategy completes the four phases with the right counts and leaves the table as it was."""

from __future__ import annotations

import psycopg
import pytest
from conftest import seed_table, table_contents

from poolbench import RunConfig, run
from poolbench.db.target import ConnectionTarget
from poolbench.strategies import REGISTRY

ROWS = 30
WORKERS = 6


@pytest.mark.parametrize("strategy", list(REGISTRY))
def test_strategy_runs_all_phases_and_leaves_table_unchanged(
        strategy: str, target: ConnectionTarget, admin: psycopg.Connection, table: str) -> None:
    seed_table(admin, table, 25)
    before = table_contents(admin, table)

    results = run(RunConfig(target=target, strategies=(strategy,), rows=ROWS, workers=WORKERS,
                            pool_max=WORKERS, warmup=1, trials=2, table=table, out_dir=None,
                            connect_samples=1))

    (s,) = results.strategies
    assert [p.phase for p in s.phases] == ["create", "read", "update", "delete"]
    for p in s.phases:
        assert len(p.trials) == 3 and [t.warmup for t in p.trials] == [True, False, False]
        if strategy == "psycopg2:simple":
            # Documented as not thread-safe: failures may happen, but every attempt is
            # counted, as a success or a failure (reads, updates and deletes address the
            # rows that trial's creates made).
            for t in p.trials:
                attempts = ROWS if p.phase == "create" else \
                    s.phase("create").trials[t.trial].ops
                assert t.ops > 0 and t.ops + sum(t.errors.values()) == attempts, (p.phase, t)
        else:
            assert p.errors == {}, p.errors
            assert p.ops == 2 * ROWS
            assert p.latency.count == 2 * ROWS
            assert 0 < p.latency.p50_us <= p.latency.p99_us <= p.latency.max_us
            assert p.acquire.p50_us <= p.latency.p50_us
    assert results.verification is not None and results.verification.ok
    assert results.verification.other_rows_after == 25
    assert table_contents(admin, table) == before
    # What the server counted agrees exactly with what poolbench counted.
    assert s.server is not None and s.server.ok, s.server
    assert [c.name for c in s.server.checks][:4] == ["rows inserted", "rows updated",
                                                     "rows deleted", "sessions opened"]
    # Rows the server saw inserted: every successful create, warm-up trial included.
    assert s.server.checks[0].server == sum(t.ops for t in s.phase("create").trials)
    assert s.server.transactions >= s.server.operations
    opened = s.stats["connections_opened"]
    if not s.pooled:
        assert opened == 3 * 4 * ROWS
    elif strategy.startswith("psycopg2:") or strategy.endswith(":queuepool"):
        # psycopg2's pools close a returned connection when minconn are already idle, and
        # SQLAlchemy's QueuePool closes an overflow connection returned to a full pool_size.
        assert 1 <= opened <= 3 * 4 * ROWS
    else:
        assert 1 <= opened <= WORKERS


def test_rows_of_others_with_colliding_names_are_never_touched(
        target: ConnectionTarget, admin: psycopg.Connection, table: str) -> None:
    """A pre-existing row whose name looks like a run's is not deleted by the sweep."""
    seed_table(admin, table, 3)
    admin.execute(f'INSERT INTO "{table}" (username, email) VALUES '
                  "('pb00000000_0_0', 'pb00000000_0_0@poolbench.invalid')")
    before = table_contents(admin, table)
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=20, workers=4,
                            warmup=0, trials=1, table=table, out_dir=None))
    assert results.verification is not None and results.verification.ok
    assert table_contents(admin, table) == before
