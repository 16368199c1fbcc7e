"""The one result model every view reads, and its versioned JSON form.

Built once from measurements by pure functions; console, chart, JSON and CSV
exporters only read these frozen dataclasses and never compute a statistic.
``results.json`` keeps the raw figures (per-trial seconds, encoded HDR
histograms) from which every printed number can be recomputed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

SCHEMA_VERSION = 4
PHASES: tuple[str, ...] = ("create", "read", "update", "delete")
PERCENTILES = (50.0, 95.0, 99.0)


@dataclass(frozen=True)
class LatencySummary:
    """Figures of one histogram, in microseconds (HDR: 0.1% value precision)."""

    count: int
    mean_us: float
    p50_us: int
    p95_us: int
    p99_us: int
    max_us: int

    @classmethod
    def of(cls, hist: HdrHistogram) -> LatencySummary:
        if hist.get_total_count() == 0:
            return cls(0, 0.0, 0, 0, 0, 0)
        p = hist.get_percentile_to_value_dict(list(PERCENTILES))
        return cls(count=int(hist.get_total_count()), mean_us=round(mean_of(hist), 1),
                   p50_us=int(p[50.0]), p95_us=int(p[95.0]), p99_us=int(p[99.0]),
                   max_us=int(hist.get_max_value()))


def mean_of(hist: HdrHistogram) -> float:
    """The histogram's mean exactly as hdrh's ``get_mean_value`` computes it (each recorded
    bucket's count times the middle of its range of equivalent values), over the buckets
    that hold a count only: hdrh's own steps through every bucket up to the largest value,
    which cost a sweep's short runs seconds each."""
    import numpy as np

    counts = np.ctypeslib.as_array(hist.counts)[:hist.counts_len]
    total = 0
    for index in np.flatnonzero(counts).tolist():
        value = hist.get_value_from_index(index)
        low = hist.get_lowest_equivalent_value(value)
        size = hist.get_highest_equivalent_value(value) - low + 1
        total += int(counts[index]) * (low + (size >> 1))
    return total / hist.get_total_count()


# The name of a script statement's pg_stat_statements check starts so: "calls read.sql:2"
STATEMENT_CALLS = "calls "


@dataclass(frozen=True)
class Check:
    """One compared figure: what poolbench counted against what the server counted."""

    name: str
    ours: int
    server: int
    # False where the server's figure covers more than the run (another client's
    # sessions on a shared database): shown beside ours, not held against it.
    exact: bool = True
    # True for a bound (server <= ours: a pool's connections against its size).
    at_most: bool = False

    @property
    def ok(self) -> bool:
        return self.server <= self.ours if self.at_most else self.ours == self.server


@dataclass(frozen=True)
class CrossCheck:
    """The server's deltas over one strategy, checked against poolbench's own counts.

    ``transactions_per_operation`` is what each operation cost the server in
    transactions (an extra rollback, BEGIN or reset shows up here); ``exact`` is
    False where the server cannot give an exact figure, and ``notes`` say why.
    """

    checks: tuple[Check, ...]
    transactions: int
    operations: int
    transactions_per_operation: float
    database_deltas: dict[str, int]
    statement_calls: dict[str, int] | None
    exact: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.exact)

    @property
    def disagreements(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.exact and not c.ok)


@dataclass(frozen=True)
class PoolerCheck:
    """A pooler's own counts over one strategy (PgBouncer's admin console), against ours.

    ``checks``: transactions and queries it forwarded against the operations
    poolbench attempted, and the server connections it held at most against its
    pool size. ``clients_waiting_max`` and ``maxwait_us_max`` are the largest
    ``cl_waiting`` and ``maxwait`` sampled while the strategy ran.
    """

    route: str
    version: str
    mode: str
    pool_size: int
    prepared_statements: bool
    checks: tuple[Check, ...]
    transactions: int
    queries: int
    server_connections_max: int
    clients_waiting_max: int
    maxwait_us_max: int
    samples: int
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.exact)


@dataclass(frozen=True)
class DriverConnect:
    """A driver's own connect() + close(), timed per call, at one concurrency (threads);
    ``latency`` is None when it could not connect, and ``not_measured`` says why."""

    driver: str
    concurrency: int
    latency: LatencySummary | None
    not_measured: str | None = None


