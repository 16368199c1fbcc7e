"""Calibration against pgbench: the same statements on the same server at the same client
count, run by PostgreSQL's own load generator, so poolbench's figures have a reference.

pgbench is the one shipped with the embedded server's binaries (``db/binaries.py``), else
the one on PATH. It runs custom scripts on the run's table, never pgbench's own tables:

- ``read``: ``SELECT id, username, email, created_at ... WHERE id = :id``;
- ``update``: ``UPDATE ... SET email = ... WHERE id = :id``;
- ``insert+delete``: an insert ``RETURNING id`` and the delete of that row.

Reads and updates address rows created for the purpose (usernames carry the
run tag, so the end-of-run sweep deletes them like any other row of the run).
Each script runs once on persistent connections (``-M prepared``: pgbench's
best case) and once with ``-C`` (a new connection per transaction, ``-M
simple``). Latency percentiles come from pgbench's per-transaction log,
bucketed like poolbench's own histograms.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from poolbench.db.admin import AdminSession
from poolbench.db.binaries import find_pgbench
from poolbench.db.pgbench_connection import (  # noqa: F401 (PGBENCH_APPLICATION_NAME: read from here)
    PGBENCH_APPLICATION_NAME,
    connection_env,
    connection_flags,
)
from poolbench.db.target import ConnectionTarget, redact
from poolbench.db.workload import RunTable, quote_ident
from poolbench.errors import ServerError
from poolbench.measure.metrics import BucketCounts, bucket_index
from poolbench.results import (
    Calibration,
    LatencySummary,
    PgbenchFigure,
    PhaseResult,
    Ratio,
    ScriptRatio,
    ScriptTps,
    StrategyResult,
)

# Persistent runs log a sample of their transactions: writing a line for each of ~100,000
# a second costs pgbench a third of its throughput, and its tps must be what pgbench
# gives when run by hand. -C runs (hundreds a second) log every transaction.
LOG_SAMPLING_RATE = 0.02
MIN_READ_ROWS = 1000


def scripts(workload: RunTable, first_id: int, last_id: int) -> dict[str, str]:
    t = quote_ident(workload.table)
    tag = f"'{workload.prefix}pgbench_'"  # run tag: the sweep deletes whatever is left
    pick = f"\\set id random({first_id}, {last_id})\n"
    return {
        "read": pick + f"SELECT id, username, email, created_at FROM {t} WHERE id = :id;\n",
        "update": pick + f"UPDATE {t} SET email = username || '.p@poolbench.invalid' "
                         "WHERE id = :id;\n",
        "insert+delete": (f"INSERT INTO {t} (username, email) VALUES ({tag} || txid_current(), "
                          f"{tag} || txid_current() || '@poolbench.invalid') RETURNING id \\gset\n"
                          f"DELETE FROM {t} WHERE id = :id;\n"),
    }


def create_rows(admin: AdminSession, workload: RunTable, rows: int) -> tuple[int, int]:
    """Rows for pgbench to read and update; their ids must be one unbroken range."""
    t = quote_ident(workload.table)
    first, last, count = admin.call(lambda c: c.execute(
        f"WITH made AS (INSERT INTO {t} (username, email) SELECT %s || g, %s || g || "
        "'@poolbench.invalid' FROM generate_series(1, %s) g RETURNING id) "
        "SELECT min(id), max(id), count(*) FROM made",
        (f"{workload.prefix}pgbench_r", f"{workload.prefix}pgbench_r", rows)).fetchone())
    if last - first + 1 != count:
        raise ServerError("--baseline pgbench: another session inserted into "
                          f"{workload.table!r} meanwhile; calibrate on an idle table")
    return int(first), int(last)


def pgbench_command(pgbench: Path, target: ConnectionTarget, script: Path, log_prefix: Path, *,
                    clients: int, seconds: float, connect_each: bool,
                    rate: float | None = None) -> tuple[list[str], dict[str, str]]:
    """pgbench's arguments and environment for one run of a CRUD script."""
    return workload_command(pgbench, target, ["-f", str(script)], log_prefix, clients=clients,
                            seconds=seconds, connect_each=connect_each,
                            protocol="simple" if connect_each else "prepared", rate=rate)


def rate_args(rate: float | None) -> list[str]:
    """``-R RATE`` for ``--rate`` (both count per second over all clients: pgbench divides
    its -R among its threads), as a person types it; none when unpaced."""
    if rate is None:
        return []
    return ["-R", str(int(rate)) if float(rate).is_integer() else repr(float(rate))]


