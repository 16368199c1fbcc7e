"""The command line only: parse flags, build the config, call the library, print.

The one place that maps errors to exit codes and one-line messages.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from click.utils import PacifyFlushWrapper
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from poolbench import api
from poolbench.config import (
    DEFAULT_STRATEGIES,
    PROTOCOLS,
    RunConfig,
    parse_mix,
    parse_random_seed,
    resolve_target,
)
from poolbench.db.admin import connect_admin
from poolbench.db.clone import Clone
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget, redact
from poolbench.errors import (
    ConfigError,
    DataIntegrityError,
    Interrupted,
    PoolbenchError,
    SchemaConflict,
)
from poolbench.events import RunEvents
from poolbench.poolers.routes import parse_routes
from poolbench.report import written_files
from poolbench.report.console import render
from poolbench.results import RunResults
from poolbench.strategies import parse_strategy_names
from poolbench.workloads.scripted import load_scripts

F = TypeVar("F", bound=Callable[..., Any])


class ProgressView:
    """A rich progress bar per strategy and phase, fed by run events."""

    def __init__(self, console: Console, rows: int | None, trials: int,
                 warmups: int = 0) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.rows, self.trials, self.warmups = rows, trials, warmups
        self.tasks: dict[tuple[str, str], int] = {}
        self.current: int | None = None

    def subscribe(self, events: RunEvents) -> None:
        events.strategy_started.add_listener(self._strategy_started)
        events.phase_started.add_listener(self._phase_started)
        events.progress.add_listener(self._advance)
        # pgbench's turn: the bars' 10-a-second refresh would wake a core beside it, which
        # makes pgbench faster than run by hand (check/calibrate.py's wait_quietly)
        events.calibration_started.add_listener(lambda seconds: self.progress.stop())

    def _strategy_started(self, strategy: str, trials: int) -> None:
        self.progress.start()  # idempotent; started late so errors before it print alone
        self.trials = trials

    def _phase_started(self, strategy: str, trial: int, warmup: bool, phase: str,
                       total: int) -> None:
        key = (strategy, phase)
        if key not in self.tasks:  # one bar per strategy and phase (the mix has one)
            self.tasks[key] = self.progress.add_task(
                f"{strategy:<18} {phase:<6}",
                total=self.rows * self.trials if self.rows and phase != "mix" else None)
        self.current = self.tasks[key]
        label = "warm-up" if warmup else f"trial {trial - self.warmups + 1}"  # counted ones
        self.progress.update(self.current, description=f"{strategy:<18} {phase:<6} {label}")

    def _advance(self, advance: int) -> None:
        if self.current is not None and advance:
            self.progress.advance(self.current, advance)


class _InterruptHandler:
    """First SIGINT/SIGTERM: ask the run to stop cleanly. Second: exit at once, saying
    how to remove the rows the run may have left."""

    def __init__(self, stop: threading.Event, servers: list[EmbeddedServer]) -> None:
        self.stop = stop
        self.servers = servers
        self.signum: int | None = None
        self.run_tag: str | None = None
        self.table = "users"
        self.clone: Clone | None = None

    def run_started(self, run_tag: str, table: str) -> None:
        self.run_tag, self.table = run_tag, table

    def clone_ready(self, clone: Clone) -> None:
        self.clone = clone

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            self.stop.set()
            os.write(2, b"poolbench: stopping: finishing current operations, deleting this "
                        b"run's rows, writing partial results (again to exit at once)\n")
            return
        message = "poolbench: interrupted again; exiting now."
        if self.servers:
            for server in self.servers:  # an embedded server's rows go with the server
                server.stop(force_remove=True)
        elif self.clone is not None:  # the run's rows are in it, and go with it
            message += (f" The clone database {self.clone.name} may remain; drop it with: "
                        f"poolbench cleanup --run-tag {self.clone.run_tag} (same database "
                        "settings as the run)")
        elif self.run_tag:
            message += (f" Rows of run {self.run_tag} may remain; remove them with: poolbench "
                        f"cleanup --run-tag {self.run_tag} --table {self.table} "
                        "(same database settings as the run)")
        os.write(2, message.encode() + b"\n")
        os._exit(128 + signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Secrets:
    """Passwords of the targets this invocation resolved or started, so that no message
    or traceback can echo them. Filled by the commands, read by :func:`main`."""

    def __init__(self) -> None:
        self.passwords: list[str] = []

    def add(self, target: ConnectionTarget | None) -> ConnectionTarget | None:
        if target is not None:  # password, sslpassword...: every parameter named *pass*
            self.passwords.extend(target.secrets())
        return target

    def redact(self, text: str) -> str:
        return redact(text, *self.passwords)


def _fail(message: str, code: int, secrets: Secrets) -> None:
    click.echo(f"poolbench: error: {secrets.redact(message)}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="poolbench")
def cli() -> None:
    """Measure what connection pooling does for a PostgreSQL CRUD workload."""


# run's options that are a RunConfig field as they are: option name -> field
_CONFIG_FIELDS = {
    "rows": "rows", "workers": "workers", "pool_min": "pool_min", "pool_max": "pool_max",
    "warmup": "warmup", "warmup_seconds": "warmup_s", "trials": "trials",
    "acquire_timeout": "acquire_timeout_s", "statement_timeout": "statement_timeout_s",
    "duration": "duration_s", "rate": "rate", "processes": "processes",
    "baseline": "baseline", "baseline_seconds": "baseline_seconds", "table": "table",
    "pooler_size": "pooler_size", "keep_prepared": "keep_prepared",
    "pgbouncer_bin": "pgbouncer", "cluster": "cluster", "nodes": "nodes",
    "cluster_timeout": "cluster_timeout_s",
    "sample_interval": "sample_interval_s", "interleave": "interleave", "out_dir": "out_dir",
    "keep_server": "keep_server", "show_password": "show_password", "protocol": "protocol",
    "scale": "scale", "allow_writes": "allow_writes", "clone": "clone", "tls": "tls",
    "rtt": "rtt_ms", "pooler_near": "pooler_near", "relay_port": "relay_port",
    "connect_samples": "connect_samples",
}


def _run_config(secrets: Secrets, options: dict[str, Any], **overrides: Any) -> RunConfig:
    """The RunConfig of run's options as click parsed them (``overrides`` win; an option
    the command does not take keeps RunConfig's default); the passwords of the targets
    they name are remembered, to be masked in any message. Scripts (``-f``/``-b``) are
    read and parsed here, before anything connects."""
    scripts = load_scripts(options.get("script_files", ()), options.get("builtin_scripts", ()))
    pooler_dsn = options["pooler_dsn"]
    pooler = secrets.add(ConnectionTarget.from_dsn(pooler_dsn, source="--pooler-dsn")
                         if pooler_dsn else None)
    fields: dict[str, Any] = {field: options[name] for name, field in _CONFIG_FIELDS.items()
                              if name in options}
    fields.update(
        target=secrets.add(resolve_target(dsn=options["dsn"], env_file=options["env_file"],
                                          environ=os.environ)),
        strategies=parse_strategy_names(options["strategies"]),
        via=parse_routes(options["via"], pooler_dsn=pooler is not None), pooler_dsn=pooler,
        mix=parse_mix(options["mix"]) if options["mix"] is not None else (),
        chart=not options["no_chart"], scripts=scripts)
    if options.get("random_seed") is not None:
        fields["script_seed"] = parse_random_seed(options["random_seed"])
    fields.update(overrides)
    if scripts and options["mix"] is None:
        fields["mix"] = ()  # a command's own default mix (sweep's) gives way to the scripts
    return RunConfig(**fields)


DEBUG = "poolbench.debug"  # in the context's meta: --debug was given (main prints tracebacks)


def _remember_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--debug: main prints tracebacks, and psycopg_pool's log shows."""
    ctx.meta[DEBUG] = value  # meta is shared with the group's context, which main keeps
    # psycopg_pool logs each connection it discards; poolbench counts those as errors.
    logging.getLogger("psycopg.pool").setLevel(logging.INFO if value else logging.ERROR)
    return value