@dataclass(frozen=True)
class ConnectCost:
    """What a new connection costs on one route, slice by slice (the protocol probe), and
    each driver's connect() single-threaded and under concurrency.

    ``route`` is where the connections went (``direct``, ``pgbouncer:session``, ...).
    ``total`` is the probe's whole connection on a wall clock of its own (TCP connect to
    socket closed); the slices are contiguous parts of it, and ``unaccounted`` is, per
    connection, the wall time no slice covers (Terminate, close, the probe's bookkeeping).
    ``tls`` says whether the probe's connections went over TLS (``tls_version`` and
    ``tls_cipher`` say which). When the probe could not measure (an authentication method
    it does not speak, a refusal), ``slices`` is empty, ``total`` and ``unaccounted`` are None and
    ``not_measured`` says why; the drivers' figures stand on their own."""

    samples: int
    tls: bool
    slices: dict[str, LatencySummary]
    total: LatencySummary | None
    drivers: tuple[DriverConnect, ...]
    route: str = "direct"
    unaccounted: LatencySummary | None = None
    not_measured: str | None = None
    # Per slice, the round trips one connection took, counted from the protocol as it ran
    # (docs/connect-cost.md); empty when the probe could not measure.
    round_trips: dict[str, int] = field(default_factory=dict)
    tls_version: str | None = None  # the probe's TLS version ("TLSv1.3"), None without TLS
    tls_cipher: str | None = None

    @property
    def parts_sum_us(self) -> float:
        return sum(s.mean_us for s in self.slices.values())

    def driver(self, name: str, concurrency: int) -> DriverConnect | None:
        return next((d for d in self.drivers
                     if d.driver == name and d.concurrency == concurrency), None)


@dataclass(frozen=True)
class ScriptTps:
    """One script of a pgbench run of several, as pgbench printed it (``SQL script N: ...``):
    the transactions of that script it completed and their rate over the whole run."""

    phase: str  # poolbench's kind for the same script: script:NAME
    transactions: int
    tps: float


@dataclass(frozen=True)
class PgbenchFigure:
    """One pgbench run: a script at a client count, persistent or connect-per-transaction."""

    script: str
    connect_each: bool
    clients: int
    seconds: float
    transactions: int
    tps: float  # pgbench's own figure (without initial connection time for persistent runs)
    # per transaction (the insert+delete script: both statements); from pgbench's log, which
    # for persistent runs holds a 2% sample of the transactions (--sampling-rate)
    latency: LatencySummary
    connection_ms: float  # -C: average connection time; persistent: initial connection time
    # --rate: the -R pgbench was given (transactions per second over all its clients, as
    # poolbench paces its operations); None: pgbench ran as fast as it could
    rate: float | None = None
    # With scripts: each script's own figures (in -f/-b order)
    scripts: tuple[ScriptTps, ...] = ()


@dataclass(frozen=True)
class ScriptRatio:
    """One script's throughput (its ``script:NAME`` phase) over pgbench's tps of it."""

    phase: str
    throughput: float  # > 1: poolbench ran more of this script per second


@dataclass(frozen=True)
class Ratio:
    """poolbench's figure divided by pgbench's, for one strategy and one script."""

    strategy: str
    script: str
    against: str  # "persistent" or "connect"
    throughput: float  # > 1: poolbench did more per second
    p50: float  # > 1: poolbench was slower at the median
    p99: float
    connect: float | None = None  # no-pool strategies: mean connect time / pgbench -C's
    scripts: tuple[ScriptRatio, ...] = ()  # with scripts: each one's throughput ratio


@dataclass(frozen=True)
class Calibration:
    pgbench: str  # path and version
    figures: tuple[PgbenchFigure, ...]
    ratios: tuple[Ratio, ...] = ()
    # With scripts: pgbench's workload arguments as typed (-f FILE@W -b NAME@W -M -s
    # --random-seed); its figures' script is then "scripts". None: the CRUD statements.
    workload: str | None = None

    def figure(self, script: str, *, connect_each: bool) -> PgbenchFigure:
        return next(f for f in self.figures
                    if f.script == script and f.connect_each == connect_each)




