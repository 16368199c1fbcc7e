"""What a run's figures become at another network distance: a model, from the round trips
each step takes.

A run measures at one round-trip time (loopback, about 0.05 ms; or the ``--rtt`` relay's).
Moving the database further away adds the same time to every round trip and nothing else,
so each figure projects as *what was measured + round trips × the added round trip*:

- a new connection: the connect measured (its CPU: SCRAM, fork, TLS's signatures) plus
  ``k`` round trips, ``k`` from its protocol (:func:`protocol_round_trips`), so a connect
  of ``k`` round trips costs ``base + k·r`` at RTT ``r``;
- an operation: its measured mean plus one round trip per statement (an autocommit
  statement is one; a script's BEGIN and COMMIT are statements too); a strategy without
  a pool also pays its connect's ``k`` per operation;
- the time a pooled connection is held per operation (from the pool handing it out to
  getting it back: the statement, and giving it back) grows by the same round trips, so
  by Little's law (busy connections = throughput × time each is held) a pool needs
  ``X·(s + r)`` connections for ``X`` operations per second of statements that hold it
  ``s``: each connection does ``1/(s + r)`` operations per second.

The RTTs are the round trip *added* to the one the run was measured at (``measured_at_ms``:
0 at loopback, the relay's ``--rtt`` otherwise), as the relay adds it. Pure functions of the
result model; docs/distance.md says what the model leaves out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from poolbench.analysis.sweep import SweepPoint
from poolbench.config import ScriptFile
from poolbench.results import ConnectCost, Distance, PhaseResult, RunResults, StrategyResult

RTTS_MS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)
# The connect-cost slices up to ReadyForQuery: what a driver's connect() waits for. The
# probe's first query is the operation's own statement, counted with the operation.
CONNECT_SLICES = ("tcp", "tls", "auth_exchange", "scram_key_derivation", "backend_start")
SCRAM = "scram-sha-256"
# Authentication round trips, startup message included: trust answers the startup with
# AuthenticationOk; md5 and cleartext ask once for a password; SCRAM-SHA-256 is startup ->
# AuthenticationSASL, SASLInitialResponse -> AuthenticationSASLContinue, SASLResponse ->
# AuthenticationSASLFinal + AuthenticationOk + ReadyForQuery.
AUTH_ROUND_TRIPS = {"trust": 1, "password": 2, "md5": 2, SCRAM: 3}


def protocol_round_trips(*, tls_version: str | None, auth: str) -> dict[str, int]:
    """Round trips per connect-cost slice, counted from the protocol's message flow
    (PostgreSQL's "Message Flow" chapter, https://www.postgresql.org/docs/current/
    protocol-flow.html: Start-up, SSL Session Encryption; SCRAM's exchange in "SASL
    Authentication", https://www.postgresql.org/docs/current/sasl-authentication.html):

    - TCP connect: 1 (SYN, SYN-ACK; the ACK leaves with the first data);
    - TLS: the SSLRequest and its one-byte answer 1, then the handshake: 1 for TLS 1.3
      (RFC 8446: the client's Finished leaves with the startup message), 2 for TLS 1.2's
      full handshake (RFC 5246); 0 without TLS;
    - startup and authentication: :data:`AUTH_ROUND_TRIPS` (trust 1, md5 and cleartext 2,
      SCRAM 3);
    - SCRAM key derivation and backend start: 0 (CPU; the backend's ParameterStatus and
      ReadyForQuery follow AuthenticationOk with nothing sent between);
    - first query: 1.

    ``tls_version`` is None without TLS, else ``TLSv1.2`` or ``TLSv1.3``; ``auth`` is a key
    of :data:`AUTH_ROUND_TRIPS`. A TLS 1.3 server asking for another key share
    (HelloRetryRequest) costs one more, which only a probe that counts sees."""
    if auth not in AUTH_ROUND_TRIPS:
        raise ValueError(f"authentication {auth!r}: one of {', '.join(AUTH_ROUND_TRIPS)}")
    tls = 0 if tls_version is None else 1 + (1 if tls_version == "TLSv1.3" else 2)
    return {"tcp": 1, "tls": tls, "auth_exchange": AUTH_ROUND_TRIPS[auth],
            "scram_key_derivation": 0, "backend_start": 0, "first_query": 1}


def connect_ms(base_ms: float, round_trips: int, rtt_ms: float) -> float:
    """A connect of ``round_trips`` that costs ``base_ms`` where it was measured, ``rtt_ms``
    of round trip further away."""
    return base_ms + round_trips * rtt_ms


def operation_ms(measured_ms: float, round_trips: float, rtt_ms: float) -> float:
    """An operation measured at ``measured_ms``, ``rtt_ms`` of round trip further away."""
    return measured_ms + round_trips * rtt_ms


def operations_per_connection_s(held_ms: float) -> float:
    """What one connection held ``held_ms`` per operation can do per second: 1/held."""
    return 1000.0 / held_ms


def connections_busy(throughput_ops_s: float, held_ms: float) -> float:
    """Little's law: the connections busy at once for ``throughput_ops_s`` operations per
    second, each holding one for ``held_ms``."""
    return throughput_ops_s * held_ms / 1000.0


@dataclass(frozen=True)
class ConnectRoundTrips:
    """A new connection's round trips up to ReadyForQuery, and where the count came from
    (``probe``: counted by the connect-cost probe as it ran; ``protocol (...)``: counted
    here from what the results say of TLS and authentication)."""

    round_trips: int
    source: str


def connect_round_trips(cost: ConnectCost | None, *, tls: bool = False,
                        sslmode: str | None = None) -> ConnectRoundTrips:
    """The round trips of a driver's new connection on ``cost``'s route. The probe's own
    counts when the results carry them; else from the protocol, with TLS 1.3 when ``cost``
    says TLS (libpq and PostgreSQL 12+ with OpenSSL 1.1.1 negotiate it) and SCRAM when the
    probe derived a SCRAM key (else md5 or a password, 2; trust would be 1). Without a
    connect-cost measurement (a pooled-only run): SCRAM (PostgreSQL 14+'s default), TLS
    as ``tls`` says. Without TLS, a driver whose ``sslmode`` is ``prefer`` (libpq's and
    asyncpg's default: None) asks for it first, and the server's 'N' costs one more round
    trip, which the probe (it asks only when told to) does not take."""
    counted = getattr(cost, "round_trips", None)  # the probe's own counts, where it has them
    asked_tls = bool(cost is not None and cost.tls)
    if counted:
        trips, source = sum(counted.get(s, 0) for s in CONNECT_SLICES), "probe"
        asked_tls = asked_tls or counted.get("tls", 0) > 0  # the probe's SSLRequest counted
    else:
        if cost is None or not cost.slices:
            auth, why = SCRAM, "SCRAM assumed"
            version = "TLSv1.3" if tls else None
        else:
            derived = cost.slices.get("scram_key_derivation")
            auth, why = ((SCRAM, "SCRAM") if derived is not None and derived.mean_us > 0
                         else ("md5", "md5 or password assumed"))
            version = getattr(cost, "tls_version", None) or ("TLSv1.3" if cost.tls else None)
        slices = protocol_round_trips(tls_version=version, auth=auth)
        trips = sum(slices[s] for s in CONNECT_SLICES)
        source = f"protocol ({why}, {version or 'no TLS'})"
        asked_tls = asked_tls or version is not None
    if not asked_tls and sslmode in (None, "prefer"):
        return ConnectRoundTrips(trips + 1, f"{source} + the SSLRequest sslmode=prefer sends")
    return ConnectRoundTrips(trips, source)


def sslmode_of(config: Mapping[str, object]) -> str | None:
    """The ``sslmode`` the run's target names (its masked DSN), None if it names none."""
    found = re.search(r"sslmode=([\w-]+)", str(config.get("target") or ""))
    return found.group(1) if found else None


@dataclass(frozen=True)
class OperationProfile:
    """One strategy's operation as measured: means in milliseconds over its operations
    (phases weighted by their operations; a mix: its mixed phase), the throughput, and the
    round trips one operation takes (statements; a mix: weighted by its kinds' counts)."""

    strategy: str
    pooled: bool
    route: str
    latency_ms: float
    acquire_ms: float  # waiting for the pool, or connecting without one
    execute_ms: float  # the statement(s)
    throughput_ops_s: float
    round_trips: float  # the statements'
    release_round_trips: int = 0  # giving the connection back (a pool's reset query)

    @property
    def held_ms(self) -> float:
        """How long an operation holds its connection: from getting it to giving it back
        (a strategy without a pool holds its own connection for the whole operation)."""
        return self.latency_ms - self.acquire_ms if self.pooled else self.latency_ms


def statement_round_trips(phase: str, statements: Mapping[str, int]) -> int:
    """Round trips of one operation of ``phase``: a CRUD phase and a mix's kind are one
    autocommit statement; a script's (``script:NAME``) are its statements, BEGIN and COMMIT
    included (``statements`` maps the phase to its count; 1 if absent)."""
    return statements.get(phase, 1)


def script_statements(files: Sequence[ScriptFile]) -> dict[str, int]:
    """Per script phase (``script:NAME``), the SQL statements one run of it sends, BEGIN and
    COMMIT included: the round trips of one of its operations."""
    from poolbench.workloads.script.parser import parse_script

    return {f"script:{f.name}": len(parse_script(f.text, name=f.path).statements) for f in files}


def _mean(phases: Sequence[PhaseResult], kind: str) -> float:
    ops = sum(p.ops for p in phases)
    return sum(getattr(p, kind).mean_us * p.ops for p in phases) / ops / 1000 if ops else 0.0


def profile_of(s: StrategyResult, statements: Mapping[str, int] = {},
               release_round_trips: int = 0) -> OperationProfile | None:
    """The strategy's operation, or None when it did no successful operation;
    ``release_round_trips``: what giving its connection back costs (a pool's reset query)."""
    if s.phases and s.phases[0].phase == "mix":
        timed: Sequence[PhaseResult] = (s.phases[0],)
        kinds = [p for p in s.phases[1:] if p.ops]
        ops = sum(p.ops for p in kinds)
        trips = (sum(statement_round_trips(p.phase, statements) * p.ops for p in kinds) / ops
                 if ops else 1.0)
        throughput = s.phases[0].throughput_ops_s
    else:
        timed = s.phases
        ops = sum(p.ops for p in timed)
        trips = (sum(statement_round_trips(p.phase, statements) * p.ops for p in timed) / ops
                 if ops else 1.0)
        seconds = sum(p.median_s for p in timed)
        throughput = (sum(p.throughput_ops_s * p.median_s for p in timed) / seconds
                      if seconds else 0.0)
    if not sum(p.ops for p in timed):
        return None
    return OperationProfile(strategy=s.name, pooled=s.pooled, route=s.route,
                            latency_ms=_mean(timed, "latency"), acquire_ms=_mean(timed, "acquire"),
                            execute_ms=_mean(timed, "execute"), throughput_ops_s=throughput,
                            round_trips=trips, release_round_trips=release_round_trips)


def _connect_base_ms(profile: OperationProfile, cost: ConnectCost | None) -> float | None:
    """Where it was measured, a new connection: without a pool, the strategy's own connects
    (its acquire, under the run's load); with one, the probe's slices up to ReadyForQuery."""
    if not profile.pooled:
        return profile.acquire_ms
    if cost is None or not cost.slices:
        return None
    return sum(cost.slices[s].mean_us for s in CONNECT_SLICES if s in cost.slices) / 1000


def project_strategy(profile: OperationProfile, *, cost: ConnectCost | None,
                     measured_at_ms: float = 0.0, tls: bool = False,
                     sslmode: str | None = None,
                     rtts_ms: Sequence[float] = RTTS_MS) -> tuple[Distance, ...]:
    """``profile`` at each of ``rtts_ms``; ``cost``: the connect cost on its route."""
    trips = connect_round_trips(cost, tls=tls, sslmode=sslmode)
    base = _connect_base_ms(profile, cost)
    per_operation = (profile.round_trips + profile.release_round_trips
                     + (0 if profile.pooled else trips.round_trips))
    found = []
    for rtt in rtts_ms:
        added = rtt - measured_at_ms
        held = operation_ms(profile.held_ms, per_operation, added)
        found.append(Distance(
            strategy=profile.strategy, rtt_ms=rtt, measured_at_ms=measured_at_ms,
            operation_ms=operation_ms(profile.latency_ms, per_operation, added),
            statement_ms=operation_ms(profile.execute_ms, profile.round_trips, added),
            operation_round_trips=per_operation, held_ms=held,
            connections_busy=connections_busy(profile.throughput_ops_s, held),
            throughput_ops_s=profile.throughput_ops_s,
            connect_ms=None if base is None else connect_ms(base, trips.round_trips, added),
            connect_round_trips=trips.round_trips, connect_round_trips_from=trips.source))
    return tuple(found)


def gain_pct(no_pool: Distance, pooled: Distance) -> float:
    """What the pool saves per operation at that distance, in % of the no-pool operation."""
    return (no_pool.operation_ms - pooled.operation_ms) / no_pool.operation_ms * 100


def measured_at_ms(run: RunResults) -> float:
    """The round trip the run's figures already include above loopback: through the
    ``--rtt`` relay, the one its check measured (``rtt.measured_ms - rtt.base_ms``), else
    the one asked (``rtt_ms``); 0 at loopback."""
    check = getattr(run, "rtt", None)  # the relay's own measurement, where results have it
    if check is not None:
        return max(0.0, check.measured_ms - check.base_ms)
    return float(run.config.get("rtt_ms") or 0.0)


def project_run(run: RunResults, *, statements: Mapping[str, int] = {},
                release_round_trips: Mapping[str, int] = {},
                rtts_ms: Sequence[float] = RTTS_MS) -> tuple[Distance, ...]:
    """Every strategy of ``run`` at each of ``rtts_ms``, in run order; a strategy without a
    pool paired with its driver's pool as the run's comparison pairs them (the gain).
    ``statements``: a script phase's statements per run of it (``script:NAME`` -> n);
    ``release_round_trips``: per registry name (``asyncpg:pool``), what giving a connection
    back costs (a strategy's ``release_round_trips``)."""
    measured_at = measured_at_ms(run)
    tls, sslmode = bool(run.config.get("tls")), sslmode_of(run.config)
    costs = {c.route: c for c in run.connect_cost}
    projected: dict[str, tuple[Distance, ...]] = {}
    for s in run.strategies:
        profile = profile_of(s, statements, release_round_trips.get(s.strategy, 0))
        if profile is not None:
            projected[s.name] = project_strategy(profile, cost=costs.get(s.route),
                                                 measured_at_ms=measured_at, tls=tls,
                                                 sslmode=sslmode, rtts_ms=rtts_ms)
    pairs = {d.no_pool: d.pooled for d in (run.comparison.drivers if run.comparison else ())}
    found: list[Distance] = []
    for name, rows in projected.items():
        pool = pairs.get(name)
        if pool in projected:
            rows = tuple(dataclasses.replace(r, saved_ms=r.operation_ms - p.operation_ms,
                                             gain_pct=gain_pct(r, p), pooled_by=pool)
                         for r, p in zip(rows, projected[pool]))
        found += rows
    return tuple(found)


@dataclass(frozen=True)
class DistanceRecommendation:
    """The pool a curve measured at ``measured_at_ms`` projects at ``rtt_ms``: the size
    recommended where it was measured, scaled by how much longer each operation holds its
    connection there (Little's law at the same throughput), and why."""

    strategy: str
    workers: int | None
    rtt_ms: float
    measured_at_ms: float
    measured_pool_size: int
    pool_size: int
    held_ms_measured: float
    held_ms: float
    throughput_ops_s: float
    connections_busy: float
    reason: str


def size_at_distance(curve: Sequence[SweepPoint], *, recommended: int, rtt_ms: float,
                     measured_at_ms: float = 0.0, round_trips: float = 1.0
                     ) -> DistanceRecommendation:
    """The pool size the model projects at ``rtt_ms`` for one sweep curve (one strategy's
    points by pool size, measured at ``measured_at_ms``) whose recommended size there is
    ``recommended``. At the recommended point an operation holds its connection
    ``s`` = latency - acquire (means); at ``rtt_ms`` it holds it ``s + n·(rtt - measured)``
    for ``n`` = ``round_trips`` statements, so keeping the same throughput takes that many
    times more connections: ``ceil(recommended × held at rtt / s)``; Little's law gives
    the busy ones, measured throughput × held. Raises ValueError if ``recommended`` is not
    a point of the curve."""
    pick = next((p for p in curve if p.pool_size == recommended), None)
    if pick is None:
        raise ValueError(f"pool size {recommended} is not a point of the curve")
    measured_held = (pick.latency.mean_us - pick.acquire.mean_us) / 1000
    held = operation_ms(measured_held, round_trips, rtt_ms - measured_at_ms)
    size = max(1, math.ceil(recommended * held / measured_held - 1e-9))
    busy = connections_busy(pick.throughput_ops_s, held)
    reason = (f"{size} at {rtt_ms:g} ms RTT: each operation holds its connection "
              f"{held:.2f} ms there ({measured_held:.2f} ms measured at {measured_at_ms:g} ms "
              f"+ {round_trips:g} round trip{'s' if round_trips != 1 else ''} × "
              f"{rtt_ms - measured_at_ms:g} ms), so {pick.throughput_ops_s:,.0f} ops/s keep "
              f"{busy:.1f} connections busy (Little's law) where {recommended} was "
              f"recommended at {measured_at_ms:g} ms")
    if size > pick.workers:
        reason += (f"; more than the {pick.workers} clients measured: at this distance the "
                   "clients, not the pool, bound the throughput (run more of them)")
    return DistanceRecommendation(
        strategy=pick.strategy, workers=pick.workers, rtt_ms=rtt_ms,
        measured_at_ms=measured_at_ms, measured_pool_size=recommended, pool_size=size,
        held_ms_measured=measured_held, held_ms=held, throughput_ops_s=pick.throughput_ops_s,
        connections_busy=busy, reason=reason)
