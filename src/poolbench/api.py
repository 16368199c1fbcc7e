"""The library entry point: ``poolbench.run(config) -> RunResults``.

Order matters for the promise "bad input writes nothing": every check that can
fail (strategy drivers, scripts, output folder, connection, capacity, table shape)
runs before the first write to the database, which is creating the table if missing.
A run of scripts (``-f``/``-b``) makes no table and no row of its own: its scripts
work on their own tables, in read-only sessions on a server poolbench did not start
unless ``allow_writes`` (pgbench's built-ins on the run's own embedded server get
pgbench's tables, made as ``poolbench init`` makes them).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from poolbench.analysis.distance import project_run, script_statements
from poolbench.analysis.findings import findings
from poolbench.check.calibrate import calibrate, ratios
from poolbench.check.crosscheck import (
    ServerCounters,
    ServerProbe,
    Settled,
    compare,
    expected,
)
from poolbench.check.script_baseline import COMPARED as SCRIPT_PHASES
from poolbench.check.script_baseline import calibrate_scripts
from poolbench.check.statement_calls import ScriptStatements, identify
from poolbench.config import RunConfig
from poolbench.db.admin import AdminSession, check_capacity, connect_admin, server_facts
from poolbench.db.binaries import find_pgbench
from poolbench.db.clone import Clone, ClonedDatabase
from poolbench.db.pgbench_tables import ROWS_PER_SCALE, TABLES, PgbenchTables, init_tables
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import APPLICATION_NAME, ConnectionTarget, reason
from poolbench.db.workload import new_run_tag
from poolbench.environment import manifest
from poolbench.errors import ConfigError, ConnectError, Interrupted, PoolbenchError
from poolbench.events import RunEvents
from poolbench.measure import combine
from poolbench.measure.cluster import ClusterNodes, connect_cluster
from poolbench.measure.connect_probe import connect_cost
from poolbench.measure.harness import executor_kind, harness_us_per_op
from poolbench.measure.processes import share
from poolbench.measure.runner import StrategyMeasurement, run_strategy
from poolbench.measure.sampler import Sampler, ServerProcesses
from poolbench.measure.summary import strategy_result
from poolbench.network.relay_process import MAX_CONNECTIONS, RelayProcess, upstream_args
from poolbench.network.rtt_check import check_rtt
from poolbench.poolers.pgbouncer import find_pgbouncer
from poolbench.poolers.routes import Route, open_route
from poolbench.report import ExportManager, check_writable
from poolbench.results import (
    SCHEMA_VERSION,
    ActivitySummary,
    Calibration,
    ConnectCost,
    CrossCheck,
    PoolerCheck,
    RttCheck,
    RunResults,
    StrategyResult,
    Verification,
    comparison,
)
from poolbench.strategies import StrategySettings, load_strategy
from poolbench.workloads import load_workload
from poolbench.workloads.base import WindowWork, Workload
from poolbench.workloads.scripted import make_builtin_tables

T = TypeVar("T")
PROBED_DRIVERS = ("psycopg", "psycopg2", "asyncpg")
if TYPE_CHECKING:
    from poolbench.analysis.sweep import SweepResults
    from poolbench.strategies.base import StrategyInfo

FD_HEADROOM = 64  # files a run opens besides its connections: admin, sampler, logs, reports
HEADROOM_CONNECTIONS = 10  # embedded server: admin connection, pgbench, a psql of the user's
SWEEP_ORDER_SEED = 0  # the sweep's order of points in each round (analysis.plan.schedule)
# A no-pool client's next connect can reach PgBouncer before it has seen the last one
# close: its max_client_conn leaves room for that churn and the admin console.
PGBOUNCER_SPARE_CLIENTS = 100


def _check_open_files(classes: list[type[StrategyInfo]], *, workers: int, pool_min: int,
                      pool_max: int, processes: int) -> None:
    """pgbench's check, before anything starts: each connection a process holds open is a
    file descriptor, and the process may open only ``ulimit -n`` of them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    needs = {c: c.connections_needed(workers=workers, pool_min=pool_min, pool_max=pool_max)
             for c in classes}
    cls = max(needs, key=needs.__getitem__)
    needed = needs[cls]
    per_process = -(-needed // processes)
    in_use = psutil.Process().num_fds()
    if per_process + in_use + FD_HEADROOM > soft:
        each = f" ({per_process:,} in each of {processes} processes)" if processes > 1 else ""
        raise ConfigError(
            f"--workers {workers}: {cls.name} holds up to {needed:,} connections at once"
            f"{each}, but a process may open only {soft:,} files (ulimit -n) and has "
            f"{in_use} open; use fewer --workers, more --processes, or raise ulimit -n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run(config: RunConfig, *, events: RunEvents | None = None, on_server: object = None,
        stop: threading.Event | None = None, clone: Clone | None = None,
        sampler: Sampler | None = None, cluster: ClusterNodes | None = None,
        harness: bool = True) -> RunResults:
    """Run every configured strategy; write exports after each; return the results.

    ``on_server``, if given, is called with the :class:`EmbeddedServer` once it
    is up (the CLI uses it to print a kept server's DSN). Setting ``stop`` (the
    CLI does on SIGINT/SIGTERM) ends the run early: workers stop, the run's rows
    are deleted, partial results are written, and :class:`Interrupted` is raised
    carrying them.

    ``config.clone``: the run goes to a copy of the target's database, made first and
    dropped last, however the run ends (``db/clone.py``); ``clone``, a copy made already
    (a sweep's, for all its points), to run in instead of making one. ``sampler``: an
    activity sampler open already (a sweep's: its process starts once, not per point),
    used instead of starting one and left open. ``cluster``: the ``--cluster`` nodes
    reached already (a sweep's: its LocalCluster starts once, not per point), used instead
    of connecting and left open. ``harness=False``: poolbench's own cost per operation is not
    measured (a sweep's points: the sweep reports no such figure, and its time is the
    sweep's).
    """
    events = events or RunEvents()
    stop = stop or threading.Event()
    classes, workload = _check_input(config, events)
    with ExitStack() as stack:
        session = _open_session(config, classes, workload, events, stop, stack, on_server,
                                clone, sampler, cluster, harness)
        done = _measure_strategies(session, classes)
        cost = _measure_connect_cost(session, classes)
        calibration = _calibrate(session, done)
        results = session.finish(done, partial=stop.is_set(), calibration=calibration,
                                 connect_cost=cost)
        if stop.is_set():
            raise Interrupted(f"interrupted; partial results written, rows of run "
                              f"{workload.run_tag} deleted", results)
        return results


def _check_input(config: RunConfig,
                 events: RunEvents) -> tuple[list[type[StrategyInfo]], Workload]:
    """Every check that needs no server: drivers, the workload's own, open files,
    PgBouncer, the output folder."""
    classes = [load_strategy(name) for name in config.strategies]
    workload = load_workload(config)
    workload.check()
    if config.cluster is None:  # a cluster's nodes open their own, maybe elsewhere
        _check_open_files(classes, workers=config.workers, pool_min=config.pool_min,
                          pool_max=config.pool_max, processes=config.processes)
    if any(route.startswith("pgbouncer:") for route in config.via):
        find_pgbouncer(config.pgbouncer)  # missing: one line naming the install, nothing written
    if config.rtt_ms is not None:
        _check_relay(config, classes)
    if config.out_dir is not None:
        check_writable(config.out_dir)
        ExportManager(config.out_dir, chart=config.chart).subscribe(events)
    return classes, workload


def _check_relay(config: RunConfig, classes: list[type[StrategyInfo]]) -> None:
    """``--rtt``: the relay carries at most :data:`MAX_CONNECTIONS` at once (docs/network.md),
    and a pooler you run (``--via pooler``) must have one address it can forward to."""
    carried = max(c.connections_needed(workers=config.workers, pool_min=config.pool_min,
                                       pool_max=config.pool_max) for c in classes)
    if config.pooler_near == "app" and any(r.startswith("pgbouncer:") for r in config.via):
        carried = max(carried, config.effective_pooler_size)
    if carried > MAX_CONNECTIONS:
        raise ConfigError(f"--rtt: the relay carries at most {MAX_CONNECTIONS} connections at "
                          f"once and this run holds up to {carried}; use fewer --workers (or "
                          "a smaller --pool-max/--pooler-size)")
    if "pooler" in config.via and config.pooler_dsn is not None:
        upstream_args(config.pooler_dsn)


def _check_relay_reachable(cluster: ClusterNodes) -> None:
    """The relay listens on this machine's 127.0.0.1: no node elsewhere can reach it."""
    here = socket.gethostname()
    away = sorted({str(f.get("host")) for f in cluster.facts if f.get("host") != here})
    if away:
        raise ConfigError(f"--rtt: the relay listens on 127.0.0.1 of {here}, which the "
                          f"--cluster nodes on {', '.join(away)} cannot reach; run --rtt "
                          "without --cluster, or with nodes on this machine (local:N)")


@dataclass
class _Session:
    """What one run holds open while its strategies run: the server, the admin session,
    the run's tag, the server-side probe and sampler; and what every result carries."""

    config: RunConfig
    events: RunEvents
    stop: threading.Event
    target: ConnectionTarget
    settings: StrategySettings
    admin: AdminSession
    workload: Workload
    probe: ServerProbe
    sampler: Sampler | None
    cluster: ClusterNodes | None
    server_cores: int | None
    started: str
    environment: dict[str, object]
    public: RunConfig
    harness: dict[str, float] = field(default_factory=dict)
    done: tuple[StrategyResult, ...] = ()  # every strategy finished so far, as configured
    # Optional measurements that failed, and why: the run completes without them.
    not_measured: dict[str, str] = field(default_factory=dict)
    relay: RelayProcess | None = None  # --rtt: the relay between the strategies and server
    rtt: RttCheck | None = None  # --rtt: what the relay injected, measured

    def optional(self, what: str, measure: Callable[[], T]) -> T | None:
        """``measure()``, or None with ``what`` recorded as not measured, and why, if it
        fails in any way: an optional measurement never fails a run."""
        try:
            return measure()
        except Exception as exc:
            self.not_measured[what] = reason(exc, self.target)
            return None

    def delete_own_rows(self) -> int:
        """Whatever happened, the run's rows go (a run of scripts made none)."""
        return self.workload.delete_own_rows(self.admin)

    def assemble(self, done: tuple[StrategyResult, ...], *, partial: bool,
                 verification: Verification | None = None, **measured: Any) -> RunResults:
        return RunResults(schema_version=SCHEMA_VERSION, run_tag=self.workload.run_tag,
                          partial=partial, started_at=self.started, finished_at=_now(),
                          config=self.public.public_dict(), environment=self.environment,
                          strategies=done,
                          # Timed phases (--duration) take the same time whatever the
                          # strategy: the seed's time-for-the-work line means nothing then.
                          comparison=comparison(done) if self.config.duration_s is None
                          else None, verification=verification,
                          harness_us_per_op=self.harness or None,
                          not_measured=dict(self.not_measured), rtt=self.rtt, **measured)

    def finish(self, done: tuple[StrategyResult, ...], *, partial: bool,
               **measured: Any) -> RunResults:
        """The data check, then the results (final or partial) to every exporter. A run of
        scripts has no data check: it made no rows, and its scripts' rows are theirs."""
        results = self.assemble(done, partial=partial,
                                verification=self.workload.verify(self.admin), **measured)
        results = replace(results, distances=project_run(
            results, statements=script_statements(self.config.scripts),
            release_round_trips={n: load_strategy(n).release_round_trips
                                 for n in self.config.strategies}))
        results = replace(results, findings=findings(results, server_cores=self.server_cores))
        self.events.run_finished.fire(results=results)
        return results


def _open_session(config: RunConfig, classes: list[type[StrategyInfo]], workload: Workload,
                  events: RunEvents, stop: threading.Event, stack: ExitStack,
                  on_server: object, made: Clone | None = None,
                  shared_sampler: Sampler | None = None,
                  shared_cluster: ClusterNodes | None = None,
                  harness: bool = True) -> _Session:
    """The cluster, the server, the checks that need it, the workload set up under the
    run's tag; the sampler and the harness's own cost. Nothing is written before the
    workload's own check (the table's shape) passes."""
    started = _now()
    # The cluster first: a node with other versions is refused before any row is written.
    cluster = shared_cluster
    if cluster is None and config.cluster is not None:
        cluster = connect_cluster(config.cluster, config.nodes, stack,
                                  timeout_s=config.cluster_timeout_s)
    if cluster is not None and config.rtt_ms is not None:
        _check_relay_reachable(cluster)
    target, embedded = _server(config, classes, stack, on_server)
    relay = _relay(config, target, stack)  # before the clone: a refused port makes nothing
    public = replace(config, target=target) if config.target is None else config
    run_tag = new_run_tag()
    target, clone = _into_clone(config, target, run_tag, stack, events, made)
    admin = AdminSession(target)
    stack.callback(admin.close)
    if "pooler" in config.via and config.pooler_dsn is not None:
        _check_pooler(config.pooler_dsn)  # before anything is written or measured
    facts = admin.call(server_facts)
    events.connected.fire(target=target, server=facts)
    admin.call(lambda c: check_capacity(c, _connections_needed(config, classes), config.workers,
                                        pool_max=config.pool_max
                                        if any(cls.pooled for cls in classes) else None))
    workload.set_up(admin, target, run_tag=run_tag, embedded=embedded is not None,
                    typed_params=any(cls.script_mode(config.protocol, prepared_statements=True)
                                     .typed_params for cls in classes))
    server_cores = os.cpu_count() if _is_local(target) else None
    app_name = target.get("application_name") or APPLICATION_NAME
    sampler, sampler_failed = shared_sampler, None
    if config.sample_interval_s and sampler is None:
        # Opened now, before any strategy's snapshot: its session is in no window.
        sampler, sampler_failed = _open_sampler(config, target, embedded)
        if sampler is not None:
            stack.callback(sampler.close)
    events.run_started.fire(run_tag=workload.run_tag, table=config.table)
    session = _Session(
        config=config, events=events, stop=stop, target=target,
        settings=StrategySettings(target=_strategy_target(
                                      config, workload,
                                      relay.target_for(target) if relay else target),
                                  workers=config.workers, pool_min=config.pool_min,
                                  pool_max=config.pool_max,
                                  acquire_timeout_s=config.acquire_timeout_s),
        admin=admin, workload=workload,
        probe=ServerProbe(admin, config.table, app_name), sampler=sampler, cluster=cluster,
        server_cores=server_cores, started=started,
        environment=_environment(config, facts, clone, cluster), public=public, relay=relay)
    if sampler_failed is not None:
        session.not_measured["server activity sampler"] = sampler_failed
    if harness:
        session.harness = _harness(session, classes)
    session.rtt = _injected_rtt(session, classes)
    return session


def _check_pooler(pooler: ConnectionTarget) -> None:
    """That ``--pooler-dsn`` takes a connection: else ConnectError in one line (its pool
    would otherwise wait out its timeout, or its first failure end the run mid-way)."""
    try:
        connect_admin(pooler).close()
    except ConnectError as exc:
        raise ConnectError(f"--pooler-dsn: {exc}") from None


def _environment(config: RunConfig, facts: dict[str, object], clone: Clone | None,
                 cluster: ClusterNodes | None) -> dict[str, object]:
    """The run's machine, server and packages; its clone and cluster nodes, if any."""
    environment = manifest(facts, embedded=config.target is None)
    if clone is not None:
        environment["clone"] = clone.describe()
    if cluster is not None:
        environment["cluster"] = cluster.describe(config.workers, config.pool_min,
                                                  config.pool_max)
    return environment


def _injected_rtt(session: _Session, classes: list[type[StrategyInfo]]) -> RttCheck | None:
    """``--rtt``: the round trip the relay injects, measured at the run's concurrency (an
    optional measurement: where it fails, the run says why)."""
    config = session.config
    if session.relay is None or config.rtt_ms is None:
        return None
    asked = config.rtt_ms
    concurrency = min(config.workers, max(c.connections_needed(
        workers=config.workers, pool_min=config.pool_min, pool_max=config.pool_max)
        for c in classes))
    return session.optional("injected round trip (--rtt)", lambda: check_rtt(
        _strategy_target(config, session.workload, session.target), session.settings.target,
        asked_ms=asked, concurrency=concurrency))


def _relay(config: RunConfig, target: ConnectionTarget,
           stack: ExitStack) -> RelayProcess | None:
    """``--rtt``: the delay relay in front of the server, stopped with ``stack``."""
    if config.rtt_ms is None:
        return None
    relay = RelayProcess(target, config.rtt_ms, port=config.relay_port)
    relay.start()
    stack.callback(relay.stop)
    return relay


def _server(config: RunConfig, classes: list[type[StrategyInfo]], stack: ExitStack,
            on_server: object) -> tuple[ConnectionTarget, EmbeddedServer | None]:
    """The user's target, or an embedded server sized for the run (stopped with ``stack``)."""
    needed = max(max(c.connections_needed(workers=config.workers, pool_min=config.pool_min,
                                          pool_max=config.pool_max),
                     config.pool_max if c.pooled else 0) for c in classes)
    return _target_or_server(config.target, tls=config.tls, connections=needed, stack=stack,
                             keep=config.keep_server, on_server=on_server)


def _target_or_server(target: ConnectionTarget | None, *, tls: bool, connections: int,
                      stack: ExitStack, keep: bool = False, on_server: object = None
                      ) -> tuple[ConnectionTarget, EmbeddedServer | None]:
    """``target`` (``sslmode=require`` with ``tls``), or, if None, an embedded server for
    ``connections`` at once besides poolbench's own (TLS on, with a self-signed
    certificate, with ``tls``), stopped with ``stack`` unless ``keep``; ``on_server`` is
    called with it once it is up (the CLI prints a kept server's DSN)."""
    if target is not None:
        return (target.requiring_tls() if tls else target), None
    server = EmbeddedServer(max_connections=max(100, connections + HEADROOM_CONNECTIONS),
                            keep=keep, tls=tls)
    started = server.start()
    stack.callback(server.stop)
    if callable(on_server):
        on_server(server)
    return started, server


def _into_clone(config: RunConfig, target: ConnectionTarget, run_tag: str, stack: ExitStack,
                events: RunEvents, made: Clone | None) -> tuple[ConnectionTarget, Clone | None]:
    """``--clone``: from here on the run's database (every strategy, route, process, node,
    pgbench) is a copy of ``target``'s, dropped with ``stack``; or ``made``, a sweep's."""
    if not config.clone:
        return target, None
    clone = made or stack.enter_context(ClonedDatabase(target, run_tag))
    if made is None:
        events.clone_ready.fire(clone=clone)
    return clone.target, clone


def _connections_needed(config: RunConfig,
                        classes: list[type[StrategyInfo]]) -> dict[str, int]:
    """What each strategy on each route holds on the server at once: a pooler route holds
    the pooler's pool."""
    return {f"{cls.name}@{route}" if route != "direct" else cls.name:
            cls.connections_needed(workers=config.workers, pool_min=config.pool_min,
                                   pool_max=config.pool_max)
            if route in ("direct", "pooler") else config.effective_pooler_size
            for cls in classes for route in config.via}


def _harness(session: _Session, classes: list[type[StrategyInfo]]) -> dict[str, float]:
    """poolbench's own cost per operation, on the path the strategies will run: their
    executor kinds, one process's share of the workers, the run's progress hook (before
    any strategy starts, so progress views show nothing of it)."""
    config, cluster, events = session.config, session.cluster, session.events
    process_workers = share(config.workers, 0,
                            len(cluster.nodes) if cluster else config.processes)
    return {kind: harness_us_per_op(kind, process_workers,
                                    lambda n: events.progress.fire(advance=n))
            for kind in dict.fromkeys(executor_kind(c) for c in classes)}


@dataclass(frozen=True)
class _Window:
    """What one strategy measured in one window: one trial's worth (``--interleave``) or
    all of its trials."""

    measurement: StrategyMeasurement
    check: CrossCheck | None
    pooler: PoolerCheck | None
    activity: ActivitySummary | None
    rows_deleted: int
    prepared_statements: bool


def window_schedule(units: int, *, trials: int, interleave: bool) -> list[tuple[int | None, int]]:
    """The windows a run measures, in order, as (counted trial or None for all, unit).

    ``--interleave``: one counted trial at a time (each after its own warm-up), the units'
    order rotating every round (as hyperfine and asv alternate commands), so a drift of
    the machine falls on every unit alike."""
    if interleave and trials > 1 and units > 1:
        return [(t, (i + t) % units) for t in range(trials) for i in range(units)]
    return [(None, i) for i in range(units)]


def _measure_strategies(session: _Session,
                        classes: list[type[StrategyInfo]]) -> tuple[StrategyResult, ...]:
    """Every strategy on every route, window by window; each window is checked against the
    server on its own, and a strategy's result is exported once its last window is done."""
    config = session.config
    units = [(c, r) for c in classes for r in config.via]
    schedule = window_schedule(len(units), trials=config.trials, interleave=config.interleave)
    last = {unit: i for i, (_, unit) in enumerate(schedule)}
    order = {(c.name if r == "direct" else f"{c.name}@{r}"): i for i, (c, r) in enumerate(units)}
    windows: dict[int, list[_Window]] = {}
    for i, (trial, unit) in enumerate(schedule):
        if session.stop.is_set():
            break
        cls, route_name = units[unit]
        windows.setdefault(unit, []).append(_measure_window(session, cls, route_name, trial))
        if i < last[unit] and not session.stop.is_set():
            continue  # this strategy has trials to come in later rounds
        parts = windows.pop(unit)
        result = strategy_result(
            combine.measurements([w.measurement for w in parts]),
            leftover_rows_deleted=sum(w.rows_deleted for w in parts),
            server=combine.cross_checks([w.check for w in parts]), route=route_name,
            prepared_statements=parts[0].prepared_statements,
            pooler=combine.pooler_checks([w.pooler for w in parts]),
            activity=combine.activities([w.activity for w in parts]),
            protocol_note=session.workload.protocol_note(
                cls, prepared_statements=parts[0].prepared_statements))
        session.done = tuple(sorted((*session.done, result), key=lambda s: order[s.name]))
        session.events.strategy_finished.fire(results=session.assemble(session.done,
                                                                       partial=True))
    return session.done


def _measure_window(session: _Session, cls: type[StrategyInfo], route_name: str,
                    trial: int | None) -> _Window:
    """One strategy on one route for one window, between the server's (and the pooler's)
    counters; on an error the run's rows go and what was measured so far is written,
    marked partial, before the error."""
    config, sampler, admin = session.config, session.sampler, session.admin
    try:
        with _open_route(session, route_name) as route:
            # What the window needs is made first (a mix's rows: not measured, outside
            # the cross-check's window, tagged with the run's tag like every row).
            work = session.workload.window(admin, cls,
                                           prepared_statements=route.prepared_statements)
            plan = work.plan
            statements = (identify(admin.call, plan, installed=session.probe.has_statements)
                          if plan is not None else None)
            counters_before = session.probe.snapshot(statements)
            sampled_before = sampler.statements if sampler else 0
            reconnected_before = sampler.reconnects if sampler else 0
            if sampler is not None:  # its process may have died: optional, as at its start
                session.optional("server activity sampler", sampler.start)
            session.optional(f"pooler console ({route_name})", route.begin)
            measurement = run_strategy(
                cls, replace(session.settings, target=route.target,
                             prepared_statements=route.prepared_statements),
                work=work, warmup=config.warmup, trials=config.trials, events=session.events,
                stop=session.stop, pace=config.pace, processes=config.processes,
                cluster=session.cluster, window=trial,
                label=cls.name if route_name == "direct" else f"{cls.name}@{route_name}")
            activity = (session.optional("server activity sampler", sampler.stop)
                        if sampler is not None else None)
            pooler = session.optional(f"pooler console ({route_name})", lambda: route.end(
                attempts=_attempts(measurement),
                extra=cls.extra_traffic(prepared_statements=route.prepared_statements)))
    except PoolbenchError as exc:
        # A reported failure (a node lost, a pooler gone...).
        session.delete_own_rows()
        exc.results = session.finish(session.done, partial=True)
        raise
    except BaseException:
        session.delete_own_rows()
        raise
    # The route's PgBouncer has stopped: its server connections exit and publish their
    # counters (a pooler the user runs keeps its own: the server's counts are awaited).
    check = _cross_check(session.probe, counters_before, measurement, work, statements,
                         through_pooler=route_name != "direct",
                         pooler_stays_open=route.keeps_server_connections,
                         sampler_statements=(sampler.statements - sampled_before)
                         if sampler else 0,
                         sampler_sessions=(sampler.reconnects - reconnected_before)
                         if sampler else 0)
    return _Window(measurement, check, pooler, activity, session.delete_own_rows(),
                   route.prepared_statements)


def _measure_connect_cost(session: _Session, classes: list[type[StrategyInfo]]
                          ) -> tuple[ConnectCost, ...]:
    """What each of the run's new connections cost, broken down (docs: *What a new
    connection costs*), at one thread and at the run's concurrency, through each route
    the run's no-pool strategies took (a route of its own, outside every strategy's
    window: the probe's queries are in no cross-check). An optional measurement: where
    it fails, the run says why and completes."""
    config = session.config
    drivers = tuple(dict.fromkeys(
        c.driver for c in classes if not c.pooled and c.driver in PROBED_DRIVERS))
    if not drivers or not config.connect_samples or session.stop.is_set():
        return ()

    def through(route_name: str) -> ConnectCost:
        with _open_route(session, route_name) as route:
            return connect_cost(route.target, route=route_name,
                                samples=max(config.connect_samples, config.workers),
                                concurrency=tuple(sorted({1, config.workers})),
                                drivers=drivers)

    costs = (session.optional(f"connect cost via {r}", lambda r=r: through(r))
             for r in config.via)
    return tuple(c for c in costs if c is not None)


def _open_route(session: _Session, route_name: str) -> AbstractContextManager[Route]:
    """The route ``route_name`` for the run's strategies (a PgBouncer of its own, if any).
    With ``--rtt`` a pooler sits by the server: a relay of the route's own goes between the
    strategies and the pooler, which reaches the server directly (``--pooler-near app``:
    the strategies reach the pooler directly, and it reaches the server through the run's
    relay, as the direct route does)."""
    config = session.config
    by_server = (session.relay is not None and route_name != "direct"
                 and config.pooler_near == "server")
    route = open_route(route_name, _strategy_target(config, session.workload, session.target)
                       if by_server
                       else session.settings.target,
                       pool_size=config.effective_pooler_size,
                       max_clients=2 * config.workers + PGBOUNCER_SPARE_CLIENTS,
                       keep_prepared=config.keep_prepared, pooler=config.pooler_dsn,
                       pgbouncer=config.pgbouncer)
    return _behind_relay(route, config.rtt_ms) if by_server and config.rtt_ms is not None \
        else route


@contextlib.contextmanager
def _behind_relay(route: AbstractContextManager[Route], rtt_ms: float) -> Iterator[Route]:
    """``route`` with a relay of its own in front of its pooler, stopped with it."""
    with route as ready, RelayProcess(ready.target, rtt_ms) as relay:
        yield replace(ready, target=relay.target_for(ready.target))


def _calibrate(session: _Session, done: tuple[StrategyResult, ...]) -> Calibration | None:
    """``--baseline pgbench``: the same statements run by pgbench on the same server; an
    optional measurement: if pgbench fails, the run says why and completes."""
    config = session.config
    if config.baseline != "pgbench" or session.stop.is_set():
        return None
    if session.workload.baseline == "scripts":
        return _calibrate_scripts(session, done)
    session.events.calibration_started.fire(seconds=config.baseline_seconds * 6)
    try:
        calibrated = session.optional("pgbench calibration", lambda: calibrate(
            session.admin, session.relay.target_for(session.target) if session.relay
            else session.target, session.workload.table, clients=config.workers,
            seconds=config.baseline_seconds, stop=session.stop, rate=config.rate))
    finally:
        session.delete_own_rows()
    return None if calibrated is None else replace(calibrated, ratios=ratios(calibrated, done))


def _calibrate_scripts(session: _Session, done: tuple[StrategyResult, ...]
                       ) -> Calibration | None:
    """The run's scripts run by pgbench (check/script_baseline.py), for ``--duration``
    seconds (else ``--baseline-seconds``), in the strategies' sessions (read-only ones
    included), paced with ``-R`` as ``--rate`` paces the strategies; each strategy's whole
    phase of scripts against pgbench's tps, and each script's against pgbench's tps of it."""
    config = session.config
    seconds = config.duration_s or config.baseline_seconds
    session.events.calibration_started.fire(seconds=2 * max(1, round(seconds)))
    calibrated = session.optional("pgbench calibration", lambda: calibrate_scripts(
        session.settings.target, config.scripts, protocol=config.protocol, scale=config.scale,
        seed=config.script_seed, clients=config.workers, seconds=seconds, stop=session.stop,
        rate=config.rate))
    return None if calibrated is None else replace(
        calibrated, ratios=ratios(calibrated, done, SCRIPT_PHASES))


def init_pgbench_tables(*, target: ConnectionTarget | None, scale: int = 1,
                        allow_writes: bool = False) -> PgbenchTables:
    """``poolbench init``: pgbench's tables for its built-in scripts at ``scale``, made on
    ``target`` by pgbench's own initializer (db/pgbench_tables.py): refused, touching
    nothing, if any of them exists. It writes to a database poolbench did not start:
    ``allow_writes`` is the user's say-so."""
    if target is None:
        raise ConfigError("init makes pgbench's tables on a server you keep: give --dsn (or "
                          "DATABASE_URL, the seed's DB_* variables, PG*); `poolbench server` "
                          "starts one and prints its DSN. On the embedded server, run -b "
                          "makes them itself")
    if not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"-s/--scale must be a whole number >= 1, got {scale!r}")
    if not allow_writes and not target.embedded:
        rows = ROWS_PER_SCALE["pgbench_accounts"] * scale
        raise ConfigError(f"init writes to {target.masked()}: it creates {', '.join(TABLES)} "
                          f"({rows:,} accounts at scale {scale}); give --allow-writes to "
                          "confirm")
    return init_tables(find_pgbench(), target, scale=scale)