@dataclass(frozen=True)
class Second:
    """One second of a phase: successful operations that ended in it, and their latency."""

    second: int
    ops: int
    p50_us: int
    p99_us: int
    # Mean workers acquiring a connection in that second (waiting for the pool, or
    # connecting without one): the time all workers spent acquiring, over the second.
    waiting: float = 0.0


@dataclass(frozen=True)
class ActivitySecond:
    """One second of a strategy as sampled: the benchmark's backends by state (medians of
    the samples in that second), and CPU (% of one core) and RSS of client and server."""

    second: int
    backends: float
    active: float
    idle_in_transaction: float
    client_cpu_pct: float
    client_rss_mb: float
    server_cpu_pct: float | None
    server_rss_mb: float | None


@dataclass(frozen=True)
class ActivitySummary:
    """What the server and the machine did while a strategy ran (sampled every
    ``interval_s``): ``pg_stat_activity`` for the benchmark's backends, by state and by
    wait event type (shares of backend samples: ``CPU`` is a backend active with no wait
    event), and the CPU and memory of poolbench's process(es) and of the server's."""

    samples: int
    interval_s: float
    seconds: float
    backends_max: int
    active_median: float
    active_max: int
    idle_in_transaction_share: float  # of backend samples
    wait_shares: dict[str, float]  # of active backend samples, by wait_event_type
    wait_events: dict[str, int]  # "Type:Event" -> backend samples
    client_cpu_s: float
    server_cpu_s: float | None  # None: the server's processes are not on this machine
    client_rss_max_mb: float
    server_rss_max_mb: float | None
    timeline: tuple[ActivitySecond, ...] = ()
    sampler_cpu_s: float = 0.0  # CPU the sampler's own process took (not the client's)


@dataclass(frozen=True)
class Finding:
    """A known pathology the measurements show: which, where, the evidence, and the fix."""

    rule: str
    strategy: str
    evidence: str
    fix: str


@dataclass(frozen=True)
class StatementFigure:
    """One command of a script over the counted trials, as ``pgbench -r`` shows it:
    ``count`` successful executions taking ``total_us`` in all (a ``\\sleep``: the time
    slept), ``failures`` failed ones. A ``\\set`` is counted once per run but not timed
    (``total_us`` and ``mean_ms`` None): a run evaluates every ``\\set`` before it takes
    its connection."""

    line: int
    command: str  # its first line, as written in the script
    count: int
    failures: int
    total_us: int | None
    mean_ms: float | None


@dataclass(frozen=True)
class Distance:
    """One strategy projected to one RTT (``rtt_ms`` added to the ``measured_at_ms`` the run
    was measured at). Times in milliseconds, means per operation.

    ``operation_ms``: an operation (a strategy without a pool connects in each);
    ``statement_ms``: its statement(s) alone, one round trip each;
    ``held_ms``: the time an operation holds a connection; ``connections_busy``: the
    measured throughput × ``held_ms`` (Little's law): the connections a pool needs to keep
    that throughput. ``connect_ms``: a new connection, ``connect_round_trips`` of them
    (None: no connect cost measured on the strategy's route for a pooled strategy).
    ``saved_ms`` and ``gain_pct``: on a strategy without a pool, what its driver's pool
    (``pooled_by``) saves per operation at that distance, in ms and in % of the operation
    (the ms grow with the RTT; the % tends to the connect's share of the round trips)."""

    strategy: str
    rtt_ms: float
    measured_at_ms: float
    operation_ms: float
    statement_ms: float
    operation_round_trips: float
    held_ms: float
    connections_busy: float
    throughput_ops_s: float
    connect_ms: float | None
    connect_round_trips: int | None
    connect_round_trips_from: str | None
    saved_ms: float | None = None
    gain_pct: float | None = None
    pooled_by: str | None = None


@dataclass(frozen=True)
class SteadyVerdict:
    """MSER-5 (White 1997; measure/steady.py) on one counted trial's operations per 0.1 s:
    ``cut_s``, the warm-up it would drop; ``settled``, True when a steady state follows,
    False when the trial never settles, None when it is too short to judge (fewer than
    100 intervals); ``observations``, the 0.1-s intervals judged; ``reason``, one line.
    Reported, not applied: the trial's figures keep every operation."""

    cut_s: float
    settled: bool | None
    observations: int
    reason: str


