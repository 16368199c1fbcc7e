"""Findings: rules over a run's measurements that name a known pathology, its evidence,
and the fix. Each rule is a pure function of the result model (and the server's core
count when the server is on this machine); docs/findings.md lists them with their thresholds.
"""

from __future__ import annotations

from collections.abc import Callable

from poolbench.analysis.sweep import SweepPoint, curves, references
from poolbench.results import (
    ActivitySummary,
    Finding,
    PhaseResult,
    RunResults,
    StrategyResult,
)

LOCK_SHARE = 0.2  # of active backend samples waiting on a heavyweight lock
IDLE_IN_TRANSACTION_SHARE = 0.05  # of backend samples
CONNECT_SHARE = 0.5  # of a no-pool operation's mean latency spent connecting
DISTANCE_RTT_MS = 1.0  # "connect-bound at distance": the RTT of a database in the same zone
NEAR_MAX_CONNECTIONS = 0.8
CLIENT_BOUND_CPU_PCT = 75.0  # of one core per client process, over the whole strategy (the
# window includes opening and closing the pool, so a GIL-bound process shows 80-100%)


def _pool_too_small(s: StrategyResult, run: RunResults, cores: int | None) -> Finding | None:
    if not s.pooled or s.activity is None or not s.phases:
        return None
    waiting = [p for p in s.phases if p.acquire.p50_us > p.execute.p50_us > 0]
    pool_max = int(run.config.get("pool_max") or 0)
    if not waiting or s.activity.active_median >= pool_max:
        return None
    if cores is not None and s.activity.active_median >= cores:
        return None  # the server's cores are busy: a bigger pool would only queue there
    if s.activity.wait_shares.get("Lock", 0.0) >= LOCK_SHARE:
        return None  # its backends queue on a lock: more would queue there too (lock contention)
    worst = max(waiting, key=lambda p: p.acquire.p50_us)
    return Finding("pool too small", s.name,
                   f"{worst.phase}: waiting for a connection p50 {worst.acquire.p50_us / 1000:.2f}"
                   f" ms > the statement p50 {worst.execute.p50_us / 1000:.2f} ms, while the "
                   f"server had {s.activity.active_median:g} active backends (median) of a pool "
                   f"of {pool_max}",
                   "grow the pool (--pool-max), or run `poolbench sweep` to find the size")


def _pool_churn(s: StrategyResult, run: RunResults, cores: int | None) -> Finding | None:
    # Per window: --interleave opens a fresh pool in each, which opens its minimum again.
    opened = max((w.get("connections_opened", 0) for w in s.window_stats),
                 default=s.stats.get("connections_opened", 0))
    pool_max = int(run.config.get("pool_max") or 0)
    if not s.pooled or s.route != "direct" or opened <= 2 * pool_max:
        return None
    return Finding("pool churn", s.name,
                   f"{opened:,} connections opened for a pool of at most {pool_max}: the pool "
                   "closes connections it gets back (psycopg2's pools above minconn, "
                   "SQLAlchemy's QueuePool above pool_size)",
                   "keep them: set the pool's minimum to its maximum (--pool-min = --pool-max)")


def lock_contention(name: str, activity: ActivitySummary | None) -> Finding | None:
    share = activity.wait_shares.get("Lock", 0.0) if activity else 0.0
    if activity is None or share < LOCK_SHARE:
        return None
    top = ", ".join(k for k in activity.wait_events if k.startswith("Lock:"))
    return Finding("lock contention", name,
                   f"{share:.0%} of active backend samples waited on a lock ({top})",
                   "find the holder (pg_locks joined to pg_stat_activity) and shorten its "
                   "transaction; more connections will not help")


def idle_in_transaction(name: str, activity: ActivitySummary | None) -> Finding | None:
    share = activity.idle_in_transaction_share if activity else 0.0
    if share < IDLE_IN_TRANSACTION_SHARE:
        return None
    return Finding("idle in transaction", name,
                   f"{share:.0%} of the benchmark's backend samples were 'idle in "
                   "transaction': a connection held a transaction open between statements",
                   "use autocommit for single statements, or commit (or roll back) reads too")


def _connect_bound(s: StrategyResult, run: RunResults, cores: int | None) -> Finding | None:
    if s.pooled or not s.phases:
        return None
    connect = sum(p.acquire.mean_us for p in s.phases)
    total = sum(p.latency.mean_us for p in s.phases)
    if not total or connect / total <= CONNECT_SHARE:
        return None
    return Finding("connect-bound", s.name,
                   f"connecting took {connect / total:.0%} of each operation's time "
                   f"(mean {connect / len(s.phases) / 1000:.2f} ms per connect)",
                   "use a pool (an app pool such as psycopg_pool, or PgBouncer)")