def _one_rtt(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """run's ``--rtt MS``: one round trip; a list is a sweep's axis."""
    if value is None:
        return None
    if "," in value:
        raise click.BadParameter(f"{value!r}: a list of RTTs is an axis of poolbench sweep; "
                                 "run takes one, e.g. --rtt 1")
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give the round trip in milliseconds, "
                                 "e.g. 1") from None


def run_options(*, point: bool = False, baseline: bool = True) -> Callable[[F], F]:
    """run's options, one list for every command that runs the benchmark.

    ``run`` takes them all, ``calibrate`` all but ``--baseline`` (``baseline=False``: it
    is implied). A sweep (``point=True``) takes those each of its points uses, with a
    point's defaults (one trial of 3 s); a few are a whole run's only, since a sweep has
    its own (a list of -w/--workers, --warmup in seconds) or runs no pgbench and keeps no
    server.
    """

    def only(wanted: bool, *options: Callable[[F], F]) -> list[Callable[[F], F]]:
        return list(options) if wanted else []

    options = [
        click.option("--dsn",
                     help="PostgreSQL URI or key=value DSN (overrides every other source)."),
        click.option("--env-file", type=click.Path(path_type=Path),
                     help="A .env file with DB_NAME, USER_NAME, PASSWORD, HOST, PORT "
                          "[default: ./.env]."),
        click.option("--strategies", default=",".join(DEFAULT_STRATEGIES), show_default=True,
                     help="Comma-separated driver:pool names, or 'all'."),
        click.option("-n", "--rows", type=int, default=1000, show_default=True,
                     help="Rows each trial creates, reads, updates and deletes (with "
                          "scripts: script runs per trial)."),
        *only(not point,
              click.option("-w", "--workers", type=int, default=50, show_default=True,
                           help="Concurrent workers (threads, or asyncio tasks for "
                                "asyncpg).")),
        click.option("--pool-min", type=int, default=1, show_default=True),
        click.option("--pool-max", type=int, default=50, show_default=True),
        *only(not point,
              click.option("--warmup", type=int, default=1, show_default=True,
                           help="Trials run first and not counted."),
              click.option("--warmup-seconds", type=float, default=None,
                           help="Each warm-up trial runs its phases for this many seconds "
                                "instead of --duration or -n rows.")),
        click.option("--trials", type=int, default=6 if point else 3, show_default=True,
                     help="Counted trials" + (": the sweep's rounds, each point once per "
                                              "round, in a fresh order each round."
                                              if point else ".")),
        click.option("--acquire-timeout", type=float, default=30.0, show_default=True,
                     help="Seconds a worker may wait for a pooled connection."),
        click.option("--statement-timeout", type=float, default=None,
                     help="Seconds a statement may run (server statement_timeout) "
                          "[default: server's]."),
        click.option("--duration", type=float, default=1.0 if point else None,
                     show_default=point,
                     help="Run create, read and update for this many seconds each instead "
                          "of -n rows (pgbench -T)."),
        click.option("--rate", type=float, default=None,
                     help="Open loop: schedule this many operations per second (pgbench -R); "
                          "latency is also reported from each operation's scheduled start."),
        click.option("--processes", type=int, default=1, show_default=True,
                     help="Spread the workers (and the pool: --pool-max/P each) over P "
                          "processes."),
        click.option("--mix", default=None,
                     help="One mixed timed phase per trial instead of the four, each "
                          "operation's kind by weight, e.g. read=80,update=10,create=5,"
                          "delete=5" + (" [default: that mix]." if point else ".")),
        click.option("-f", "--file", "script_files", multiple=True, metavar="FILE[@WEIGHT]",
                     help="Run this pgbench script instead of the CRUD phases, one script "
                          "run per operation, chosen by weight (repeatable, as pgbench's "
                          "-f; see docs/scripts.md)."),
        click.option("-b", "--builtin", "builtin_scripts", multiple=True,
                     metavar="NAME[@WEIGHT]",
                     help="Run a pgbench built-in script: tpcb-like, simple-update, "
                          "select-only (their tables: pgbench -i; repeatable)."),
        click.option("-M", "--protocol", type=click.Choice(PROTOCOLS), default="simple",
                     show_default=True,
                     help="How scripts' statements are sent (pgbench's -M and its default), "
                          "each driver's nearest mode; results say what it became."),
        click.option("-s", "--scale", type=int, default=1, show_default=True,
                     help="The scripts' :scale (pgbench's -s)."),
        click.option("--random-seed", default=None, metavar="N|time|rand",
                     help="Seed of the scripts' random functions (pgbench's --random-seed; "
                          "given to pgbench with --baseline too): the same seed draws the "
                          "same values for each client [default: 0]."),
        click.option("--allow-writes", is_flag=True,
                     help="Let scripts write on a server poolbench did not start (otherwise "
                          "they run in read-only sessions; see docs/scripts.md for the "
                          "risk)."),
        click.option("--clone", is_flag=True,
                     help="Run in a copy of the database (CREATE DATABASE "
                          "poolbench_clone_TAG TEMPLATE it), dropped at the end; scripts may "
                          "write there (see docs/clone.md)."),
        click.option("--interleave", is_flag=True,
                     help="Run one trial of each strategy at a time, rotating their order "
                          "every round (each trial opens the strategy's pool afresh)."),
        click.option("--sample-interval", type=float, default=RunConfig.sample_interval_s,
                     show_default=True,
                     help="Seconds between samples of pg_stat_activity and of CPU/RSS "
                          "(0: off)."),
        click.option("--cluster", envvar="DASK_SCHEDULER_ADDRESS", default=None,
                     help="Spread each strategy's workers over a Dask cluster: "
                          "tcp://host:8786, tls://..., or local:N (a LocalCluster of N "
                          "processes) [env: DASK_SCHEDULER_ADDRESS]."),
        click.option("--nodes", type=int, default=None,
                     help="Use this many of the cluster's workers [default: all]."),
        click.option("--cluster-timeout", type=float, default=10.0, show_default=True,
                     help="Seconds to wait for the --cluster scheduler to answer."),
        *only(baseline and not point,
              click.option("--baseline", type=click.Choice(["pgbench"]), default=None,
                           help="After the strategies, run pgbench with the same statements "
                                "(or -f/-b scripts) and clients and report poolbench/pgbench "
                                "ratios.")),
        *only(not point,
              click.option("--baseline-seconds", type=float, default=5.0, show_default=True,
                           help="Seconds per pgbench run (6 runs: 3 scripts, persistent "
                                "and -C; with -f/-b: 2 runs, of --duration if given).")),
        click.option("--via", default="direct", show_default=True,
                     help="Routes, comma-separated: direct, pgbouncer:session, "
                          "pgbouncer:transaction (a PgBouncer poolbench starts), pooler "
                          "(--pooler-dsn). Every strategy runs over every route."),
        click.option("--pooler-size", type=int, default=None,
                     help="PgBouncer's default_pool_size (server connections) "
                          "[default: --pool-max]."),
        click.option("--pooler-dsn", default=None,
                     help="DSN of a pooler you run (PgBouncer, pgcat, ...), for the route "
                          "'pooler'."),
        click.option("--pgbouncer-bin", type=click.Path(path_type=Path), default=None,
                     help="The pgbouncer executable [default: pgbouncer on PATH, else "
                          "/usr/sbin]."),
        click.option("--keep-prepared", is_flag=True,
                     help="Keep the drivers' prepared statements behind a transaction pooler "
                          "(by default they are turned off where the pooler cannot keep "
                          "them)."),
        click.option("--tls", is_flag=True,
                     help="Every connection over TLS (sslmode=require): the embedded server "
                          "with a self-signed certificate, PgBouncer routes too."),
        click.option("--rtt", default=None, metavar="MS,..." if point else "MS",
                     callback=None if point else _one_rtt,
                     help="Put the database this many milliseconds of round trip away: a "
                          "relay poolbench starts holds each direction MS/2 (see "
                          "docs/network.md)." + (" A list (0,1,5) is an axis: every point "
                                                  "at each RTT, 0 direct (docs/sweep.md)."
                                                  if point else "")),
        click.option("--pooler-near", type=click.Choice(["server", "app"]), default="server",
                     show_default=True,
                     help="With --rtt and a PgBouncer route: the pooler sits by the server "
                          "(the relay before it) or by the application (the relay after "
                          "it)."),
        click.option("--relay-port", type=int, default=None,
                     help="The --rtt relay's port on 127.0.0.1 [default: a free one]."),
        click.option("--connect-samples", type=int, default=50, show_default=True,
                     help="New connections the connect-cost probe makes, with a no-pool "
                          "strategy (at least --workers; 0: no probe, the distance model "
                          "then counts round trips from the protocol)."),
        click.option("--table", default="users", show_default=True,
                     help="Table to benchmark on."),
        click.option("--out", "out_dir", type=click.Path(path_type=Path),
                     default=Path("reports"), show_default=True,
                     help="Folder for " + ("sweep.json and sweep.png." if point else
                                           "the chart, results.json and results.csv.")),
        click.option("--no-chart", is_flag=True, help="Skip the PNG chart."),
        *only(not point,
              click.option("--keep-server", is_flag=True,
                           help="Keep the embedded server running after the run and print "
                                "its DSN."),
              click.option("--show-password", is_flag=True,
                           help="With --keep-server: show the kept server's password in its "
                                "printed DSN (never the password of your own server).")),
        click.option("--debug", is_flag=True, callback=_remember_debug,
                     help="Print tracebacks (passwords still masked)."),
    ]

    def apply(command: F) -> F:
        for option in reversed(options):  # the first listed is the first in --help
            command = option(command)
        return command

    return apply