@dataclass(frozen=True)
class TrialResult:
    """One phase of one trial (warm-up trials are kept, flagged, and never aggregated)."""

    trial: int
    warmup: bool
    elapsed_s: float
    ops: int
    throughput_ops_s: float
    errors: dict[str, int]
    latency: LatencySummary
    histogram_latency_us: str  # base64 HDR histogram; decode with metrics.decode_histogram
    timeline: tuple[Second, ...] = ()  # per second of the phase, from its start
    steady: SteadyVerdict | None = None  # counted trials: where its warm-up ends (MSER-5)


@dataclass(frozen=True)
class PhaseResult:
    """One phase over the counted trials: median/min/max seconds, merged latencies.

    ``throughput_ops_s`` is the median of the per-trial throughputs (successful
    ops / seconds). The histograms: ``latency``, ``acquire`` (the wait for a
    pooled connection, or the connect for ``none``) and ``execute`` (the
    statement alone) count successful operations only; ``failed`` counts each
    failed operation's whole time, to the failure; ``scheduled`` (``--rate``
    only, else None) counts every operation, failed ones too, from the time it
    was due, so coordinated omission shows as the gap between it and
    ``latency``. ``held_too_long`` counts connections kept out of the pool
    longer than ``--acquire-timeout`` (leak detection, as HikariCP's), by
    successful and failed operations alike.
    """

    phase: str
    trials: tuple[TrialResult, ...]
    median_s: float
    min_s: float
    max_s: float
    ops: int
    throughput_ops_s: float
    errors: dict[str, int]
    latency: LatencySummary
    acquire: LatencySummary
    execute: LatencySummary
    histogram_latency_us: str
    histogram_acquire_us: str
    histogram_execute_us: str
    failed: LatencySummary
    histogram_failed_us: str
    # (max - min) / median of the counted trials' throughputs, in %: how far apart the
    # trials were (0 with one trial)
    throughput_spread_pct: float = 0.0
    scheduled: LatencySummary | None = None
    histogram_scheduled_us: str | None = None
    held_too_long: int = 0
    # The rest of a successful operation's mean, after waiting for a connection and the
    # statement: giving the connection back, and waiting for the interpreter (the GIL, the
    # event loop) to run the worker again. acquire + execute + this = latency (means, at
    # the histograms' 0.1% precision).
    release_mean_us: float = 0.0
    # A script's phase (script:NAME): each of its commands, in order (pgbench -r)
    statements: tuple[StatementFigure, ...] = ()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class StrategyResult:
    name: str
    pooled: bool
    is_async: bool
    per_operation: str
    open_s: float
    phases: tuple[PhaseResult, ...]
    stats: dict[str, int]
    leftover_rows_deleted: int  # own rows the end-of-strategy sweep had to delete
    server: CrossCheck | None = None  # the server's own counts over this strategy
    route: str = "direct"  # direct, pgbouncer:session, pgbouncer:transaction or pooler
    prepared_statements: bool = True  # False: turned off for a transaction pooler
    pooler: PoolerCheck | None = None  # the pooler's own counts, on a pooler route
    activity: ActivitySummary | None = None  # server activity and resources while it ran
    # --interleave: each window's own counters (a fresh pool each), summed in ``stats``
    window_stats: tuple[dict[str, int], ...] = ()
    # scripts: what -M became on this strategy's driver (None: a CRUD run, left out of JSON)
    protocol_note: str | None = None

    @property
    def strategy(self) -> str:
        """The registry name (``name`` is ``STRATEGY@ROUTE`` off the direct route)."""
        return self.name.split("@", 1)[0]

    @property
    def held_too_long(self) -> int:
        return sum(p.held_too_long for p in self.phases)

    @property
    def total_median_s(self) -> float:
        """The sum of the phases' median seconds; in a mix, the mixed phase's (its kinds
        share its clock)."""
        if self.phases and self.phases[0].phase == "mix":
            return self.phases[0].median_s
        return sum(p.median_s for p in self.phases)

    @property
    def error_count(self) -> int:
        return sum(p.error_count for p in self.phases)

    def phase(self, name: str) -> PhaseResult:
        return next(p for p in self.phases if p.phase == name)