def measure_connect_cost(*, target: ConnectionTarget | None = None, samples: int = 200,
                         concurrency: tuple[int, ...] = (1, 8),
                         drivers: tuple[str, ...] = PROBED_DRIVERS, tls: bool = False,
                         on_server: object = None) -> ConnectCost:
    """``poolbench connect-cost``: a new connection's cost, slice by slice, on ``target`` or
    on an embedded server; with ``tls``, over TLS (``sslmode=require``; the embedded server
    with a self-signed certificate)."""
    if samples < 1 or not concurrency or min(concurrency) < 1:
        raise ConfigError("--samples and --concurrency must be whole numbers >= 1")
    with ExitStack() as stack:
        target, _ = _target_or_server(target, tls=tls, connections=max(concurrency),
                                      stack=stack, on_server=on_server)
        AdminSession(target).close()  # a clear error if it cannot connect at all
        return connect_cost(target, samples=samples, concurrency=concurrency, drivers=drivers)


def _open_sampler(config: RunConfig, target: ConnectionTarget,
                  embedded: EmbeddedServer | None) -> tuple[Sampler | None, str | None]:
    """The activity sampler's process for a run (or a sweep's points), or why not: it is
    optional, the run goes on without its samples."""
    app_name = target.get("application_name") or APPLICATION_NAME
    try:
        return Sampler(target, (app_name,), config.sample_interval_s,
                       server=ServerProcesses.find(
                           data_dir=str(embedded.data_dir) if embedded else None,
                           port=int(target.get("port") or 5432)
                           if _is_local(target) else None)), None
    except Exception as exc:
        return None, reason(exc, target)