@cli.command()
@run_options()
@click.pass_obj
def run(secrets: Secrets, **options: Any) -> None:
    """Run the CRUD benchmark for each strategy and report it."""
    _run(secrets, options)


@cli.command()
@run_options(baseline=False)
@click.pass_obj
def calibrate(secrets: Secrets, **options: Any) -> None:
    """`poolbench run --baseline pgbench`: the run, then pgbench with the same statements
    and clients on the same server, and poolbench/pgbench ratios. Takes run's options."""
    _run(secrets, {**options, "baseline": "pgbench"})


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A number option's callback: its value, refused when nan or infinite (click's ranges
    let both by)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value}: give a finite number", param=param)
    return value


def _stdout_console() -> Console:
    """Standard output's console: a terminal's width, or ``COLUMNS`` when set; a pipe or
    file without it gets 140 columns (the full table, not rich's 80-column default)."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140
    return Console(width=width)


def _run(secrets: Secrets, options: dict[str, Any]) -> None:
    """run and calibrate: one run of the benchmark, its progress, its reports."""
    config = _run_config(secrets, options)
    out = _stdout_console()
    err = Console(stderr=True)
    events = RunEvents()
    view = ProgressView(err, None if config.duration_s or config.warmup_s else config.rows,
                        config.warmup + config.trials, config.warmup)
    view.subscribe(events)
    kept: list[EmbeddedServer] = []
    # --show-password reveals only a password poolbench made (a kept embedded server's).
    events.connected.add_listener(lambda target, server: err.print(
        f"database: {target.masked(show_password=config.show_password and target.embedded)} "
        f"({target.source}), "
        f"PostgreSQL {server['server_version']}, max_connections={server['max_connections']}",
        highlight=False))
    events.clone_ready.add_listener(lambda clone: err.print(clone_line(clone), highlight=False))
    events.calibration_started.add_listener(lambda seconds: err.print(
        f"calibrating against pgbench (about {seconds:.0f} s)...", highlight=False))
    stop = threading.Event()
    interrupt = _InterruptHandler(stop, kept)
    events.run_started.add_listener(interrupt.run_started)
    events.clone_ready.add_listener(interrupt.clone_ready)
    interrupted: Interrupted | None = None
    try:
        with interrupt.installed():
            results = api.run(config, events=events, stop=stop,
                              on_server=lambda s: kept.append(s) or secrets.add(s.target))
    except Interrupted as exc:
        interrupted = exc
    finally:
        if view.progress.live.is_started:
            view.progress.stop()
    if interrupted is not None:
        if interrupted.results is not None:
            render(interrupted.results, out)
            _check_data(interrupted.results)  # a failed data check outranks the interrupt
        interrupted.exit_code = 128 + (interrupt.signum or signal.SIGINT)
        raise interrupted
    render(results, out)
    written = ", ".join(written_files(results, chart=config.chart))
    out.print(f"Reports written to {config.out_dir}/ ({written})", highlight=False)
    if config.keep_server and kept:
        server = kept[0]
        assert server.target is not None
        out.print("Embedded server kept: "
                  f"{server.target.masked(show_password=config.show_password)}",
                  highlight=False)
        out.print(f"Stop it with: {server.stop_command()}", highlight=False)
    _check_data(results)


def clone_line(clone: Clone) -> str:
    """--clone: what was made, its size, how long CREATE DATABASE took."""
    return (f"clone: {clone.name}, a copy of {clone.template} ({clone.size_bytes / 2**20:.1f} "
            f"MiB), made in {clone.create_s:.2f} s; dropped when the run ends")


def _check_data(results: RunResults) -> None:
    if results.verification is not None and not results.verification.ok:
        raise DataIntegrityError(f"run {results.run_tag}: data check failed (see above); "
                                 f"remaining rows carry the prefix {results.run_tag}_")


@cli.command()
@click.option("--run-tag", required=True, help="The tag of the run whose rows to delete.")
@click.option("--table", default="users", show_default=True)
@click.option("--dsn", help="PostgreSQL URI or key=value DSN of the run's database.")
@click.option("--env-file", type=click.Path(path_type=Path), help="A .env file [default: ./.env].")
@click.pass_obj
def cleanup(secrets: Secrets, run_tag: str, table: str, dsn: str | None,
            env_file: Path | None) -> None:
    """Delete the rows a dead run left (usernames starting with its tag), and only those;
    drop its --clone database if left (only one whose name and comment say poolbench made
    it for that run)."""
    from poolbench.config import IDENTIFIER
    from poolbench.db.clone import clone_name, drop_leftover_clone
    from poolbench.db.workload import (
        RUN_TAG,
        RunTable,
        check_shape,
        count_own_rows,
        delete_own_rows,
        quote_ident,
    )

    if not RUN_TAG.match(run_tag):
        raise ConfigError(f"--run-tag {run_tag!r} is not a run tag (pb + 8 hex digits, as "
                          "printed by the run); nothing deleted")
    if not IDENTIFIER.match(table):
        raise ConfigError(f"--table {table!r} is not a valid identifier")
    target = secrets.add(resolve_target(dsn=dsn, env_file=env_file, environ=os.environ))
    if target is None:
        raise ConfigError("cleanup needs the database the run used: give --dsn, DATABASE_URL, "
                          "the seed's .env variables or PG* (an embedded server is gone with "
                          "its rows)")
    prefix = RunTable(table, run_tag).prefix
    clone = drop_leftover_clone(target, run_tag)
    if clone == "dropped":
        click.echo(f"dropped database {clone_name(run_tag)} (the --clone of run {run_tag})")
    elif clone == "not ours":
        click.echo(f"left database {clone_name(run_tag)} as it is: its comment does not say "
                   f"poolbench made it for run {run_tag}")
    with connect_admin(target) as conn:
        if conn.execute("SELECT to_regclass(%s)", (quote_ident(table),)).fetchone()[0] is None:
            if clone != "absent":  # a --clone run's rows were in its clone
                click.echo(f"no table {table} in {target.dbname}: no rows to delete")
                return
            raise ConfigError(f"--table {table!r} does not exist in {target.masked()}; "
                              "give the table the run used")
        try:  # only a table of poolbench's shape can hold a run's rows
            check_shape(conn, table)
        except SchemaConflict:
            raise SchemaConflict(f"table {table!r} is not of poolbench's shape, so no run "
                                 "left rows there; nothing deleted") from None
        deleted = delete_own_rows(conn, table, prefix)
        left = count_own_rows(conn, table, prefix)
    click.echo(f"deleted {deleted} rows of run {run_tag} from {table}; {left} left")


@cli.command()
@click.option("-b", "--builtin", "builtin_name", default="tpcb-like", show_default=True,
              metavar="NAME",
              help="The built-in the tables are for: tpcb-like, simple-update, select-only "
                   "(all three use the same tables).")
@click.option("-s", "--scale", type=click.IntRange(1, 2_147_483_647), default=1, show_default=True,
              help="pgbench's scale: 100,000 accounts, 10 tellers and 1 branch each.")
@click.option("--dsn", help="PostgreSQL URI or key=value DSN [default: as for run; there "
                            "must be one].")
@click.option("--env-file", type=click.Path(path_type=Path), help="A .env file [default: ./.env].")
@click.option("--allow-writes", is_flag=True,
              help="Confirm: create and fill pgbench's tables in this database.")
@click.pass_obj
def init(secrets: Secrets, builtin_name: str, scale: int, dsn: str | None,
         env_file: Path | None, allow_writes: bool) -> None:
    """Make pgbench's tables for its built-in scripts (run -b NAME), with pgbench's own
    initializer; refused if any of them exists (never dropped)."""
    from poolbench.workloads.script import builtin_script

    builtin_script(builtin_name)  # an unknown name: one line, before anything connects
    target = secrets.add(resolve_target(dsn=dsn, env_file=env_file, environ=os.environ))
    made = api.init_pgbench_tables(target=target, scale=scale, allow_writes=allow_writes)
    assert target is not None  # init_pgbench_tables refuses without one
    rows = ", ".join(f"{name} {count:,}" for name, count in made.rows)
    click.echo(f"pgbench's tables made at scale {made.scale} in {target.masked()} "
               f"({made.seconds:.1f} s): {rows} rows")
    click.echo(f"Run them with: poolbench run -b {builtin_name} -s {made.scale} --allow-writes "
               "(same database settings)")


def _rtt_list(value: str | None) -> tuple[float, ...] | None:
    """sweep's ``--rtt 0,1,5``, in the order given (checked by the sweep: range, twice)."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"--rtt {value!r}: give round trips in milliseconds like 0,1,5") \
            from None