def workload_command(pgbench: Path, target: ConnectionTarget, workload: list[str],
                     log_prefix: Path, *, clients: int, seconds: float, connect_each: bool,
                     protocol: str, rate: float | None = None) -> tuple[list[str], dict[str, str]]:
    """pgbench's arguments and environment for one run of ``workload`` (its ``-f``/``-b``
    arguments, and any option of the scripts' own): as a person types them, plus the
    per-transaction log. The password goes through the environment, never the command
    line (db/pgbench_connection.py). ``rate``: pgbench's ``-R``, paced as ``--rate``."""
    args = [str(pgbench), "-n", *workload, "-c", str(clients),
            "-j", str(min(clients, os.cpu_count() or 1)), "-T", str(max(1, round(seconds))),
            *rate_args(rate), "-M", protocol, "-l", f"--log-prefix={log_prefix}",
            *(["-C"] if connect_each else [f"--sampling-rate={LOG_SAMPLING_RATE}"]),
            *connection_flags(target), target.dbname]
    return args, connection_env(target)


def run_pgbench(pgbench: Path, target: ConnectionTarget, script: str, name: str, *,
                clients: int, seconds: float, connect_each: bool,
                stop: threading.Event | None = None,
                rate: float | None = None) -> PgbenchFigure | None:
    """One pgbench run of a CRUD script, or None if ``stop`` was set meanwhile; ``rate``:
    its ``-R``."""

    def command(folder: Path) -> tuple[list[str], dict[str, str]]:
        path = folder / "script.sql"
        path.write_text(script)
        return pgbench_command(pgbench, target, path, folder / "log", clients=clients,
                               seconds=seconds, connect_each=connect_each, rate=rate)

    return pgbench_figure(command, target, name, clients=clients, seconds=seconds,
                          connect_each=connect_each, stop=stop, rate=rate)


def wait_quietly(proc: subprocess.Popen[str], stop: threading.Event | None,
                 timeout_s: float) -> str:
    """Wait for ``proc`` (pgbench) without waking meanwhile: ``"done"``, or ``"stopped"`` /
    ``"late"`` when ``stop`` was set or ``timeout_s`` passed first (it is then killed).
    ``stop`` is this process's own event, never a multiprocessing one: the watcher may sleep
    in its wait after this process is gone, which would block a ``set`` from another.

    Nothing of poolbench's may wake while pgbench runs, so that its figure is the one a
    person gets from an idle shell: on a 2-vCPU VM a process waking every 50 ms made a
    1-client pgbench 16% faster (13,221 against 15,303 tps, medians of 8 alternating 3-s
    runs, 2026-12-02), as a vCPU kept awake answers its peer's wake-up sooner; polling the
    stop flag every 50 ms beside pgbench had given poolbench's figure 1.04-1.07x a hand
    run's (bench/calibration_by_hand.py). So this thread blocks in ``waitpid``, and a
    watcher thread blocks on ``stop`` (an event's wait: no polling) until the deadline; it
    outlives a pgbench that ends first, until then, asleep."""
    why: list[str] = []

    def watch() -> None:
        stopped = (stop if stop is not None else threading.Event()).wait(timeout_s)
        if proc.poll() is None:  # not reaped yet (poll can't tell while wait() blocks)
            why.append("stopped" if stopped else "late")
            proc.kill()

    threading.Thread(target=watch, name="poolbench-pgbench-watch", daemon=True).start()
    proc.wait()
    return why[0] if why else "done"