def _is_local(target: ConnectionTarget) -> bool:
    """Whether the server runs on this machine (its core count is then ours). Not said of a
    list of hosts or ports (``host=a,b``): which one serves is libpq's choice."""
    if target.lists_hosts:
        return False
    host = target.get("host") or ""
    return host in ("", "127.0.0.1", "localhost", "::1") or host.startswith("/")


def _strategy_target(config: RunConfig, workload: Workload,
                     target: ConnectionTarget) -> ConnectionTarget:
    """The target the strategies connect to: the run's, plus ``--statement-timeout``, and
    read-only sessions where the workload asks (scripts on a server poolbench did not
    start)."""
    if workload.read_only():
        target = target.with_settings(default_transaction_read_only="on")
    if config.statement_timeout_s is None:
        return target
    return target.with_settings(statement_timeout=str(round(config.statement_timeout_s * 1000)))


def _attempts(m: StrategyMeasurement) -> int:
    """Operations a strategy attempted (successful and failed), warm-up included."""
    return sum(p.ops + sum(p.errors.values()) for p in m.phases)


def _cross_check(probe: ServerProbe, before: ServerCounters, m: StrategyMeasurement,
                 work: WindowWork, statements: ScriptStatements | None = None,
                 *, through_pooler: bool = False, pooler_stays_open: bool = False,
                 sampler_statements: int = 0, sampler_sessions: int = 0) -> CrossCheck | None:
    """The server's counters over one strategy against ours (warm-up included); a run of
    scripts by the transactions their complete runs make. Behind a pooler that stays open
    (the user's), read once the server's counts have reached ours, not once its
    connections have closed.

    None for an interrupted strategy: the server counted the cut phase, we did not.
    """
    if m.interrupted:
        return None
    ops = work.ops_by_phase([(phase.phase, phase.ops) for phase in m.phases])
    scripts = work.script_counts(ops, strategy_extra=m.strategy.pooler_extra)
    settled: Settled
    if pooler_stays_open:
        settled = probe.wait_counted(before, expected(
            ops, attempts=_attempts(m), scripts=scripts, sampler_statements=sampler_statements))
    else:
        settled = ("closed" if probe.wait_quiet(since=before, any_name=through_pooler)
                   else "still connected")
    after = probe.snapshot(statements)
    return compare(before, after, ops=dict(ops), attempts=_attempts(m),
                   connections_opened=m.stats.get("connections_opened", 0), settled=settled,
                   probe=probe, through_pooler=through_pooler,
                   sampler_statements=sampler_statements, sampler_sessions=sampler_sessions,
                   scripts=scripts, statements=statements, executions=_executions(m))