def _connect_bound_at_distance(s: StrategyResult, run: RunResults,
                                cores: int | None) -> Finding | None:
    at = next((d for d in run.distances
               if d.strategy == s.name and d.rtt_ms == DISTANCE_RTT_MS), None)
    if s.pooled or at is None or at.connect_ms is None or not at.operation_ms:
        return None
    share = at.connect_ms / at.operation_ms
    if share <= CONNECT_SHARE:
        return None
    saves = (f"; {at.pooled_by} would save {at.gain_pct:.0f}% of each operation there"
             if at.gain_pct is not None else "")
    return Finding("connect-bound at distance", s.name,
                   f"at {DISTANCE_RTT_MS:g} ms RTT a new connection costs {at.connect_ms:.2f} ms "
                   f"({at.connect_round_trips} round trips), {share:.0%} of each operation's "
                   f"{at.operation_ms:.2f} ms (projected from this run's figures at "
                   f"{at.measured_at_ms:g} ms added RTT: docs/distance.md){saves}",
                   "use a pool (an app pool such as psycopg_pool, or PgBouncer beside the "
                   "application): a pooled operation pays no connect")


def _near_max_connections(s: StrategyResult, run: RunResults,
                          cores: int | None) -> Finding | None:
    limit = run.environment.get("server", {}).get("max_connections")
    if not s.activity or not limit:
        return None
    if s.activity.backends_max <= NEAR_MAX_CONNECTIONS * int(limit):
        return None
    return Finding("near max_connections", s.name,
                   f"{s.activity.backends_max} backends at once of max_connections={limit}",
                   "pool (fewer, reused connections), or put PgBouncer in front; raising "
                   "max_connections costs the server memory per backend")


def _client_bound(s: StrategyResult, run: RunResults, cores: int | None) -> Finding | None:
    a = s.activity
    if a is None or a.server_cpu_s is None or not a.seconds:
        return None
    processes = int(run.config.get("processes") or 1)
    client = a.client_cpu_s / a.seconds * 100 / processes
    server = a.server_cpu_s / a.seconds * 100
    if client < CLIENT_BOUND_CPU_PCT or (cores is not None and server >= 50 * cores):
        return None
    return Finding("client-bound", s.name,
                   f"each client process used {client:.0f}% of a core while the server used "
                   f"{server:.0f}% (of {cores or '?'} cores): the measured figure is the "
                   "client's limit, not the server's",
                   "spread the load generator: --processes N, --cluster, or more cores")


def not_steady(name: str, phases: tuple[PhaseResult, ...]) -> Finding | None:
    """Counted trials whose operations per 0.1 s never settled (MSER-5, measure/steady.py);
    a mix's kinds are judged in the whole mix."""
    unsettled = [f"trial {t.trial} of {name} {p.phase}" for p in phases
                 if not p.phase.startswith(("mix:", "script:"))
                 for t in p.trials if t.steady is not None and t.steady.settled is False]
    if not unsettled:
        return None
    return Finding("not steady", name,
                   f"{', '.join(unsettled)} never settled (MSER-5: White 1997, on operations "
                   "per 0.1 s): the warm-up lasts half the trial or more, or throughput drifts "
                   "all along, so the trial's figure is not a steady state's",
                   "lengthen --duration or --warmup (--warmup-seconds)")


def activity_findings(name: str, activity: ActivitySummary | None) -> tuple[Finding, ...]:
    """The rules that need only what the sampler saw (usable on any sampled workload)."""
    return tuple(f for rule in (lock_contention, idle_in_transaction)
                 if (f := rule(name, activity)) is not None)


RULES: tuple[Callable[[StrategyResult, RunResults, int | None], Finding | None], ...] = (
    _pool_too_small, _pool_churn, lambda s, run, cores: lock_contention(s.name, s.activity),
    lambda s, run, cores: idle_in_transaction(s.name, s.activity), _connect_bound,
    _connect_bound_at_distance, _near_max_connections, _client_bound,
    lambda s, run, cores: not_steady(s.name, s.phases))


def findings(run: RunResults, *, server_cores: int | None) -> tuple[Finding, ...]:
    return tuple(f for s in run.strategies for rule in RULES
                 if (f := rule(s, run, server_cores)) is not None)


# What the extra backends of a sweep's largest point wait on (the largest share of their
# active samples, by wait_event_type; CPU: no wait event), and what follows from it:
# (rule, what they queue on, the fix; {shrink}: toward the knee, the smallest N with
# 95% of the best throughput).
BOTTLENECKS: dict[str, tuple[str, str, str]] = {
    "CPU": ("oversubscription", "the server's cores",
            "{shrink}: the server runs only so many backends at once, "
            "the rest queue for its cores"),
    "Lock": ("lock contention", "a heavyweight lock (a row or table another transaction "
             "holds), not on the server's cores",
             "more connections only lengthen the lock's queue: shorten the transactions that "
             "hold it (pg_locks joined to pg_stat_activity names the holder), spread the "
             "writes over more rows, and {shrink}"),
    "LWLock": ("LWLock contention", "the server's internal locks (LWLock: WAL insertion, "
               "buffer mapping, the lock manager)",
               "{shrink}: fewer backends contend less for the server's "
               "internal locks (pg_stat_activity.wait_event names which one)"),
    "IO": ("I/O-bound", "disk I/O",
           "{shrink}: more backends only deepen the disk's queue; beyond "
           "that, faster storage, or more memory (shared_buffers) for reads"),
    "Client": ("client-bound", "their client (ClientRead/ClientWrite: the load generator or "
               "the network)",
               "the server waits for its clients, not the reverse: spread the load generator "
               "(--processes N, --cluster) or look at the network; the pool size is not "
               "the limit"),
}