def pgbench_figure(command: Callable[[Path], tuple[list[str], dict[str, str]]],
                   target: ConnectionTarget, name: str, *, clients: int, seconds: float,
                   connect_each: bool, stop: threading.Event | None = None,
                   what: str = "", rate: float | None = None,
                   script_phases: Sequence[str] = ()) -> PgbenchFigure | None:
    """One pgbench run, ``command(folder)`` its arguments and environment (its files and
    log prefix in ``folder``, a temporary folder), or None if ``stop`` was set meanwhile
    (pgbench is then stopped). Its tps and transactions are the figures pgbench printed;
    ``rate`` is the ``-R`` the command gave it. ``script_phases``: poolbench's phase for
    each of the command's scripts, in order, whose own figures are then read too.

    pgbench runs in a session of its own, so a terminal's Ctrl-C reaches poolbench
    only, which stops pgbench and cleans up as after any interrupted phase.
    """
    what = what or f"the {name} script"  # for messages
    with tempfile.TemporaryDirectory(prefix="poolbench-pgbench-") as tmp:
        args, env = command(Path(tmp))
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("w") as out, err_path.open("w") as err:
            proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=tmp,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            ended = wait_quietly(proc, stop, seconds * 4 + 120)
        if ended == "stopped":
            return None
        if ended == "late":
            raise ServerError(f"pgbench did not finish {what} in time; "
                              "is the server overloaded?")
        stdout, stderr = out_path.read_text(), err_path.read_text(errors="replace")
        if proc.returncode != 0:
            last = (stderr.strip() or stdout.strip() or "no output").splitlines()[-1]
            raise ServerError(f"pgbench failed on {what}: "
                              f"{redact(last, *target.secrets())}")
        counts = BucketCounts()
        for log in Path(tmp).glob("log*"):
            with log.open() as lines:
                count_log_latencies(lines, counts)
    tps = float(_find(r"^tps = ([\d.]+)", stdout))
    transactions = int(_find(r"number of transactions actually processed: (\d+)", stdout))
    conn_ms = float(_find(r"(?:average|initial) connection time = ([\d.]+) ms", stdout))
    hist = counts.to_hdr()
    return PgbenchFigure(script=name, connect_each=connect_each, clients=clients,
                         seconds=seconds, transactions=transactions, tps=tps,
                         latency=LatencySummary.of(hist), connection_ms=conn_ms, rate=rate,
                         scripts=per_script(stdout, script_phases, transactions=transactions,
                                            tps=tps))


def count_log_latencies(lines: Iterable[str], counts: BucketCounts) -> int:
    """Add the latencies of pgbench's per-transaction log (``-l``; "Per-Transaction
    Logging": ``client_id transaction_no time script_no time_epoch time_us [schedule_lag]
    [retries]``, ``time`` in µs) to ``counts``, as pgbench's own latency figures take them:
    a transaction whose ``time`` reads ``failed`` (it ended in an error: pgbench 15+) or
    ``skipped`` (behind schedule beyond ``--latency-limit``) has no latency and is left out.
    Returns how many were left out."""
    untimed = 0
    for line in lines:
        time_us = line.split()[2]
        if time_us.isdigit():
            counts[bucket_index(int(time_us) or 1)] += 1
        else:
            untimed += 1
    return untimed


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise ServerError(f"cannot read pgbench's output (looked for {pattern!r})")
    return match.group(1)


# pgbench's per-script report (printResults, printed when it runs several scripts):
# "SQL script N: DESC", then (pgbench 10 to 17) " - COUNT transactions (P% of total, tps =
# TPS)"; pgbench's development source after 17 prints " - number of transactions actually
# processed: COUNT (tps = TPS)" instead, and nothing for a script that ran no transaction.
SCRIPT_HEADER = re.compile(r"^SQL script (\d+): ", re.MULTILINE)
SCRIPT_TPS = re.compile(r"^ - (?:number of transactions actually processed: (\d+) \(|"
                        r"(\d+) transactions \([\d.]+% of total, )tps = ([\d.]+)\)$",
                        re.MULTILINE)


def per_script(stdout: str, phases: Sequence[str], *, transactions: int,
               tps: float) -> tuple[ScriptTps, ...]:
    """Each script's transactions and tps as pgbench printed them, named by ``phases`` (in
    -f/-b order). pgbench prints none for a single script: its figures are the run's."""
    if len(phases) <= 1:
        return tuple(ScriptTps(phase=p, transactions=transactions, tps=tps) for p in phases)
    headers = list(SCRIPT_HEADER.finditer(stdout))
    if [int(h.group(1)) for h in headers] != list(range(1, len(phases) + 1)):
        raise ServerError(f"cannot read pgbench's output: {len(phases)} scripts given, "
                          f"{len(headers)} 'SQL script N:' sections printed")
    found: list[ScriptTps] = []
    for phase, header, after in zip(phases, headers, [*headers[1:], None]):
        block = stdout[header.end():after.start() if after is not None else len(stdout)]
        match = SCRIPT_TPS.search(block)
        found.append(ScriptTps(phase=phase, transactions=0, tps=0.0) if match is None else
                     ScriptTps(phase=phase, transactions=int(match.group(1) or match.group(2)),
                               tps=float(match.group(3))))
    return tuple(found)