def _executions(m: StrategyMeasurement) -> dict[tuple[str, int], int]:
    """Successful executions per (script kind, command index), warm-up included."""
    found: Counter[tuple[str, int]] = Counter()
    for phase in m.phases:
        if phase.statements is not None:
            for index, n in enumerate(phase.statements.count):
                found[phase.phase, index] += n
    return dict(found)


# A sweep's point: (strategy class, pool size, clients, RTT; None: a sweep without --rtt)
Point = tuple[type, int, int, float | None]


@dataclass
class _Sweep:
    """One sweep as it runs: the runs of each point, in the order they ran, and what
    stopped it. ``run_plan`` runs (round, point) pairs; ``adapt`` adds sizes; ``results``
    assembles what was measured."""

    config: RunConfig
    target: ConnectionTarget
    classes: list[Any]
    stop: threading.Event
    on_point: object
    runs: dict[Point, list[tuple[RunResults, StrategyResult]]] = field(default_factory=dict)
    ran: list[tuple[str, int, int]] = field(default_factory=list)  # names, in the order run
    adaptive: dict[str, Any] = field(default_factory=dict)
    interrupted: Interrupted | None = None
    failed: PoolbenchError | None = None
    facts: dict[str, object] = field(default_factory=dict)
    environment: dict[str, object] = field(default_factory=dict)
    clone: Clone | None = None  # --clone: the sweep's copy of the database, every point's
    sampler: Sampler | None = None  # the activity sampler every point's run shares
    stack: ExitStack | None = None  # the sweep's: what it opens for every point
    cluster: ClusterNodes | None = None  # --cluster: reached at the first point, then shared

    @property
    def cut_short(self) -> bool:
        return (self.interrupted is not None or self.failed is not None
                or self.stop.is_set())

    def point(self, key: Point) -> Any:
        from poolbench.analysis.sweep import point_of_runs

        return point_of_runs(self.runs[key], pool_size=key[1], workers=key[2], rtt_ms=key[3])

    def run_plan(self, plan: tuple[tuple[int, Point], ...]) -> None:
        """Each (round, point) of ``plan`` as one run of one counted trial after its
        warm-up; stops at the first interrupt or error of poolbench's (a point over
        capacity, a lost node...), kept for ``results``."""
        total = len(self.ran) + len(plan)
        for done, (_, key) in enumerate(plan, start=len(self.ran) + 1):
            if self.stop.is_set():
                return
            cls, pool, clients, rtt = key
            size = pool or 1  # a no-pool strategy has no pool: its settings are unused
            point_config = replace(self.config, target=self.target, strategies=(cls.name,),
                                   pool_min=size, pool_max=size, workers=clients, trials=1,
                                   out_dir=None,
                                   processes=min(self.config.processes, clients, size),
                                   **_at_distance(self.config, rtt))
            try:
                if self.config.cluster and self.cluster is None and self.stack is not None:
                    self.cluster = connect_cluster(self.config.cluster, self.config.nodes,
                                                   self.stack,
                                                   timeout_s=self.config.cluster_timeout_s)
                result = run(point_config, stop=self.stop, clone=self.clone,
                             sampler=self.sampler, cluster=self.cluster, harness=False)
            except Interrupted as exc:
                self.interrupted = exc
                return
            except PoolbenchError as exc:
                self.failed = exc
                return
            self.facts, self.environment = result.environment.get("server", {}), \
                result.environment
            self.runs.setdefault(key, []).append((result, result.strategies[0]))
            self.ran.append((cls.name, pool, clients, *(() if rtt is None else (rtt,))))
            if callable(self.on_point):
                self.on_point(done, total, self.point(key))

    def adapt(self, keys: list[Point], *, rounds: int, budget_s: float, started: float,
              p99_slo_ms: float | None) -> None:
        """Add the sizes between each recommendation's neighbours (``next_sizes``), round
        by round as the grid ran, until every recommendation is pinned to one step or the
        next size would not end within ``budget_s`` of ``started`` (at the seconds per
        point measured so far)."""
        from poolbench.analysis.plan import fits, schedule

        steps: list[list[list[object]]] = self.adaptive.setdefault("steps", [])
        while not self.cut_short:
            new = _next_points([self.point(k) for k in keys if k in self.runs], keys,
                               self.classes, p99_slo_ms)
            if not new:
                self.adaptive["stopped"] = ("pinned: every recommendation is one step from "
                                            "its neighbours, or its interval holds no "
                                            "unmeasured size")
                return
            spent = time.monotonic() - started
            per_point = spent / len([k for k in keys if k in self.runs])
            affordable = max((k for k in range(1, len(new) + 1) if fits(
                budget_s, spent_s=spent, seconds_per_point=per_point, points=k)), default=0)
            if not affordable:
                self.adaptive["stopped"] = (f"budget: {spent:.0f} of {budget_s:g} s spent; "
                                            f"the next size would take about "
                                            f"{per_point:.0f} s")
                return
            new = new[:affordable]
            steps.append([[cls.name, pool, clients, *(() if rtt is None else (rtt,))]
                          for cls, pool, clients, rtt in new])
            keys += new
            self.run_plan(schedule(new, rounds=rounds, seed=SWEEP_ORDER_SEED + len(steps)))