@dataclass(frozen=True)
class DriverComparison:
    """One driver's seed line: its no-pool strategy against its fastest pooled one on the
    direct route (sums of per-phase medians), so that a pool's gain is not a driver's.

    Only a pooled strategy with no failed operation can be the fastest (a pool
    that fails fast would win otherwise); ``excluded`` names the pooled
    strategies left out, with their failed operations. ``no_pool_errors`` > 0:
    the no-pool strategy's time includes operations that failed and did no
    work, so the line does not compare the same work.
    """

    driver: str  # the part of a strategy's name before the colon: psycopg2, asyncpg, ...
    no_pool: str
    no_pool_s: float
    pooled: str
    pooled_s: float
    gain_pct: float
    no_pool_errors: int = 0
    excluded: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """The seed's "time for the work" line, like with like: one line per driver that ran a
    no-pool strategy and an error-free pooled one (``drivers``, in run order).

    ``unpaired``: no-pool strategies with no such partner, and why. ``not_meaningful``:
    why no line is drawn at all (with ``--rate`` every phase lasts about rows / rate
    whatever the strategy); ``drivers`` and ``unpaired`` are empty then.
    """

    drivers: tuple[DriverComparison, ...] = ()
    unpaired: dict[str, str] = field(default_factory=dict)
    not_meaningful: str | None = None
    # The fastest error-free strategy of every route (pooler routes included), if the
    # run had more than the direct route.
    best_overall: str | None = None
    best_overall_s: float | None = None


@dataclass(frozen=True)
class Verification:
    """End-of-run data check: none of the run's rows left, every other row unchanged."""

    own_rows_left: int
    other_rows_before: int
    other_rows_after: int
    other_rows_digest_before: str
    other_rows_digest_after: str

    @property
    def ok(self) -> bool:
        return (self.own_rows_left == 0 and self.other_rows_before == self.other_rows_after
                and self.other_rows_digest_before == self.other_rows_digest_after)


RTT_TOLERANCE_PCT = 5.0  # of the expected round trip: beyond it (and 50 µs) a run says so
RTT_TOLERANCE_FLOOR_MS = 0.05


@dataclass(frozen=True)
class RttCheck:
    """What ``--rtt`` injected, measured: the median ``SELECT 1`` round trip through the
    relay (``measured_ms``) and straight to the server (``base_ms``, the loopback base),
    each over ``concurrency`` connections at once, against ``asked_ms + base_ms``.
    ``error_ms`` is measured minus expected; ``ok`` when it is within ``tolerance_ms``
    (5% of the expected, at least 50 µs)."""

    asked_ms: float
    measured_ms: float
    base_ms: float
    concurrency: int
    round_trips: int  # through the relay, all connections together
    error_ms: float
    tolerance_ms: float
    ok: bool

    @classmethod
    def of(cls, *, asked_ms: float, measured_ms: float, base_ms: float, concurrency: int,
           round_trips: int) -> RttCheck:
        expected = asked_ms + base_ms
        error = measured_ms - expected
        tolerance = max(expected * RTT_TOLERANCE_PCT / 100, RTT_TOLERANCE_FLOOR_MS)
        return cls(asked_ms=asked_ms, measured_ms=round(measured_ms, 4),
                   base_ms=round(base_ms, 4), concurrency=concurrency, round_trips=round_trips,
                   error_ms=round(error, 4), tolerance_ms=round(tolerance, 4),
                   ok=abs(error) <= tolerance)


