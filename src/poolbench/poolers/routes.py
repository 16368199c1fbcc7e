"""Routes: how a strategy's connections reach the server.

``direct``; ``pgbouncer:session`` and ``pgbouncer:transaction`` through a PgBouncer
poolbench starts for the strategy (and stops after it, so the server's backends
exit and publish their counters before the cross-check); ``pooler`` through one
the user runs (``--pooler-dsn``). DDL, the data check, the sweep and the server
cross-check always use the direct admin connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError
from poolbench.poolers.pgbouncer import PgBouncer, PoolerSettings
from poolbench.poolers.probe import PoolerCounters, PoolerProbe, PoolSamples
from poolbench.results import Check, PoolerCheck

ROUTES = ("direct", "pgbouncer:session", "pgbouncer:transaction", "pooler")


def parse_routes(spec: str, *, pooler_dsn: bool) -> tuple[str, ...]:
    """``--via``: comma-separated routes; ``pooler`` needs ``--pooler-dsn``."""
    routes = tuple(r.strip() for r in spec.split(",") if r.strip())
    if not routes:
        raise ConfigError("--via is empty; name at least one route, e.g. direct")
    for route in routes:
        if route not in ROUTES:
            raise ConfigError(f"--via: unknown route {route!r}; choose from {', '.join(ROUTES)}")
    if len(set(routes)) != len(routes):
        raise ConfigError("--via names a route twice; name each once")
    if "pooler" in routes and not pooler_dsn:
        raise ConfigError("--via pooler needs --pooler-dsn (the pooler you run)")
    return routes


@dataclass
class Route:
    """One route, ready: the target strategies connect to, and the pooler's probe if any."""

    name: str
    target: ConnectionTarget
    prepared_statements: bool
    pool_size: int = 0
    version: str = ""
    probe: PoolerProbe | None = None
    before: PoolerCounters | None = None

    @property
    def keeps_server_connections(self) -> bool:
        """Whether the server's connections outlive the strategy: a pooler the user runs
        keeps them; poolbench stops its own PgBouncer, and direct ones close."""
        return self.name == "pooler"

    @property
    def mode(self) -> str:
        return self.name.split(":", 1)[1] if ":" in self.name else "unknown"

    def begin(self) -> None:
        if self.probe is not None:
            self.before = self.probe.counters()
            self.probe.start_sampling()

    def end(self, *, attempts: int, extra: str | None) -> PoolerCheck | None:
        """The pooler's counts over the strategy against ``attempts`` operations."""
        if self.probe is None or self.before is None:
            return None
        samples: PoolSamples = self.probe.stop_sampling()
        after = self.probe.counters()
        xacts = after.transactions - self.before.transactions
        queries = after.queries - self.before.queries
        notes = [] if extra is None else [f"{extra}: its transactions and queries are shown, "
                                          "not checked"]
        checks = (Check("pooler transactions", attempts, xacts, exact=extra is None),
                  Check("pooler queries", attempts, queries, exact=extra is None))
        if self.pool_size:
            checks += (Check("server connections (max)", self.pool_size,
                             samples.server_connections_max, at_most=True),)
        return PoolerCheck(route=self.name, version=self.version, mode=self.mode,
                           pool_size=self.pool_size,
                           prepared_statements=self.prepared_statements, checks=checks,
                           transactions=xacts, queries=queries,
                           server_connections_max=samples.server_connections_max,
                           clients_waiting_max=samples.clients_waiting_max,
                           maxwait_us_max=samples.maxwait_us_max, samples=samples.samples,
                           notes=tuple(notes))


@contextlib.contextmanager
def open_route(name: str, direct: ConnectionTarget, *, pool_size: int, max_clients: int,
               keep_prepared: bool, pooler: ConnectionTarget | None = None,
               pgbouncer: Path | None = None) -> Iterator[Route]:
    """The route, ready for one strategy; a PgBouncer started here is stopped on exit."""
    if name == "direct":
        yield Route(name, direct, prepared_statements=True)
        return
    if name == "pooler":
        assert pooler is not None
        route = Route(name, pooler, prepared_statements=keep_prepared)
        with contextlib.suppress(psycopg2.Error):  # its admin console, if it has one for us
            probe = PoolerProbe(pooler.with_params(dbname="pgbouncer"), pooler.dbname)
            route.version = probe.version()
            route.probe = probe
        try:
            yield route
        finally:
            if route.probe is not None:
                route.probe.close()
        return
    mode = name.split(":", 1)[1]
    with PgBouncer(direct, PoolerSettings(mode=mode, pool_size=pool_size, max_clients=max_clients,
                                          executable=pgbouncer)) as bouncer:
        keeps = bouncer.keeps_prepared_statements or mode == "session"
        probe = PoolerProbe(bouncer.admin_target(), bouncer.database)
        try:
            yield Route(name, bouncer.client_target(), prepared_statements=keeps or keep_prepared,
                        pool_size=pool_size, version=probe.version(), probe=probe)
        finally:
            probe.close()