def _next_points(points: list[Any], keys: list[Point], classes: list[Any],
                 p99_slo_ms: float | None) -> list[Point]:
    """The adaptive step's next points: per pooled curve with a recommendation, the sizes
    ``next_sizes`` proposes between its neighbours (none already planned)."""
    from poolbench.analysis.plan import next_sizes
    from poolbench.analysis.sweep import recommend

    by_name = {cls.name: cls for cls in classes}
    new: list[Point] = []
    for rec in recommend(tuple(points), axis="pool_size", p99_slo_ms=p99_slo_ms,
                         server_cores=None):
        cls = by_name[rec.strategy]
        if rec.pool_size is None or not cls.pooled:
            continue
        sizes = [pool for c, pool, clients, rtt in keys
                 if c is cls and clients == rec.workers and rtt == rec.rtt_ms]
        interval = (rec.interval.low, rec.interval.high) if rec.interval else None
        new += [(cls, size, rec.workers, rec.rtt_ms)
                for size in next_sizes(sizes, rec.pool_size, interval)
                if (cls, size, rec.workers, rec.rtt_ms) not in keys]
    return new


def _sweep_grid(classes: list[Any], pool_sizes: tuple[int, ...],
                workers: tuple[int, ...], rtts: tuple[float | None, ...] = (None,)
                ) -> list[Point]:
    """Every strategy at every (pool size, clients) at each RTT; a strategy without a pool
    once per client count (pool size 0)."""
    return [(cls, p, w, r) for cls in classes for r in rtts
            for p, w in sorted({(p if cls.pooled else 0, w) for p in pool_sizes
                                for w in workers})]


