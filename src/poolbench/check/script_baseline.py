"""``--baseline pgbench`` with scripts: the user's own scripts run by pgbench, on the same
server, with the same settings as the run, so that each strategy's ratio is measured on
the user's workload.

pgbench gets what a person would type: the same script texts (written to files of the
same names) and built-ins with the same weights (``-f FILE@W``, ``-b NAME@W``), ``-M``,
``-c`` = the run's workers, ``-T`` = its ``--duration`` (else ``--baseline-seconds``),
``-s``, ``--random-seed``, ``-R`` = ``--rate`` (both count per second over all clients;
one script run is one operation); and the same session settings (read-only sessions on a
server poolbench did not start, a statement timeout) through ``PGOPTIONS``. It runs twice:
on persistent connections, and with ``-C`` (a new connection per script run), for the
no-pool strategies. Its tps is the figure pgbench printed for the whole workload; each
script's, the figure pgbench printed for it (``SQL script N: ...``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from poolbench.check.calibrate import (
    described,
    pgbench_figure,
    rate_args,
    workload_command,
)
from poolbench.config import ScriptFile
from poolbench.db.binaries import find_pgbench
from poolbench.db.target import ConnectionTarget
from poolbench.results import Calibration, PgbenchFigure

FIGURE = "scripts"  # the figures' script: the whole workload, every script by weight
# What each strategy's figures are compared with: the phase of all its script runs.
COMPARED = ((FIGURE, ("mix",)),)


def workload_args(files: Sequence[ScriptFile], folder: Path | None = None) -> list[str]:
    """``-f FILE@W`` / ``-b NAME@W`` for each script, in order; a file's text is written to
    ``folder`` under its name (its path as given when ``folder`` is None: how a person
    types it)."""
    args: list[str] = []
    for f in files:
        if f.builtin is not None:
            args += ["-b", f"{f.builtin}@{f.weight}"]
            continue
        path = f.path
        if folder is not None:
            (folder / "scripts").mkdir(exist_ok=True)
            written = folder / "scripts" / f.name
            written.write_text(f.text, encoding="utf-8")
            path = str(written)
        args += ["-f", f"{path}@{f.weight}"]
    return args


def script_options(*, scale: int, seed: int) -> list[str]:
    """The run's options for the scripts that pgbench takes as they are."""
    return ["-s", str(scale), f"--random-seed={seed}"]


def typed_workload(files: Sequence[ScriptFile], *, protocol: str, scale: int,
                   seed: int, rate: float | None = None) -> str:
    """The workload's part of pgbench's command line as a person types it (results say
    what pgbench ran, ``-R`` included when it was paced)."""
    return " ".join([*workload_args(files), "-M", protocol,
                     *script_options(scale=scale, seed=seed), *rate_args(rate)])


def calibrate_scripts(target: ConnectionTarget, files: Sequence[ScriptFile], *, protocol: str,
                      scale: int, seed: int, clients: int, seconds: float,
                      stop: threading.Event | None = None, pgbench: Path | None = None,
                      rate: float | None = None) -> Calibration | None:
    """pgbench's figures for the scripts, persistent and with ``-C``, at ``clients``; None
    if ``stop`` was set before both ran. ``target`` is the strategies' own (its session
    settings included); ``pgbench`` the executable [default: :func:`find_pgbench`'s];
    ``rate`` the run's ``--rate``, given to pgbench as ``-R``. Each figure holds each
    script's own figures, named by its phase (``script:NAME``)."""
    pgbench = pgbench or find_pgbench()
    phases = tuple(f"script:{f.name}" for f in files)
    figures: list[PgbenchFigure] = []
    for connect_each in (False, True):
        def command(folder: Path, connect_each: bool = connect_each
                    ) -> tuple[list[str], dict[str, str]]:
            workload = [*workload_args(files, folder),
                        *script_options(scale=scale, seed=seed)]
            return workload_command(pgbench, target, workload, folder / "log",
                                    clients=clients, seconds=seconds,
                                    connect_each=connect_each, protocol=protocol, rate=rate)

        figure = pgbench_figure(command, target, FIGURE, clients=clients, seconds=seconds,
                                connect_each=connect_each, stop=stop, what="your scripts",
                                rate=rate, script_phases=phases)
        if figure is None:
            return None
        figures.append(figure)
    return Calibration(pgbench=described(pgbench), figures=tuple(figures),
                       workload=typed_workload(files, protocol=protocol, scale=scale,
                                               seed=seed, rate=rate))
