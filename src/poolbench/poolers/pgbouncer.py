"""PgBouncer started by poolbench, in front of the embedded server or the user's own.

Debian's ``pgbouncer`` package (found on PATH or in /usr/sbin), run in a temporary
directory: ``pgbouncer.ini`` and an auth file (mode 0600), listening on 127.0.0.1 at
a free port with its own ``unix_socket_dir``. Clients, the admin console included,
always authenticate with SCRAM, never ``trust``: with a throw-away password made at
each start, which strategies get through the target object (never on a command line).
PgBouncer logs in to the server with the target's own user and password, written only
in ``pgbouncer.ini``; a target without a password (``~/.pgpass``, ``PGPASSFILE``, a
server that trusts) gets the one libpq finds for it, learnt from one connection.

The auth file holds the throw-away password itself, not its SCRAM secret: given a
secret, PgBouncer (1.18) keeps the client's SCRAM keys on the pool's user and logs in
to the server with them instead of the configured password, which the server refuses.
A secret would protect nothing here anyway: ``pgbouncer.ini`` beside it, same owner
and mode, holds the server's password. PgBouncer refuses to run as root: under
root it runs as the same unprivileged user as the embedded server. It is stopped,
and its directory removed, when the strategy using it ends, on an error, and on
SIGINT/SIGTERM; the kernel also sends it SIGTERM if poolbench itself dies
(``PR_SET_PDEATHSIG``), so no pgbouncer outlives a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from poolbench.db.certificate import make_self_signed_certificate
from poolbench.db.server import Service, free_port, service_user
from poolbench.db.target import ADMIN_APPLICATION_NAME, ConnectionTarget, reason
from poolbench.errors import ConfigError, ServerError

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.02
# Startup parameters PgBouncer 1.18 does not track: accepted and not forwarded (so
# --statement-timeout does not reach the server through it; see docs/routes.md).
IGNORED_STARTUP_PARAMETERS = "extra_float_digits,options,statement_timeout"
# The first PgBouncer that keeps prepared statements in transaction mode.
PREPARED_STATEMENTS_SINCE = (1, 21)
# The server's sslmodes under which clients reach PgBouncer over TLS as well.
CLIENT_TLS_MODES = ("require", "verify-ca", "verify-full")
# A [databases] name PgBouncer reads as written; another (a space, a quote, a newline...)
# cannot be quoted there (its parser refuses a quoted name with a space: pgbouncer#971),
# so PgBouncer serves that database under DATABASE_ALIAS, and its clients ask for that; so
# too a database named pgbouncer, its console's reserved name.
PLAIN_DATABASE_NAME = re.compile(r"[0-9A-Za-z_.-]+")
DATABASE_ALIAS = "poolbench"


def find_pgbouncer(given: Path | None = None) -> Path:
    """``given`` (``--pgbouncer-bin``), else ``pgbouncer`` on PATH, else Debian's /usr/sbin."""
    if given is not None:
        if not (given.is_file() and os.access(given, os.X_OK)):
            raise ConfigError(f"--pgbouncer-bin {given}: no executable there; apt-get install "
                              "pgbouncer, or give the path of one")
        return given
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if Path(p).exists()),
        None)
    if found is None:
        raise ConfigError("--via pgbouncer:*: the pgbouncer executable is not installed; "
                          "apt-get install pgbouncer, or route through your own pooler with "
                          "--pooler-dsn")
    return Path(found)


def pgbouncer_version(executable: Path) -> tuple[int, ...]:
    out = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                         timeout=30, stdin=subprocess.DEVNULL).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    if match is None:
        first = (out.strip().splitlines() or ["no output"])[0][:80]
        raise ConfigError(f"{executable} is not PgBouncer: its --version says {first!r}, "
                          "not 'PgBouncer N.N'; give PgBouncer's program (--pgbouncer-bin)")
    return tuple(int(g) for g in match.groups() if g is not None)