def _at_distance(config: RunConfig, rtt: float | None) -> dict[str, object]:
    """A sweep point's relay settings: its RTT of ``--rtt``'s axis (0: direct, no relay, so
    neither its port nor its place), or the sweep's own without the axis."""
    if rtt is None:
        return {}
    if not rtt:
        return {"rtt_ms": None, "relay_port": None, "pooler_near": "server"}
    return {"rtt_ms": rtt}


def check_rtts(rtts: tuple[float, ...]) -> None:
    """``sweep --rtt 0,1,5``: each from 0 to :data:`RTT_MAX_MS`, each once."""
    from poolbench.config import RTT_MAX_MS

    given = ",".join(f"{r:g}" for r in rtts)
    if not rtts:
        raise ConfigError("--rtt: give the round trips in milliseconds, e.g. 0,1,5")
    bad = [r for r in rtts if not 0 <= r <= RTT_MAX_MS]
    if bad:
        raise ConfigError(f"--rtt {given}: {bad[0]:g} is out of range; give round trips in "
                          f"milliseconds from 0 (direct) to {RTT_MAX_MS:g}")
    if len(set(rtts)) != len(rtts):
        twice = next(r for r in rtts if rtts.count(r) > 1)
        raise ConfigError(f"--rtt {given}: {twice:g} is given twice; name each RTT once")