@dataclass(frozen=True)
class RunResults:
    schema_version: int
    run_tag: str
    partial: bool
    started_at: str
    finished_at: str
    config: dict[str, object]
    environment: dict[str, object]
    strategies: tuple[StrategyResult, ...]
    comparison: Comparison | None
    verification: Verification | None
    calibration: Calibration | None = None  # pgbench on the same server (--baseline pgbench)
    # poolbench's own work per operation, measured on each executor kind the run used
    # ("threads", "asyncio"), with the run's worker count per process
    harness_us_per_op: dict[str, float] | None = None
    # what a new connection costs, slice by slice (runs with a no-pool strategy)
    connect_cost: tuple[ConnectCost, ...] = ()
    findings: tuple[Finding, ...] = ()  # pathologies the measurements show, with their fix
    # optional measurements that failed, and why (the run completed without them)
    not_measured: dict[str, str] = field(default_factory=dict)
    # the run projected to other network distances (analysis/distance.py, docs/distance.md)
    distances: tuple[Distance, ...] = ()
    rtt: RttCheck | None = None  # --rtt: the round trip injected, as measured

    def to_dict(self) -> dict[str, object]:
        """JSON-ready data (the password is already masked in ``config``)."""
        data = dataclasses.asdict(self)
        for strategy, raw in zip(self.strategies, data["strategies"]):
            raw["total_median_s"] = strategy.total_median_s
            raw["error_count"] = strategy.error_count
            raw["held_too_long"] = strategy.held_too_long
            if strategy.server is not None:
                raw["server"]["ok"] = strategy.server.ok
            if strategy.pooler is not None:
                raw["pooler"]["ok"] = strategy.pooler.ok
            if strategy.protocol_note is None:  # a CRUD run's results.json is as before
                del raw["protocol_note"]
            for phase in raw["phases"]:
                if not phase["statements"]:  # only a script's phase has them
                    del phase["statements"]
        if self.verification is not None:
            data["verification"]["ok"] = self.verification.ok
        if self.rtt is None:  # a run without --rtt: results.json as before
            del data["rtt"]
        return data


PACED_COMPARISON = ("with --rate every phase lasts about rows / rate whatever the strategy, "
                    "so the time for the work cannot tell the strategies apart: compare "
                    "their latency from the scheduled start")


def driver_of(s: StrategyResult) -> str:
    """The driver a strategy's name starts with (``psycopg2:threaded`` -> ``psycopg2``)."""
    return s.strategy.split(":", 1)[0]


def comparison(strategies: tuple[StrategyResult, ...]) -> Comparison | None:
    """The seed's line per driver on the direct route; None without a complete no-pool
    strategy and a complete pooled one there. With pooler routes, also the best of all
    routes. Under ``--rate`` (the phases were paced) no line, and why."""
    every = [s for s in strategies if len(s.phases) == len(PHASES)
             or (s.phases and s.phases[0].phase == "mix")]
    complete = [s for s in every if s.route == "direct"]
    no_pools = [s for s in complete if not s.pooled]
    if not no_pools or not any(s.pooled for s in complete):
        return None
    if any(p.scheduled is not None for s in every for p in s.phases):
        return Comparison(not_meaningful=PACED_COMPARISON)
    lines, unpaired = [], {}
    for no_pool in no_pools:
        driver = driver_of(no_pool)
        mine = [s for s in complete if s.pooled and driver_of(s) == driver]
        excluded = {s.name: s.error_count for s in mine if s.error_count}
        clean = [s for s in mine if not s.error_count]
        if not clean:
            unpaired[no_pool.name] = (
                f"no pooled {driver} strategy was run" if not mine else
                f"every pooled {driver} strategy had failed operations ("
                + ", ".join(f"{name}: {n}" for name, n in excluded.items()) + ")")
            continue
        best = min(clean, key=lambda s: s.total_median_s)
        gain = (no_pool.total_median_s - best.total_median_s) / no_pool.total_median_s * 100
        lines.append(DriverComparison(
            driver=driver, no_pool=no_pool.name, no_pool_s=no_pool.total_median_s,
            pooled=best.name, pooled_s=best.total_median_s, gain_pct=gain,
            no_pool_errors=no_pool.error_count, excluded=excluded))
    overall = None
    if len(every) > len(complete):
        overall = min((s for s in every if not s.error_count), key=lambda s: s.total_median_s,
                      default=None)
    return Comparison(drivers=tuple(lines), unpaired=unpaired,
                      best_overall=overall.name if overall else None,
                      best_overall_s=overall.total_median_s if overall else None)