def _int_list(option: str, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        found = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} {value!r}: give whole numbers like 1,2,4,8") from None
    if not found or min(found) < 1:
        raise ConfigError(f"{option} {value!r}: give whole numbers >= 1")
    return tuple(sorted(set(found)))


DEFAULT_MIX = "read=80,update=10,create=5,delete=5"


@cli.command()
@click.option("--pool-sizes", default=None,
              help="Pool sizes to sweep (min = max), e.g. 1,2,4,8,16,32 [default: --pool-max].")
@click.option("-w", "--workers", "workers_list", default="50", show_default=True,
              help="Client counts to sweep, e.g. 1,2,4,8 (one number: at every point).")
@click.option("--p99-slo", type=click.FloatRange(min=0, min_open=True), default=None,
              callback=_finite,
              help="Milliseconds: the recommended size must keep p99 within this.")
@click.option("--phases", "four_phases", is_flag=True,
              help="Sweep the four-phase workload instead of the default mix "
                   "(read=80,update=10,create=5,delete=5).")
@click.option("--app-instances", type=click.IntRange(min=1), default=None,
              help="How many app instances will each hold such a pool (checked against "
                   "max_connections).")
@click.option("--budget", "budget_s", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Seconds the whole sweep may take: after the grid, add sizes "
                                 "between the recommendation's neighbours (8 and 16: try 12) "
                                 "while they fit in it, until it is pinned to one step "
                                 "[default: the grid alone].")
