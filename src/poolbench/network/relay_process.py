"""The delay relay's process, started and stopped by poolbench (``--rtt``).

:class:`RelayProcess` starts :mod:`poolbench.network.relay` as a process of its own
(``python -I relay.py``, the same file as this package's), in front of one target; it
listens on 127.0.0.1 only, at a free port (or ``--relay-port``), forwards only to that
target and never sees a password (it relays bytes; the client authenticates through it).
It is stopped with the run, on errors and on SIGINT/SIGTERM (the run's ``ExitStack``);
if poolbench dies, the relay sees its stdin reach end of file and exits.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import tempfile
from pathlib import Path

from poolbench.db.server import Service
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError, ServerError
from poolbench.network import relay

RELAY_SCRIPT = Path(relay.__file__)
MAX_CONNECTIONS = relay.MAX_CONNECTIONS
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


def upstream_args(target: ConnectionTarget) -> list[str]:
    """The relay's ``--upstream-*`` arguments for ``target``: its TCP host (or hostaddr) and
    port, or its Unix socket. One host only: the relay forwards to one place."""
    host = target.get("hostaddr") or target.get("host") or ""
    port = target.get("port") or "5432"
    if not host or "," in host or "," in port:
        raise ConfigError(f"--rtt: the relay needs one server address, and "
                          f"{target.masked()} ({target.source}) names "
                          f"{'none (libpq default socket)' if not host else 'several'}; "
                          "give one host and port in the DSN")
    if host.startswith("/"):
        return ["--upstream-unix", f"{host}/.s.PGSQL.{port}"]
    return ["--upstream-host", host, "--upstream-port", port]


class RelayProcess(Service):
    """One relay in front of ``upstream``, holding each direction ``rtt_ms / 2``.

    :meth:`start` returns ``upstream``'s target with the relay's host and port (what the
    clients connect to, password and all, for the server to check). ``trace``: a file
    the relay appends its decision for every chunk to (tests)."""

    def __init__(self, upstream: ConnectionTarget, rtt_ms: float, *, port: int | None = None,
                 trace: Path | None = None) -> None:
        self.upstream = upstream
        self.rtt_ms = rtt_ms
        self.port = port
        self.trace = trace
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: tuple[str, int] | None = None

    def start(self) -> ConnectionTarget:
        args = [sys.executable, "-I", str(RELAY_SCRIPT), "--rtt-ms", repr(self.rtt_ms),
                "--port", str(self.port or 0), *upstream_args(self.upstream)]
        if self.trace is not None:
            args += ["--trace", str(self.trace)]
        with tempfile.TemporaryFile() as stderr:
            try:
                self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=stderr, start_new_session=True)
                said = self._first_line()
            except BaseException:
                self.stop()
                raise
            if "port" not in said:
                self.stop()
                stderr.seek(0)
                printed = stderr.read().decode(errors="replace").strip().splitlines()
                detail = said.get("error") or said.get("stalled") or (
                    printed or ["no message"])[-1]
                if "error" in said:
                    where = f"--relay-port {self.port}" if self.port else "--rtt"
                    where_to = f"127.0.0.1:{self.port}" if self.port else "127.0.0.1"
                    raise ConfigError(f"{where}: the relay cannot listen on {where_to} "
                                      f"({detail}); "
                                      + ("give a free port or leave --relay-port out"
                                         if self.port else "check the loopback interface"))
                raise ServerError(f"the --rtt relay did not start ({detail})")
        self.address = ("127.0.0.1", int(said["port"]))
        return self.target_for(self.upstream)

    def target_for(self, target: ConnectionTarget) -> ConnectionTarget:
        """``target`` reached through the relay: its host and port replaced by the relay's."""
        assert self.address is not None, "relay not started"
        return target.without_params("hostaddr").with_params(host=self.address[0],
                                                             port=str(self.address[1]))

    def _first_line(self) -> dict[str, object]:
        """The relay's one line on stdout: where it listens, or why it cannot."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        if not ready:
            return {"stalled": f"no answer within {START_TIMEOUT_S:.0f} s"}
        line = self.proc.stdout.readline()
        try:
            said = json.loads(line)
        except ValueError:
            return {}
        return said if isinstance(said, dict) else {}

    def stop(self) -> None:
        """Close its stdin (it exits at end of file); SIGTERM, then SIGKILL, if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        for end in (None, proc.terminate):
            if end is not None:
                end()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
                return
            except subprocess.TimeoutExpired:
                continue
        proc.kill()
        proc.wait()
