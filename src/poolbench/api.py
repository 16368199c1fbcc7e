"""The library entry point: ``poolbench.run(config) -> RunResults``.

Order matters for the promise "bad input writes nothing": every check that can
fail (strategy drivers, output folder, connection, capacity, table shape) runs
before the first write to the database, which is creating the table if missing.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime, timezone

from poolbench.admin import check_capacity, connect_admin, server_facts
from poolbench.config import RunConfig
from poolbench.environment import manifest
from poolbench.errors import Interrupted
from poolbench.events import RunEvents
from poolbench.report import ExportManager, check_writable
from poolbench.results import (
    SCHEMA_VERSION,
    RunResults,
    StrategyResult,
    Verification,
    comparison,
    strategy_result,
)
from poolbench.runner import run_strategy
from poolbench.server import EmbeddedServer
from poolbench.strategies import StrategySettings, load_strategy
from poolbench.workload import (
    Workload,
    count_own_rows,
    delete_own_rows,
    ensure_table,
    new_run_tag,
    snapshot_others,
)

HEADROOM_CONNECTIONS = 10  # embedded server: admin connection, pgbench, a psql of the user's


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run(config: RunConfig, *, events: RunEvents | None = None, on_server: object = None,
        stop: threading.Event | None = None) -> RunResults:
    """Run every configured strategy; write exports after each; return the results.

    ``on_server``, if given, is called with the :class:`EmbeddedServer` once it
    is up (the CLI uses it to print a kept server's DSN). Setting ``stop`` (the
    CLI does on SIGINT/SIGTERM) ends the run early: workers stop, the run's rows
    are deleted, partial results are written, and :class:`Interrupted` is raised
    carrying them.
    """
    events = events or RunEvents()
    stop = stop or threading.Event()
    classes = [load_strategy(name) for name in config.strategies]
    if config.out_dir is not None:
        check_writable(config.out_dir)
        ExportManager(config.out_dir, chart=config.chart).subscribe(events)

    started = _now()
    with ExitStack() as stack:
        target = config.target
        if target is None:
            needed = max(c.connections_needed(workers=config.workers, pool_max=config.pool_max)
                         for c in classes)
            server = EmbeddedServer(max_connections=max(100, needed + HEADROOM_CONNECTIONS),
                                    keep=config.keep_server)
            target = server.start()
            stack.callback(server.stop)
            if callable(on_server):
                on_server(server)
        settings = StrategySettings(target=target, workers=config.workers,
                                    pool_min=config.pool_min, pool_max=config.pool_max,
                                    acquire_timeout_s=config.acquire_timeout_s)
        admin = stack.enter_context(connect_admin(target))
        facts = server_facts(admin)
        events.connected.fire(target=target, server=facts)
        check_capacity(admin, {c.name: c.connections_needed(workers=config.workers,
                                                            pool_max=config.pool_max)
                               for c in classes}, config.workers)
        ensure_table(admin, config.table)
        workload = Workload(config.table, new_run_tag())
        before = snapshot_others(admin, config.table, workload.prefix)
        events.run_started.fire(run_tag=workload.run_tag, table=config.table)
        public = replace(config, target=target) if config.target is None else config
        env = manifest(facts, embedded=config.target is None)

        def assemble(done: tuple[StrategyResult, ...], *, partial: bool,
                     verification: Verification | None = None) -> RunResults:
            return RunResults(schema_version=SCHEMA_VERSION, run_tag=workload.run_tag,
                              partial=partial, started_at=started, finished_at=_now(),
                              config=public.public_dict(), environment=env, strategies=done,
                              comparison=comparison(done), verification=verification)

        done: tuple[StrategyResult, ...] = ()
        for cls in classes:
            if stop.is_set():
                break
            try:
                measurement = run_strategy(cls(settings), workload=workload, rows=config.rows,
                                           workers=config.workers, warmup=config.warmup,
                                           trials=config.trials, events=events, stop=stop)
            finally:
                # Whatever happened, the run's rows go: a sweep by run tag on our own connection.
                leftover = delete_own_rows(admin, config.table, workload.prefix)
            done += (strategy_result(measurement, leftover_rows_deleted=leftover),)
            events.strategy_finished.fire(results=assemble(done, partial=True))
        after = snapshot_others(admin, config.table, workload.prefix)
        verification = Verification(
            own_rows_left=count_own_rows(admin, config.table, workload.prefix),
            other_rows_before=before.rows, other_rows_after=after.rows,
            other_rows_digest_before=before.digest, other_rows_digest_after=after.digest)
        results = assemble(done, partial=stop.is_set(), verification=verification)
        events.run_finished.fire(results=results)
        if stop.is_set():
            raise Interrupted(f"interrupted; partial results written, rows of run "
                              f"{workload.run_tag} deleted", results)
        return results