@click.option("--warmup", "warmup_seconds", type=click.FloatRange(min=0), default=1.0,
              show_default=True, callback=_finite,
              help="Seconds each point runs on its fresh pool before it is measured (0: none).")
@run_options(point=True)
@click.pass_obj
def sweep(secrets: Secrets, pool_sizes: str | None, workers_list: str, p99_slo: float | None,
          budget_s: float | None,
          four_phases: bool, app_instances: int | None, warmup_seconds: float,
          **options: Any) -> None:
    """Run the benchmark at several pool sizes (or client counts), fit the Universal
    Scalability Law, and recommend a pool size with its reason. Takes run's options too."""
    from rich.progress import Progress

    from poolbench.report.sweep_view import render_sweep

    clients = _int_list("--workers", workers_list)
    assert clients is not None  # the option has a default
    rtts = _rtt_list(options.pop("rtt"))
    if rtts is not None:
        api.check_rtts(rtts)
    # A point is a run after a warm-up of --warmup seconds; no pgbench, no kept server.
    config = _run_config(secrets, options, workers=max(clients),
                         rtt_ms=max(rtts) or None if rtts else None,
                         warmup=1 if warmup_seconds > 0 else 0,
                         warmup_s=warmup_seconds or None,
                         mix=() if four_phases else parse_mix(options["mix"] or DEFAULT_MIX))
    sizes = _int_list("--pool-sizes", pool_sizes) or (config.pool_max,)
    out = _stdout_console()
    stop = threading.Event()
    interrupt = _InterruptHandler(stop, [])
    # Started once the sweep has checked its input, so a refusal prints alone.
    progress = Progress(console=Console(stderr=True))
    task = progress.add_task("sweep", total=None)

    def on_point(done: int, total: int, point: object) -> None:
        if point is None:
            progress.update(task, total=total)
            progress.start()
            return
        progress.update(task, completed=done, total=total,
                        description=f"sweep: {point.strategy} pool {point.pool_size or '-'} "
                                    f"workers {point.workers}" + (
                                        "" if point.rtt_ms is None
                                        else f" rtt {point.rtt_ms:g} ms"))

    def on_clone(clone: Clone) -> None:
        progress.console.print(clone_line(clone), highlight=False)
        interrupt.clone_ready(clone)

    try:
        with interrupt.installed():
            results = api.sweep(config, pool_sizes=sizes, workers=clients,
                                p99_slo_ms=p99_slo, app_instances=app_instances, stop=stop,
                                on_point=on_point, budget_s=budget_s,
                                on_clone=on_clone, rtts=rtts)
    except Interrupted as exc:
        if progress.live.is_started:
            progress.stop()
        if exc.results is not None:
            render_sweep(exc.results, out)
        exc.exit_code = 128 + (interrupt.signum or signal.SIGINT)
        raise
    except PoolbenchError as exc:
        # The points done before the error are written (partial): shown, then the error.
        if progress.live.is_started:
            progress.stop()
        if exc.results is not None:
            render_sweep(exc.results, out)
            out.print(f"Partial sweep written to {config.out_dir}/", highlight=False)
        raise
    finally:
        if progress.live.is_started:
            progress.stop()
    render_sweep(results, out)
    written = "sweep.json, sweep.png" if config.chart else "sweep.json"
    out.print(f"Sweep written to {config.out_dir}/ ({written})", highlight=False)