def sweep(config: RunConfig, *, pool_sizes: tuple[int, ...], workers: tuple[int, ...],
          p99_slo_ms: float | None = None, app_instances: int | None = None,
          stop: threading.Event | None = None, on_point: object = None,
          budget_s: float | None = None, on_clone: object = None,
          rtts: tuple[float, ...] | None = None) -> SweepResults:
    """``poolbench sweep``: every strategy at every (pool size, workers) point, on one
    server; a USL model and a recommendation per (strategy, client count). Strategies
    without a pool are reference lines of a pool-size sweep.

    ``config.trials`` rounds: in each, every point runs once (a normal run of one counted
    trial after its warm-up, on a fresh pool), the points in a fresh random order each
    round (``analysis.plan.schedule``, seed ``SWEEP_ORDER_SEED``), so the machine's drift
    spreads over every size instead of lining up with them. The order run is recorded in
    the results' config (``schedule``).

    A list of pool sizes sweeps the pool (min = max) at each client count; a list of
    workers sweeps concurrency. ``on_point(done, total, point)`` is called after each
    run (and once with ``point`` None when the first begins, the input and the largest
    point's connections checked). On an interrupt, or any error of poolbench's after the
    first point began, the points done so far are written (marked partial) and carried by
    the exception's ``results``.

    ``budget_s`` (``--budget``): after the coarse grid, while the sweep's time so far plus
    the next sizes' (at the seconds per point measured so far) stays within it, add the
    sizes between each recommendation's neighbours (``analysis.plan.next_sizes``: 8 and
    16 measured, 8 recommended: try 12) until every recommendation is pinned to one step.
    None: the grid alone. What each step added and why it stopped is in the results'
    config (``adaptive``).

    ``config.clone``: one copy of the target's database for the whole sweep, every point
    run in it, dropped at the end however the sweep ends; ``on_clone(clone)`` is called
    once it is made.

    ``rtts`` (``--rtt 0,1,5``): the RTT as one more axis: every point at each, its runs
    through a relay of that many milliseconds (0: direct, no relay); curves, models and
    recommendations per (strategy, client count, RTT). None: every point at
    ``config.rtt_ms``, the points' ``rtt_ms`` None.
    """
    from poolbench.analysis.plan import schedule

    if not pool_sizes or not workers or min(pool_sizes) < 1 or min(workers) < 1:
        raise ConfigError("--pool-sizes and --workers must be whole numbers >= 1")
    if budget_s is not None and not budget_s > 0:
        raise ConfigError(f"--budget {budget_s:g}: give the sweep's seconds, more than 0")
    if rtts is not None:
        check_rtts(rtts)
    axis = "pool_size" if len(pool_sizes) > 1 or len(workers) == 1 else "workers"
    classes = [load_strategy(name) for name in config.strategies]
    if config.cluster is None:
        _check_open_files(classes, workers=max(workers), pool_min=max(pool_sizes),
                          pool_max=max(pool_sizes), processes=config.processes)
    grid = _sweep_grid(classes, pool_sizes, workers, (None,) if rtts is None else rtts)
    if config.out_dir is not None:
        check_writable(config.out_dir)
    started = time.monotonic()  # --budget counts from here
    rounds = max(1, config.trials)
    keys = list(grid)
    with ExitStack() as stack:
        target, server = _target_or_server(config.target, tls=config.tls,
                                           connections=max(pool_sizes) + max(workers),
                                           stack=stack)
        if server is not None:
            make_builtin_tables(config, target)
        events = RunEvents()
        if callable(on_clone):
            events.clone_ready.add_listener(lambda clone: on_clone(clone))
        target, clone = _into_clone(config, target, new_run_tag(), stack, events, None)
        # The largest point is refused now, not after the smaller ones have run.
        largest = replace(config, target=target, workers=max(workers),
                          pool_min=max(pool_sizes), pool_max=max(pool_sizes))
        admin = AdminSession(target)
        try:
            admin.call(lambda c: check_capacity(
                c, _connections_needed(largest, classes), largest.workers,
                pool_max=largest.pool_max if any(cls.pooled for cls in classes) else None))
        finally:
            admin.close()
        sampler = None
        if config.sample_interval_s:  # one process for every point (each point's runs: if
            sampler, _ = _open_sampler(config, target, None)  # it fails, they say why)
            if sampler is not None:
                stack.callback(sampler.close)
        state = _Sweep(config, target, classes, stop or threading.Event(), on_point,
                       adaptive={"budget_s": budget_s, "steps": [], "stopped": None},
                       clone=clone, sampler=sampler, stack=stack)
        plan = schedule(grid, rounds=rounds, seed=SWEEP_ORDER_SEED)
        if callable(on_point):
            on_point(0, len(plan), None)
        state.run_plan(plan)
        if budget_s is not None and axis == "pool_size":
            state.adapt(keys, rounds=rounds, budget_s=budget_s, started=started,
                        p99_slo_ms=p99_slo_ms)
    results = _sweep_results(state, keys, axis=axis, pool_sizes=pool_sizes, workers=workers,
                             p99_slo_ms=p99_slo_ms, app_instances=app_instances, rtts=rtts)
    if config.out_dir is not None:
        from poolbench.report.sweep_view import write_sweep

        write_sweep(results, config.out_dir, chart=config.chart)
    if state.failed is not None:
        state.failed.results = results
        raise state.failed
    if state.cut_short:
        raise Interrupted("interrupted; the sweep's points so far are written", results)
    return results


