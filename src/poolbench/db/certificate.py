"""A self-signed certificate for a server poolbench starts (the embedded PostgreSQL, a
PgBouncer's client side under ``--tls``): RSA-2048, as a default managed server's, made
with the ``openssl`` command, valid two days, for 127.0.0.1. Clients connect with
``sslmode=require``, which encrypts without verifying the certificate."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from poolbench.errors import ServerError


def make_self_signed_certificate(directory: Path, *, owner: str | None = None,
                                 name: str = "server") -> tuple[Path, Path]:
    """``NAME.crt`` and ``NAME.key`` (mode 0600) in ``directory``, owned by ``owner`` (the
    user the server runs as) when given; their paths."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError("--tls needs the openssl command to make a certificate; "
                          "apt-get install openssl")
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    key.chmod(0o600)
    if owner:
        import pwd

        entry = pwd.getpwnam(owner)
        for path in (crt, key):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return crt, key