def calibrate(admin: AdminSession, target: ConnectionTarget, workload: RunTable, *,
              clients: int, seconds: float, stop: threading.Event | None = None,
              rate: float | None = None) -> Calibration | None:
    """pgbench's figures for every script, persistent and with -C, at ``clients``;
    None if ``stop`` was set before all of them ran; ``rate``: ``--rate``, each script
    paced as :func:`script_rate` says."""
    pgbench = find_pgbench()
    first, last = create_rows(admin, workload, max(MIN_READ_ROWS, clients * 10))
    figures: list[PgbenchFigure] = []
    for name, text in scripts(workload, first, last).items():
        for connect_each in (False, True):
            figure = run_pgbench(pgbench, target, text, name, clients=clients, seconds=seconds,
                                 connect_each=connect_each, stop=stop,
                                 rate=script_rate(name, rate))
            if figure is None:
                return None
            figures.append(figure)
    return Calibration(pgbench=described(pgbench), figures=tuple(figures))


def script_rate(name: str, rate: float | None) -> float | None:
    """A CRUD script's ``-R`` under ``--rate`` (operations per second, each CRUD phase
    paced on its own): ``rate`` over the operations one run of the script stands for, so
    that insert+delete (a create and a delete) runs the server's statements at the rate
    the create and delete phases do, and its ratio (against the pair's throughput) is 1
    when both keep up."""
    return None if rate is None else rate / len(dict(CRUD_PHASES)[name])


def described(pgbench: Path) -> str:
    """The pgbench executable and its version, as results name it."""
    version = subprocess.run([str(pgbench), "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    return f"{pgbench} ({version})"


# Each CRUD script and the phases it is compared with.
CRUD_PHASES = (("read", ("read",)), ("update", ("update",)),
               ("insert+delete", ("create", "delete")))


def ratios(calibration: Calibration, strategies: tuple[StrategyResult, ...],
           compared: tuple[tuple[str, tuple[str, ...]], ...] = CRUD_PHASES) -> tuple[Ratio, ...]:
    """Each strategy against pgbench: pooled ones against persistent connections, no-pool
    ones against ``-C``; each of pgbench's figures (by script) against the phases
    ``compared`` names for it. The insert+delete script is compared with create then
    delete: throughput of the pair (1 / (1/create + 1/delete)) and the sum of their
    latencies. Under ``--rate`` the latencies are from each operation's scheduled start,
    as pgbench's under ``-R`` are. A figure with scripts of its own (``script:NAME``)
    also compares each script's phase with pgbench's tps of that script."""
    found: list[Ratio] = []
    for s in strategies:
        phases = {p.phase: p for p in s.phases}
        connect_each = not s.pooled
        against = "connect" if connect_each else "persistent"
        for script, names in compared:
            if not all(n in phases for n in names):
                continue
            ref = calibration.figure(script, connect_each=connect_each)
            ours = [phases[n] for n in names]
            if ref.tps <= 0 or not all(p.throughput_ops_s > 0 for p in ours) \
                    or not ref.latency.p50_us:
                continue
            tps = 1 / sum(1 / p.throughput_ops_s for p in ours)
            connect = None
            if connect_each and ref.connection_ms > 0:
                connect = round(sum(p.acquire.mean_us for p in ours) / len(ours) / 1000
                                / ref.connection_ms, 3)
            latencies = [_as_pgbench_times(p) for p in ours]
            found.append(Ratio(
                strategy=s.name, script=script, against=against,
                throughput=round(tps / ref.tps, 3),
                p50=round(sum(lat.p50_us for lat in latencies) / ref.latency.p50_us, 3),
                p99=round(sum(lat.p99_us for lat in latencies) / max(ref.latency.p99_us, 1), 3),
                connect=connect,
                scripts=tuple(ScriptRatio(phase=own.phase, throughput=round(
                    phases[own.phase].throughput_ops_s / own.tps, 3))
                    for own in ref.scripts if own.tps > 0 and own.phase in phases)))
    return tuple(found)


def _as_pgbench_times(phase: PhaseResult) -> LatencySummary:
    """The phase's latencies as pgbench times its transactions: from the scheduled start
    under a rate (pgbench -R: "calculated from the scheduled start times"), else from
    the actual one."""
    return phase.scheduled if phase.scheduled is not None else phase.latency