@cli.command("connect-cost")
@click.option("--dsn", help="PostgreSQL URI or key=value DSN [default: as for run].")
@click.option("--env-file", type=click.Path(path_type=Path), help="A .env file [default: ./.env].")
@click.option("--samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Connections per measurement.")
@click.option("--concurrency", default="1,8", show_default=True,
              help="Thread counts at which each driver's connect() is timed.")
@click.option("--drivers", default="psycopg,psycopg2,asyncpg", show_default=True)
@click.option("--tls", is_flag=True,
              help="Connect with sslmode=require (the embedded server: with a self-signed "
                   "certificate).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports"),
              show_default=True, help="Folder for connect_cost.json.")
@click.pass_obj
def connect_cost_command(secrets: Secrets, dsn: str | None, env_file: Path | None, samples: int,
                         concurrency: str, drivers: str, tls: bool, out_dir: Path) -> None:
    """What a new connection costs: TCP, TLS, authentication (SCRAM round trips and key
    derivation), backend start, first query; and each driver's connect() under load."""
    import dataclasses
    import json

    from poolbench.report import atomic_write, check_writable
    from poolbench.report.console import render_connect_cost

    try:
        levels = tuple(int(n) for n in concurrency.split(","))
    except ValueError:
        raise ConfigError(f"--concurrency {concurrency!r}: give thread counts like 1,8") from None
    chosen = tuple(d.strip() for d in drivers.split(",") if d.strip())
    unknown = [d for d in chosen if d not in api.PROBED_DRIVERS]
    if unknown or not chosen:
        raise ConfigError(f"--drivers: choose from {', '.join(api.PROBED_DRIVERS)}")
    target = secrets.add(resolve_target(dsn=dsn, env_file=env_file, environ=os.environ))
    check_writable(out_dir)
    cost = api.measure_connect_cost(target=target, samples=samples, concurrency=levels,
                                    drivers=chosen, tls=tls,
                                    on_server=lambda s: secrets.add(s.target))
    render_connect_cost(cost, _stdout_console())
    atomic_write(out_dir / "connect_cost.json",
                 json.dumps(dataclasses.asdict(cost), indent=2).encode() + b"\n")