def _where(ns: list[int], clients: int | None, rtt_ms: float | None = None) -> str:
    said = ([f"{clients} clients"] if clients else []) + (
        [] if rtt_ms is None else [f"{rtt_ms:g} ms RTT"])
    return "at " + ", ".join(str(n) for n in ns) + (f" ({', '.join(said)})" if said else "")


def _bottleneck(curve: tuple[SweepPoint, ...], axis: str, clients: int | None,
                server_cores: int | None, rtt_ms: float | None = None) -> Finding | None:
    """The extra backends of the largest point bought no throughput and their statements
    waited inside the server: name what they waited on, and the fix that follows."""
    mine = [p for p in curve if not p.errors]
    if len(mine) < 3:
        return None
    best = max(p.throughput_ops_s for p in mine)
    knee = next(p for p in mine if p.throughput_ops_s >= 0.95 * best)
    last = mine[-1]
    if (last is knee or last.throughput_ops_s > 1.05 * knee.throughput_ops_s
            or last.execute.p99_us < 1.5 * knee.execute.p99_us
            or not last.wait_shares or last.active_max is None):
        return None
    kind = max(last.wait_shares, key=last.wait_shares.get)
    if kind == "CPU":
        if server_cores is None or last.active_max <= 2 * server_cores:
            return None
        on = f" on {server_cores} server cores"
    elif last.active_max <= (knee.active_max or 0):
        return None  # no extra backends at the largest point
    else:
        on = ""
    rule, what, fix = BOTTLENECKS.get(kind, ("oversubscription", f"{kind} waits",
                                             "{shrink}"))
    shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(
        last.wait_shares.items(), key=lambda kv: -kv[1])[:3])
    n, k = getattr(last, axis), getattr(knee, axis)
    shrink = (f"shrink the pool toward {k}" if axis == "pool_size" else
              f"hold the server's connections near {k} (a pool of {k} in front of it)")
    return Finding(
        rule, last.strategy,
        f"{_where([n], clients, rtt_ms)}: {last.active_max} active backends{on}, their samples "
        f"waiting on {shares}: the extra backends queue on {what}; throughput "
        f"{last.throughput_ops_s / knee.throughput_ops_s:.0%} of that at {k}, statement p99 "
        f"{last.execute.p99_us / 1000:.1f} ms vs {knee.execute.p99_us / 1000:.1f} ms",
        fix.format(shrink=shrink))


def sweep_findings(points: tuple[SweepPoint, ...], axis: str, *,
                   server_cores: int | None) -> tuple[Finding, ...]:
    """A sweep's findings, per curve: what bounds its largest point (more backends than the
    knee's, for no more throughput, their statements waiting inside the server: on the
    cores, a lock, I/O, ... from the sampler's wait shares), then every per-run finding
    its points carry (reference lines' too), once per rule, with the points where it
    fired. In a pool-size sweep, "pool too small" counts only at a curve's largest size:
    the smaller sizes are what the sweep compares."""
    found = []
    grid = len({p.workers for p in points}) > 1  # then each finding says its client count
    groups: dict[tuple[str, int | None, float | None], tuple[SweepPoint, ...]] = dict(
        curves(points, axis))
    for p in references(points, axis):
        key = (p.strategy, p.workers, p.rtt_ms)
        groups[key] = (*groups.get(key, ()), p)
    distances = len({p.rtt_ms for p in points}) > 1  # then each says its RTT (--rtt axis)
    for (_, clients, rtt), curve in groups.items():
        clients = clients if grid else None
        rtt = rtt if distances else None
        named = _bottleneck(curve, axis, clients, server_cores, rtt)
        fired: dict[str, list[tuple[int, Finding]]] = {}
        for p in curve:
            for f in p.findings:
                if f.rule == "pool too small" and axis == "pool_size" and p is not curve[-1]:
                    continue
                fired.setdefault(f.rule, []).append((getattr(p, axis), f))
        if named is not None:
            same = fired.pop(named.rule, None)
            if same is not None:  # the run's own rule saw it too: its evidence says where
                named = Finding(named.rule, named.strategy,
                                f"{named.evidence}; {_where([n for n, _ in same], clients, rtt)}: "
                                f"{same[-1][1].evidence}", named.fix)
            found.append(named)
        found += [Finding(rule, hits[-1][1].strategy,
                          f"{_where([n for n, _ in hits], clients, rtt)}: {hits[-1][1].evidence}",
                          hits[-1][1].fix) for rule, hits in fired.items()]
    return tuple(found)