@dataclass(frozen=True)
class PoolerSettings:
    mode: str  # "session" or "transaction"
    pool_size: int  # default_pool_size: server connections per database/user pair
    max_clients: int
    executable: Path | None = None  # --pgbouncer-bin; None: found on PATH or in /usr/sbin


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when poolbench dies, whatever the way."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PgBouncer(Service):
    """One PgBouncer process in front of ``server`` (the direct target)."""

    def __init__(self, server: ConnectionTarget, settings: PoolerSettings) -> None:
        self.server = server
        self.settings = settings
        self.executable = find_pgbouncer(settings.executable)
        self.version = pgbouncer_version(self.executable)
        self.root: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = ""
        self.database = server.dbname  # the name PgBouncer serves it under (set at start)
        self.client_password = ""  # made at start; lives as long as this PgBouncer

    @property
    def keeps_prepared_statements(self) -> bool:
        return self.version >= PREPARED_STATEMENTS_SINCE

    def start(self) -> ConnectionTarget:
        """Write its config, start it, wait until it accepts connections; return the target
        clients connect to (the server's, but for host and port)."""
        self.root = Path(tempfile.mkdtemp(prefix="poolbench-pgbouncer-"))
        try:
            self._write_config()
            user = service_user()
            log = (self.root / "pgbouncer.log").open("ab")
            with log:
                self.proc = subprocess.Popen(
                    [str(self.executable), str(self.root / "pgbouncer.ini")], cwd=self.root,
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, user=user,
                    start_new_session=True,  # a terminal's Ctrl-C is poolbench's to handle
                    preexec_fn=_die_with_parent)
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self.client_target()

    @property
    def client_tls(self) -> bool:
        """Clients reach PgBouncer over TLS when the server's target asks for TLS
        (``--tls``): PgBouncer then has a self-signed certificate of its own."""
        return self.server.get("sslmode") in CLIENT_TLS_MODES

    def client_target(self) -> ConnectionTarget:
        """The server's target, but for host, port, and the throw-away client password;
        over TLS, ``sslmode=require`` (PgBouncer's certificate is its own, self-signed: the
        server's root certificate, if one is named, does not verify it)."""
        target = self.server.with_params(host="127.0.0.1", port=str(self.port), user=self.user,
                                         password=self.client_password, dbname=self.database)
        if not self.client_tls:
            return target
        return target.without_params("sslrootcert", "sslcrl").with_params(sslmode="require")

    def admin_target(self) -> ConnectionTarget:
        """The admin console (database ``pgbouncer``; SHOW commands, simple protocol only)."""
        return self.client_target().with_params(dbname="pgbouncer",
                                                application_name=ADMIN_APPLICATION_NAME)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: immediate shutdown
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log_tail(self) -> str:
        if self.root is None or not (self.root / "pgbouncer.log").exists():
            return ""
        return (self.root / "pgbouncer.log").read_text(errors="replace")[-2000:]

    # -- steps -----------------------------------------------------------------

    def _server_login(self) -> ConnectionTarget:
        """Where and as whom PgBouncer logs in to the server: the target's host, port, user
        and password, or, where it names none, those libpq chose for it (``~/.pgpass``,
        ``PG*``, the default Unix socket...)."""
        server = self.server
        try:
            return server.logged_in()
        except psycopg.Error as exc:
            raise ServerError(f"pgbouncer: cannot log in to {server.masked()} to start it "
                              f"({reason(exc, server)})") from None

    def _write_config(self) -> None:
        assert self.root is not None
        s, server = self.settings, self.server
        self.port = free_port()
        login = self._server_login()
        user, password = login.get("user") or "", login.password or ""
        for what in ("host", "dbname", "user", "password"):  # never the value: a secret
            if any(c in (login.get(what) or "") for c in "\r\n\0"):
                raise ConfigError(f"pgbouncer: the server's {what} holds a line break or a "
                                  "NUL, which PgBouncer's config files cannot hold; route "
                                  "directly, or log in with another")
        self.user = user
        self.database = (login.dbname if PLAIN_DATABASE_NAME.fullmatch(login.dbname)
                         and login.dbname != "pgbouncer" else DATABASE_ALIAS)
        self.client_password = secrets.token_urlsafe(24)
        auth = self.root / "userlist.txt"
        auth.touch(mode=0o600)
        auth.write_text(f"{_ini_quote(user)} {_ini_quote(self.client_password)}\n")
        host = login.get("host") or "127.0.0.1"  # a Unix socket's directory, too
        backend = (f"host={_connstr_quote(host)} port={login.get('port') or 5432} "
                   f"dbname={_connstr_quote(login.dbname)}")
        # No sslmode here: PgBouncer refuses it in [databases] ("unrecognized connection
        # parameter"); server_tls_sslmode below carries it.
        # The server's own login, for the one pool of this database: clients never send it.
        backend += f" user={_connstr_quote(user)}"
        if password:
            backend += f" password={_connstr_quote(password)}"
        lines = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": str(self.root),
            "auth_type": "scram-sha-256",  # never trust: any local user could use it
            "auth_file": str(auth),
            "admin_users": user,
            "stats_users": user,
            "pool_mode": s.mode,
            "default_pool_size": str(s.pool_size),
            "min_pool_size": "0",
            "reserve_pool_size": "0",
            "max_client_conn": str(s.max_clients),
            "max_db_connections": str(s.pool_size),
            "ignore_startup_parameters": IGNORED_STARTUP_PARAMETERS,
            "server_tls_sslmode": server.get("sslmode") or "prefer",
            "pidfile": str(self.root / "pgbouncer.pid"),
            "log_connections": "0",
            "log_disconnections": "0",
        }
        if self.keeps_prepared_statements and s.mode == "transaction":
            lines["max_prepared_statements"] = "100"
        if self.client_tls:
            crt, key = make_self_signed_certificate(self.root, owner=service_user(),
                                                    name="pgbouncer")
            lines.update(client_tls_sslmode="require", client_tls_cert_file=str(crt),
                         client_tls_key_file=str(key))
        ini = self.root / "pgbouncer.ini"
        ini.touch(mode=0o600)
        ini.write_text(f"[databases]\n{self.database} = {backend}\n\n[pgbouncer]\n"
                       + "".join(f"{k} = {v}\n" for k, v in lines.items()))
        if (owner := service_user()) is not None:
            import pwd

            entry = pwd.getpwnam(owner)
            for path in (self.root, auth, ini):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(f"pgbouncer exited at start (code {self.proc.returncode}): "
                                  f"{self.log_tail().strip().splitlines()[-1:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(POLL_S)  # poll for readiness; PgBouncer has no ready notification here
        raise ServerError(f"pgbouncer did not listen on port {self.port} within "
                          f"{START_TIMEOUT_S:.0f} s")


def _ini_quote(value: str) -> str:
    """An auth-file field: double quotes, an inner ``"`` doubled."""
    return '"' + value.replace('"', '""') + '"'


def _connstr_quote(value: str) -> str:
    """A value of a ``[databases]`` connection string: single quotes, an inner ``'``
    doubled (PgBouncer's own rule, not libpq's backslash)."""
    return "'" + value.replace("'", "''") + "'"