@cli.command()
@click.option("--dsn", help="PostgreSQL URI or key=value DSN of the server to read "
                            "[default: as for run; there must be one].")
@click.option("--env-file", type=click.Path(path_type=Path), help="A .env file [default: ./.env].")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many statements to keep.")
@click.option("--by", type=click.Choice(["calls", "time"]), default="calls", show_default=True,
              help="Rank statements by their calls or by their total time.")
@click.option("--sample", "sample_s", type=click.FloatRange(min=0), default=0.0,
              callback=_finite,
              show_default=True, help="Seconds to sample pg_stat_activity for the live "
                                      "concurrency (suggested --workers); 0: do not sample.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="A new (or empty) folder for the scripts and workload.txt.")
@click.pass_obj
def capture(secrets: Secrets, dsn: str | None, env_file: Path | None, top: int, by: str,
            sample_s: float, out_dir: Path) -> None:
    """The workload the server has been running: one pgbench-format script per top statement
    of pg_stat_statements (read in a read-only session), with its weight, and workload.txt
    holding the -f FILE@WEIGHT arguments for run and sweep."""
    from poolbench.workloads.capture import capture as capture_workload
    from poolbench.workloads.capture import summary_lines

    target = resolve_target(dsn=dsn, env_file=env_file, environ=os.environ)
    if target is None:
        raise ConfigError("capture reads a running server's pg_stat_statements: give --dsn "
                          "(or DATABASE_URL, or the seed's DB_* variables)")
    secrets.add(target)
    result = capture_workload(target, out_dir=out_dir, top=top, by=by, sample_s=sample_s)
    for line in summary_lines(result):
        click.echo(line)


@cli.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(min=0), default=10.0, show_default=True,
              callback=_finite,  # nan: no change would exceed it, the gate off
              help="Percent: exit 1 when a significant throughput drop or p99 rise beyond "
                   "the runs' noise exceeds it.")
