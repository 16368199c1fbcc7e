"""One frozen, validated run configuration, and where the database comes from.

Config flows one way: the CLI (or a library caller) builds a :class:`RunConfig`
once; the core never sees flags. The target is chosen first-match-wins:
``--dsn``; ``DATABASE_URL``; the seed's ``DB_NAME``/``USER_NAME``/``PASSWORD``/
``HOST``/``PORT`` (environment over ``.env``); libpq's ``PG*`` variables; else
``None``, meaning "start the embedded server".
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv.parser import parse_stream

from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError

MIX_KINDS = ("create", "read", "update", "delete")
RTT_MAX_MS = 10_000.0  # --rtt beyond this is a typo (10 s; a geostationary hop is 0.6 s)


def parse_mix(spec: str) -> tuple[tuple[str, int], ...]:
    """``create=5,read=80,update=10,delete=5`` (weights, any subset) -> (kind, weight) pairs."""
    pairs = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        kind, _, weight = part.partition("=")
        try:
            pairs.append((kind.strip(), int(weight)))
        except ValueError:
            raise ConfigError(f"--mix {spec!r}: write kind=weight pairs, e.g. "
                              "read=80,update=10,create=5,delete=5") from None
    if not pairs:
        raise ConfigError("--mix is empty; e.g. read=80,update=10,create=5,delete=5")
    return tuple(pairs)


MIX_CYCLE = 100  # a mix runs as a shuffled cycle of this many operations, repeated
# Weights are shares of a cycle of MIX_CYCLE: beyond this, floats stop telling them apart
MIX_WEIGHT_MAX = 1_000_000
STATEMENT_TIMEOUT_MAX_S = 2_147_483.647  # PostgreSQL's largest statement_timeout (int ms)


def mix_cycle(mix: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """(kind, operations) in each cycle of :data:`MIX_CYCLE`: its share of the weights,
    rounded (half to even, as ``round``), which is how a mixed phase deals them out."""
    total = sum(w for _, w in mix)
    return tuple((kind, round(w * MIX_CYCLE / total)) for kind, w in mix)


def mix_text(mix: tuple[tuple[str, int], ...]) -> str:
    """A mix as ``--mix`` takes it: ``read=80,update=10``."""
    return ",".join(f"{k}={w}" for k, w in mix)


def _starved_mix_error(mix: tuple[tuple[str, int], ...]) -> ConfigError | None:
    """The error for a mix with a kind whose share rounds to no operation (it would never
    run), naming the least weights that give each such kind one; None if every kind runs."""
    starved = [kind for kind, n in mix_cycle(mix) if n == 0]
    if not starved:
        return None
    weights = dict(mix)
    while missing := [k for k, n in mix_cycle(tuple(weights.items())) if n == 0]:
        for kind in missing:  # one in a cycle needs w / total > 1 / (2 * MIX_CYCLE)
            rest = sum(weights.values()) - weights[kind]
            weights[kind] = rest // (2 * MIX_CYCLE - 1) + 1
    spec = mix_text(mix)
    fix = " and ".join(f"{k}={weights[k]}" for k in starved)
    return ConfigError(f"--mix {spec}: {', '.join(starved)} would never run (under one "
                       f"operation in each cycle of {MIX_CYCLE}); give {fix} or more, or "
                       f"leave {'it' if len(starved) == 1 else 'them'} out")


PROTOCOLS = ("simple", "extended", "prepared")  # -M, as pgbench's
SCRIPT_CYCLE_MAX = 10_000  # the longest cycle of script runs the weights may ask for


@dataclass(frozen=True)
class ScriptFile:
    """A script to run (``-f FILE@WEIGHT``, ``-b NAME@WEIGHT``): its name in results (each
    script's ``script:NAME`` figures), where it came from, its text, its weight. The text
    travels (to ``--processes`` and cluster nodes), where it is parsed again."""

    name: str
    path: str  # as given to -f, or "builtin:NAME"
    text: str
    weight: int

    @property
    def builtin(self) -> str | None:
        """The built-in's name (``-b NAME``: its path is ``builtin:NAME``); None for a file."""
        return self.path.removeprefix("builtin:") if self.path.startswith("builtin:") else None

    @property
    def sha256(self) -> str:
        """The text's SHA-256, shortened: a changed script shows as a changed setting."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]


def script_cycle(weights: tuple[int, ...]) -> tuple[int, ...]:
    """Runs of each script in one cycle: the weights over their greatest common divisor, so
    that every cycle holds them exactly (80/20 is a cycle of 4 and 1)."""
    divisor = math.gcd(*weights)
    return tuple(w // divisor for w in weights)


RANDOM_SEED_MAX = 2**64 - 1  # pgbench reads --random-seed as an unsigned 64-bit number


def parse_random_seed(value: str) -> int:
    """``--random-seed`` as pgbench takes it: a whole number (0 to 2**64-1), ``time`` (the
    clock, in microseconds) or ``rand`` (64 strong random bits). ``time`` and ``rand`` are
    drawn here, once: the number is what the run uses, gives pgbench and records."""
    if value == "time":
        return time.time_ns() // 1000
    if value == "rand":
        return secrets.randbits(64)
    try:
        seed = int(value, 10)
    except ValueError:
        seed = -1
    if not 0 <= seed <= RANDOM_SEED_MAX:
        raise ConfigError(f"--random-seed {value!r}: give a whole number from 0 to "
                          f"{RANDOM_SEED_MAX}, 'time' or 'rand' (as pgbench's)")
    return seed


SEED_VARIABLES = {"DB_NAME": "dbname", "USER_NAME": "user", "PASSWORD": "password",
                  "HOST": "host", "PORT": "port"}
LIBPQ_VARIABLES = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user",
                   "PGPASSWORD": "password", "PGDATABASE": "dbname", "PGSSLMODE": "sslmode"}
DEFAULT_STRATEGIES = ("psycopg2:none", "psycopg2:threaded")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def read_env_file(path: Path, *, explicit: bool) -> dict[str, str]:
    """Read a ``.env`` file; a missing default file is empty, anything else wrong is an error."""
    if not path.exists():
        if explicit:
            raise ConfigError(f"--env-file: {path} does not exist; give an existing file")
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--env-file: cannot read {path} ({exc.__class__.__name__}); "
                          "check its permissions and encoding") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(f"--env-file: {path} line {binding.original.line} is not "
                              "KEY=VALUE; fix or remove that line")
        if binding.key is not None:
            values[binding.key] = binding.value or ""
    return values


def resolve_target(*, dsn: str | None, env_file: Path | None,
                   environ: Mapping[str, str]) -> ConnectionTarget | None:
    """Pick the database by the documented precedence; ``None`` means embedded."""
    if dsn:
        return ConnectionTarget.from_dsn(dsn, source="--dsn")
    file_values = read_env_file(env_file or Path(".env"), explicit=env_file is not None)
    merged = {**file_values, **environ}
    if merged.get("DATABASE_URL"):
        where = "DATABASE_URL" if environ.get("DATABASE_URL") else "DATABASE_URL in .env"
        return ConnectionTarget.from_dsn(merged["DATABASE_URL"], source=where)
    seed = {ours: merged[name] for name, ours in SEED_VARIABLES.items() if merged.get(name)}
    if seed:
        return ConnectionTarget.from_keywords(source="DB_NAME/USER_NAME/PASSWORD/HOST/PORT",
                                              **seed)
    libpq = {ours: environ[name] for name, ours in LIBPQ_VARIABLES.items() if environ.get(name)}
    if libpq:
        return ConnectionTarget.from_keywords(source="PG* environment variables", **libpq)
    return None


@dataclass(frozen=True)
class Pace:
    """How a run paces its phases.

    ``duration_s``: create, read and update run for this long instead of a row
    count (pgbench ``-T``); reads and updates cycle over the rows created, and
    delete always removes every row created. ``rate``: open loop, operations are
    *scheduled* at this many per second across all workers (pgbench ``-R``), and
    latency is measured from the scheduled start as well as the actual one.
    ``warmup_s``: warm-up trials run their phases for this long instead (a sweep's
    ``--warmup SECONDS``).
    """

    duration_s: float | None = None
    rate: float | None = None
    warmup_s: float | None = None

    def of_trial(self, warmup: bool) -> Pace:
        """The pace of one trial: a warm-up runs ``warmup_s`` when that is set."""
        if warmup and self.warmup_s is not None:
            return Pace(duration_s=self.warmup_s, rate=self.rate)
        return self


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``poolbench run`` needs; validated on construction.

    ``target`` of ``None`` means: start the embedded server for this run.
    """

    target: ConnectionTarget | None = None
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    rows: int = 1000
    workers: int = 50
    pool_min: int = 1
    pool_max: int = 50
    warmup: int = 1
    warmup_s: float | None = None  # warm-up trials last this long (seconds) instead
    trials: int = 3
    table: str = "users"
    out_dir: Path = field(default_factory=lambda: Path("reports"))
    acquire_timeout_s: float = 30.0
    statement_timeout_s: float | None = None
    duration_s: float | None = None
    rate: float | None = None
    processes: int = 1
    baseline: str | None = None  # "pgbench": calibrate against pgbench after the strategies
    baseline_seconds: float = 5.0
    chart: bool = True
    keep_server: bool = False
    show_password: bool = False
    via: tuple[str, ...] = ("direct",)  # routes: direct, pgbouncer:session/transaction, pooler
    pooler_size: int | None = None  # PgBouncer's default_pool_size; None: --pool-max
    pooler_dsn: ConnectionTarget | None = None  # a pooler the user runs (route "pooler")
    keep_prepared: bool = False  # keep drivers' prepared statements behind a transaction pooler
    pgbouncer: Path | None = None  # the pgbouncer executable; None: PATH, then /usr/sbin
    # server activity and resources sampler; 0: off (the default: sampler.DEFAULT_INTERVAL_S)
    sample_interval_s: float = 0.2
    interleave: bool = False  # one trial at a time, the strategies' order rotating
    # --mix: (kind, weight) pairs; one mixed timed phase per trial instead of the four
    mix: tuple[tuple[str, int], ...] = ()
    cluster: str | None = None  # Dask scheduler address, or local:N (see measure/cluster.py)
    nodes: int | None = None  # how many of the cluster's workers; None: all
    cluster_timeout_s: float = 10.0  # how long to wait for the Dask scheduler to answer
    # -f/-b: scripts run instead of the CRUD phases, one timed phase per trial as --mix
    scripts: tuple[ScriptFile, ...] = ()
    protocol: str = "simple"  # -M: how the scripts' statements are sent (pgbench's default)
    scale: int = 1  # -s: the scripts' :scale
    script_seed: int = 0  # --random-seed: the scripts' random functions, trial t from seed + t
    allow_writes: bool = False  # scripts may write on a server poolbench did not start
    # --clone: run in a copy of the target's database (CREATE DATABASE ... TEMPLATE),
    # dropped at the end; scripts may write there (see db/clone.py, docs/clone.md)
    clone: bool = False
    # --tls: every connection with sslmode=require (the embedded server: with a self-signed
    # certificate; a DSN keeps a verifying sslmode it names)
    tls: bool = False
    # --rtt: milliseconds of round trip a delay relay adds (docs/network.md); None: no relay
    rtt_ms: float | None = None
    pooler_near: str = "server"  # --pooler-near: which side of the relay a pooler sits on
    relay_port: int | None = None  # --relay-port; None: a free one
    # --connect-samples: the connect-cost probe's connections (at least --workers); 0: off
    connect_samples: int = 50

    def __post_init__(self) -> None:
        for option, value, least in (("-n/--rows", self.rows, 1), ("-w/--workers", self.workers, 1),
                                     ("--trials", self.trials, 1), ("--warmup", self.warmup, 0),
                                     ("--pool-min", self.pool_min, 0),
                                     ("--pool-max", self.pool_max, 1),
                                     ("--processes", self.processes, 1)):
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"{option} must be a whole number >= {least}, got {value!r}")
        if self.pool_min > self.pool_max:
            raise ConfigError(f"--pool-min ({self.pool_min}) is above --pool-max "
                              f"({self.pool_max}); lower --pool-min or raise --pool-max")
        for option, number, unit in (("--acquire-timeout", self.acquire_timeout_s, "seconds"),
                                     ("--statement-timeout", self.statement_timeout_s, "seconds"),
                                     ("--duration", self.duration_s, "seconds"),
                                     ("--cluster-timeout", self.cluster_timeout_s, "seconds"),
                                     ("--warmup-seconds", self.warmup_s, "seconds"),
                                     ("--rate", self.rate, "operations per second")):
            if number is not None and not (isinstance(number, (int, float)) and number > 0
                                           and number != float("inf")):
                raise ConfigError(f"{option} must be a number of {unit} > 0, got {number!r}")
        if self.statement_timeout_s is not None \
                and not 0.001 <= self.statement_timeout_s <= STATEMENT_TIMEOUT_MAX_S:
            # PostgreSQL's statement_timeout is whole milliseconds of an int; 0 turns it off
            raise ConfigError(f"--statement-timeout {self.statement_timeout_s:g}: give "
                              f"seconds from 0.001 to {STATEMENT_TIMEOUT_MAX_S}")
        if self.statement_timeout_s is not None \
                and any(route.startswith("pgbouncer:") for route in self.via):
            raise ConfigError("--statement-timeout cannot reach the server through the "
                              "PgBouncer poolbench starts (it ignores clients' startup "
                              "options); set statement_timeout on the role or database, or "
                              "leave out --via pgbouncer:*")
        if self.baseline not in (None, "pgbench"):
            raise ConfigError(f"--baseline {self.baseline!r}: the only baseline is 'pgbench'")
        if not self.baseline_seconds >= 1:
            raise ConfigError("--baseline-seconds must be a number of seconds >= 1")
        if self.processes > self.workers:
            raise ConfigError(f"--processes ({self.processes}) is above -w/--workers "
                              f"({self.workers}); each process needs a worker")
        if self.processes > self.pool_max:
            raise ConfigError(f"--processes ({self.processes}) is above --pool-max "
                              f"({self.pool_max}); each process needs a pool of at least one")
        if not IDENTIFIER.match(self.table):
            raise ConfigError(f"--table {self.table!r} is not a valid identifier; use letters, "
                              "digits and _ (at most 63, not starting with a digit)")
        if self.pooler_size is not None and (not isinstance(self.pooler_size, int)
                                             or self.pooler_size < 1):
            raise ConfigError(f"--pooler-size must be a whole number >= 1, got "
                              f"{self.pooler_size!r}")
        if self.mix and (any(k not in MIX_KINDS or not 1 <= w <= MIX_WEIGHT_MAX
                             for k, w in self.mix)
                         or len({k for k, _ in self.mix}) != len(self.mix)):
            raise ConfigError(f"--mix {mix_text(self.mix)}: give kinds from {', '.join(MIX_KINDS)} "
                              f"with whole-number weights from 1 to {MIX_WEIGHT_MAX:,}, "
                              "each once")
        if self.mix and (starved := _starved_mix_error(self.mix)) is not None:
            raise starved
        if not (isinstance(self.sample_interval_s, (int, float))
                and 0 <= self.sample_interval_s <= 60):
            raise ConfigError(f"--sample-interval must be a number of seconds from 0 (off) to "
                              f"60, got {self.sample_interval_s!r}")
        if self.cluster is not None and self.processes > 1:
            raise ConfigError("--cluster and --processes both spread the workers; use one "
                              "(each node is one process)")
        if self.nodes is not None and (self.cluster is None or not isinstance(self.nodes, int)
                                       or self.nodes < 1):
            raise ConfigError("--nodes needs --cluster and a whole number >= 1")
        if "pooler" in self.via and self.pooler_dsn is None:
            raise ConfigError("--via pooler needs --pooler-dsn (the pooler you run)")
        if not (isinstance(self.script_seed, int) and 0 <= self.script_seed <= RANDOM_SEED_MAX):
            raise ConfigError(f"--random-seed must be a whole number from 0 to "
                              f"{RANDOM_SEED_MAX}, got {self.script_seed!r}")
        if self.script_seed and not self.scripts:
            raise ConfigError("--random-seed seeds the random functions of -f/-b scripts; "
                              "give scripts, or leave it out")
        if self.clone and "pooler" in self.via:
            raise ConfigError("--clone with --via pooler: the pooler you run (--pooler-dsn) "
                              "connects to its own databases, not to the clone; use --via "
                              "direct or pgbouncer:session/transaction (a PgBouncer "
                              "poolbench starts goes to the clone)")
        if self.scripts or self.protocol != "simple" or self.scale != 1:
            self._check_scripts()
        if self.rtt_ms is not None or self.pooler_near != "server" or self.relay_port:
            self._check_rtt()
        if not (isinstance(self.connect_samples, int) and 0 <= self.connect_samples <= 100_000):
            raise ConfigError(f"--connect-samples must be a whole number from 0 (no probe) to "
                              f"100000, got {self.connect_samples!r}")
        if not self.strategies:
            raise ConfigError("--strategies is empty; name at least one, e.g. psycopg:pool")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError("--strategies names a strategy twice; name each once")

    def _check_rtt(self) -> None:
        rtt = self.rtt_ms
        if rtt is not None and not (isinstance(rtt, (int, float)) and 0 <= rtt <= RTT_MAX_MS):
            raise ConfigError(f"--rtt {rtt!r}: give the round trip in milliseconds, from 0 to "
                              f"{RTT_MAX_MS:g} (e.g. 0.5 in a zone, 2 across zones)")
        if self.pooler_near not in ("server", "app"):
            raise ConfigError(f"--pooler-near {self.pooler_near!r}: choose server or app")
        if rtt is None:
            option = "--relay-port" if self.relay_port else "--pooler-near"
            raise ConfigError(f"{option} places the --rtt relay: give --rtt too")
        if self.relay_port is not None and not (isinstance(self.relay_port, int)
                                                and 1 <= self.relay_port <= 65535):
            raise ConfigError(f"--relay-port {self.relay_port!r}: give a port from 1 to 65535")
        if self.pooler_near == "app" and "pooler" in self.via:
            raise ConfigError("--pooler-near app puts the relay between the pooler and the "
                              "server, which poolbench cannot do for a pooler you run (--via "
                              "pooler): leave --pooler-near out")

    def _check_scripts(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"-M/--protocol {self.protocol!r}: choose simple, extended or "
                              "prepared")
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ConfigError(f"-s/--scale must be a whole number >= 1, got {self.scale!r}")
        if not self.scripts:
            return
        if self.mix:
            raise ConfigError("-f/-b scripts and --mix are two workloads (your scripts, or a "
                              "mix of the CRUD statements): give one of them")
        for script in self.scripts:
            if not isinstance(script.weight, int) or script.weight < 1:
                raise ConfigError(f"{script.path}@{script.weight}: a weight must be a whole "
                                  "number >= 1 (a script of weight 0 would never run)")
        if len({s.name for s in self.scripts}) != len(self.scripts):
            raise ConfigError("two scripts share a name: give each script once (or copy it "
                              "under another name)")
        cycle = sum(script_cycle(tuple(s.weight for s in self.scripts)))
        if cycle > SCRIPT_CYCLE_MAX:
            given = ", ".join(f"{s.path}@{s.weight}" for s in self.scripts)
            raise ConfigError(f"the scripts' weights ({given}) "
                              f"make a cycle of {cycle:,} runs; weights are ratios: keep "
                              f"their sum over their common divisor within {SCRIPT_CYCLE_MAX:,}")

    @property
    def pace(self) -> Pace:
        return Pace(duration_s=self.duration_s, rate=self.rate, warmup_s=self.warmup_s)

    def public_dict(self) -> dict[str, object]:
        """The config as JSON-ready data, with the target's password masked."""
        return {
            "target": self.target.masked() if self.target else "embedded",
            "target_source": self.target.source if self.target else "embedded",
            "strategies": list(self.strategies), "rows": self.rows, "workers": self.workers,
            "pool_min": self.pool_min, "pool_max": self.pool_max, "warmup": self.warmup,
            "warmup_s": self.warmup_s, "trials": self.trials, "table": self.table,
            "out_dir": str(self.out_dir),
            "acquire_timeout_s": self.acquire_timeout_s,
            "statement_timeout_s": self.statement_timeout_s, "duration_s": self.duration_s,
            "rate": self.rate, "processes": self.processes, "baseline": self.baseline,
            "baseline_seconds": self.baseline_seconds, "via": list(self.via),
            "pooler_size": self.effective_pooler_size,
            "pooler_dsn": self.pooler_dsn.masked() if self.pooler_dsn else None,
            "keep_prepared": self.keep_prepared, "cluster": self.cluster, "nodes": self.nodes,
            "sample_interval_s": self.sample_interval_s, "interleave": self.interleave,
            "mix": dict(self.mix) or None,
            **self._scripts_dict(),
            **({"clone": True} if self.clone else {}),  # a run without it: as before
            **({"tls": True} if self.tls else {}),  # a run without --tls: as before
            **({"rtt_ms": self.rtt_ms, "pooler_near": self.pooler_near}
               if self.rtt_ms is not None else {}),  # a run without --rtt: as before
        }

    def _scripts_dict(self) -> dict[str, object]:
        """Scripts' settings, only in a run of scripts (a CRUD run's config is as before):
        their names, paths, weights and texts' hashes, not the texts."""
        if not self.scripts:
            return {}
        return {"scripts": [{"name": s.name, "path": s.path, "weight": s.weight,
                             "sha256": s.sha256} for s in self.scripts],
                "protocol": self.protocol, "scale": self.scale,
                "script_seed": self.script_seed, "allow_writes": self.allow_writes}

    @property
    def effective_pooler_size(self) -> int:
        return self.pooler_size or self.pool_max