def _sweep_results(state: _Sweep, keys: list[Point], *, axis: str,
                   pool_sizes: tuple[int, ...], workers: tuple[int, ...],
                   p99_slo_ms: float | None, app_instances: int | None,
                   rtts: tuple[float, ...] | None = None) -> SweepResults:
    """The points measured (in grid order), their models, findings and recommendations."""
    from poolbench.analysis.findings import sweep_findings
    from poolbench.analysis.sweep import SWEEP_SCHEMA_VERSION, SweepResults, models, recommend

    config, facts = state.config, state.facts
    order = {cls: i for i, cls in enumerate(state.classes)}
    points = tuple(state.point(key) for key in sorted(
        keys, key=lambda k: (order[k[0]], k[3] or 0, k[1], k[2])) if key in state.runs)
    cores = os.cpu_count() if config.target is None or _is_local(config.target) else None
    usable = facts.get("max_connections")
    return SweepResults(
        schema_version=SWEEP_SCHEMA_VERSION, partial=state.cut_short, axis=axis,
        config={**config.public_dict(), "pool_sizes": list(pool_sizes),
                "workers": list(workers), "p99_slo_ms": p99_slo_ms,
                "app_instances": app_instances, "rounds": max(1, config.trials),
                "schedule": [list(r) for r in state.ran], "adaptive": state.adaptive,
                **({} if rtts is None else {"rtts_ms": list(rtts)})},
        environment=state.environment, points=points, models=models(points, axis),
        findings=sweep_findings(points, axis, server_cores=cores),
        recommendations=recommend(points, axis=axis, p99_slo_ms=p99_slo_ms,
                                  server_cores=cores, app_instances=app_instances,
                                  max_connections=int(usable) - int(
                                      facts.get("superuser_reserved_connections") or 0)
                                  if usable else None))