@click.option("--markdown", "markdown_file", type=click.Path(path_type=Path),
              help="Also write the comparison as Markdown to this file.")
@click.option("--html", "html_file", type=click.Path(path_type=Path),
              help="Also write the comparison as an HTML page to this file.")
def compare(base: Path, new: Path, threshold: float, markdown_file: Path | None,
            html_file: Path | None) -> None:
    """Compare two runs (results.json files), or two folders of runs (every results.json
    below each: the run is then the unit): per strategy and phase, throughput, p50 and p99,
    the change and whether it is significant; exit 1 on a significant regression."""
    from poolbench.analysis.compare import compare_sides, load_side
    from poolbench.report import atomic_write, check_file_writable
    from poolbench.report.compare_view import (
        comparison_html,
        comparison_markdown,
        render_comparison,
    )

    for option, path in (("--markdown", markdown_file), ("--html", html_file)):
        if path is not None:  # before comparing: exit 1 must mean a regression only
            check_file_writable(option, path)
    result = compare_sides(load_side(base), load_side(new), base_name=str(base),
                           new_name=str(new), threshold_pct=threshold)
    render_comparison(result, _stdout_console())
    if not result.changes:
        raise ConfigError(f"{base} and {new} have no strategy and phase in common: nothing "
                          "was compared")
    for path, text in ((markdown_file, comparison_markdown), (html_file, comparison_html)):
        if path is not None:
            atomic_write(path, text(result).encode())
    if result.regressions:
        sys.exit(1)


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), help="TCP port [default: a free one].")
@click.option("--max-connections", type=click.IntRange(5, 10000), default=200, show_default=True)
@click.option("--show-password", is_flag=True, help="Print the DSN with its password.")
@click.pass_obj
def server(secrets: Secrets, port: int | None, max_connections: int, show_password: bool) -> None:
    """Start an embedded PostgreSQL in the foreground and print its DSN (Ctrl-C stops it)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedServer(max_connections=max_connections, port=port) as srv:
        assert srv.target is not None
        secrets.add(srv.target)
        click.echo(srv.target.masked(show_password=show_password))
        click.echo(f"PostgreSQL at {srv.data_dir}; Ctrl-C to stop and remove it.", err=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error becomes one line on stderr and an exit code.

    Every message and ``--debug`` traceback is redacted with the passwords of the
    targets the command resolved or started (whatever their source: ``--dsn``,
    ``DATABASE_URL``, ``.env``, ``PG*``, the embedded server), in this one place.
    """
    args = sys.argv[1:] if argv is None else argv
    secrets = Secrets()
    meta: dict[str, Any] = {}  # the command's context fills it as it parses: DEBUG
    try:
        with cli.make_context("poolbench", list(args), obj=secrets) as ctx:
            meta = ctx.meta
            cli.invoke(ctx)
    except PoolbenchError as exc:
        if meta.get(DEBUG):
            click.echo(secrets.redact(traceback.format_exc()), err=True)
        _fail(str(exc), exc.exit_code, secrets)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        _fail(exc.format_message(), 2, secrets)
    except (KeyboardInterrupt, click.Abort):
        _fail("interrupted", 130, secrets)
    except BrokenPipeError:  # the reader of our output went away (`| head`), as click does
        sys.stdout, sys.stderr = PacifyFlushWrapper(sys.stdout), PacifyFlushWrapper(sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if meta.get(DEBUG):
            click.echo(secrets.redact(traceback.format_exc()), err=True)
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)", 1,
              secrets)
