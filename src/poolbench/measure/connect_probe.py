"""What a new connection costs, broken down, measured by a small protocol probe.

The probe speaks PostgreSQL's wire protocol over a plain socket and times each
step of one connection: the TCP connect; the TLS handshake (when ``sslmode``
asks for it); the startup message and authentication exchange (SCRAM, md5 or
cleartext: its round trips, the server's verification and, since the postmaster
forks the backend as it accepts, the fork), with the client's SCRAM key
derivation (PBKDF2, done by the maintained ``scramp`` library) timed as its own
slice; the backend's start from AuthenticationOk to ReadyForQuery; and a first
query (``SELECT 1``). The slices are contiguous; a wall clock started before the
TCP connect and stopped after the socket is closed times the whole connection,
and what no slice covers (sending Terminate, closing, the probe's own
bookkeeping) is reported as its own figure, so the slices are checked against
an independent total rather than against their own sum.

Beside it, each driver's own ``connect()`` is timed single-threaded and at each
concurrency: what it costs above the single-threaded figure is waiting for the
CPU and the GIL. Everything is measured against the target it is given: through
a pooler route, that is the pooler, and the result carries the route's name.

A measurement that cannot be made (an authentication method the probe does not
speak, such as GSSAPI, SSPI or a client certificate; a driver that cannot
connect) is reported as "not measured" with the reason, never raised: the
connect cost is an optional part of a run. The password is used only in memory,
never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from poolbench.db.target import ConnectionTarget, reason
from poolbench.errors import ConnectError
from poolbench.measure.metrics import BucketCounts, bucket_index
from poolbench.results import ConnectCost, DriverConnect, LatencySummary

SLICES = ("tcp", "tls", "auth_exchange", "scram_key_derivation", "backend_start",
          "first_query")
PROBE_APPLICATION_NAME = "poolbench-probe"
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
TLS_MODES = ("require", "verify-ca", "verify-full")
# Authentication requests the probe does not answer, by their protocol code; libpq's names.
UNSPOKEN_METHODS = {2: "Kerberos V5", 6: "SCM credentials", 7: "GSSAPI", 8: "GSSAPI",
                    9: "SSPI"}


@dataclass(frozen=True)
class ProbeTimes:
    """One probe connection: nanoseconds per slice (see SLICES), and the wall time of the
    whole connection, timed apart from the slices (TCP connect to socket closed)."""

    slices: dict[str, int]
    wall_ns: int

    @property
    def unaccounted_ns(self) -> int:
        """The wall time no slice covers: Terminate, close, the probe's own bookkeeping."""
        return self.wall_ns - sum(self.slices.values())


class _Wire:
    """Just enough of the protocol to connect, authenticate, run one query and leave."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectError("the server closed the connection during the probe")
            data += chunk
        return data

    def receive(self) -> tuple[bytes, bytes]:
        head = self._exact(5)
        body = self._exact(struct.unpack("!i", head[1:])[0] - 4)
        if head[:1] == b"E":
            fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
            raise ConnectError(f"the server refused the probe: {fields.get(b'M', 'error')}")
        return head[:1], body

    def until(self, kind: bytes) -> bytes:
        while True:
            got, body = self.receive()
            if got == kind:
                return body


def probe_once(target: ConnectionTarget) -> ProbeTimes:
    """One connection, step by step. Raises ConnectError if the server refuses it or asks
    for an authentication method the probe does not speak."""
    start = time.perf_counter_ns()
    host, port = target.get("host") or "127.0.0.1", int(target.get("port") or 5432)
    times: dict[str, int] = dict.fromkeys(SLICES, 0)
    t0 = time.perf_counter_ns()
    sock = socket.create_connection((host, port), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t1 = time.perf_counter_ns()
        times["tcp"] = t1 - t0
        asks_tls = target.get("sslmode") in (*TLS_MODES, "prefer")
        if asks_tls:
            sock = _tls(sock, target, host)
        t2 = time.perf_counter_ns()
        # Without TLS asked for, no slice: the few instructions between are the rest's.
        times["tls"] = t2 - t1 if asks_tls else 0
        wire = _Wire(sock)
        derivation = _authenticate(wire, target)
        t3 = time.perf_counter_ns()
        times["scram_key_derivation"] = derivation
        times["auth_exchange"] = t3 - t2 - derivation
        wire.until(b"Z")
        t4 = time.perf_counter_ns()
        times["backend_start"] = t4 - t3
        wire.send(b"Q", b"SELECT 1\0")
        wire.until(b"Z")
        times["first_query"] = time.perf_counter_ns() - t4
        wire.send(b"X", b"")
    finally:
        sock.close()
    return ProbeTimes(slices=times, wall_ns=time.perf_counter_ns() - start)


def _tls(sock: socket.socket, target: ConnectionTarget, host: str) -> socket.socket:
    """The socket, wrapped in TLS when the server offers it (``sslmode`` asks for it)."""
    mode = target.get("sslmode")
    sock.sendall(SSL_REQUEST)
    if sock.recv(1) != b"S":
        if mode != "prefer":
            raise ConnectError("sslmode asks for TLS but the server does not offer it")
        return sock
    context = ssl.create_default_context()
    if mode in ("require", "prefer"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock, server_hostname=host)


def _authenticate(wire: _Wire, target: ConnectionTarget) -> int:
    """The startup message and the authentication exchange, up to AuthenticationOk;
    returns the nanoseconds spent deriving the SCRAM key (0 for other methods)."""
    import scramp

    user, password = target.get("user") or "postgres", target.password or ""
    wire.sock.sendall(_startup({"user": user, "database": target.dbname,
                                "application_name": PROBE_APPLICATION_NAME}))
    derivation = 0
    client: scramp.ScramClient | None = None
    while True:
        kind, body = wire.receive()
        if kind != b"R":
            continue
        code = struct.unpack("!i", body[:4])[0]
        if code == 0:
            return derivation
        if code == 10:  # SASL: the mechanisms the server offers
            offered = [m.decode() for m in body[4:].split(b"\0") if m]
            if "SCRAM-SHA-256" not in offered:
                raise ConnectError(f"the server offers SASL mechanisms {', '.join(offered)}; "
                                   "the probe speaks SCRAM-SHA-256")
            client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
            first = client.get_client_first().encode()
            wire.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
        elif code in (11, 12) and client is not None:
            try:
                if code == 11:
                    client.set_server_first(body[4:].decode())
                    d0 = time.perf_counter_ns()
                    final = client.get_client_final().encode()  # PBKDF2 happens here
                    derivation = time.perf_counter_ns() - d0
                    wire.send(b"p", final)
                else:
                    client.set_server_final(body[4:].decode())
            except scramp.ScramException as exc:
                raise ConnectError(f"the server's SCRAM exchange did not verify: {exc}") from None
        elif code == 5:  # md5: "md5" + md5(md5(password + user) + the server's 4-byte salt)
            inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
            outer = hashlib.md5(inner.encode() + body[4:8], usedforsecurity=False).hexdigest()
            wire.send(b"p", b"md5" + outer.encode() + b"\0")
        elif code == 3:
            wire.send(b"p", password.encode() + b"\0")
        else:
            method = UNSPOKEN_METHODS.get(code, f"authentication request {code}")
            raise ConnectError(f"the server asks for {method} authentication, which the "
                               "probe does not speak (it speaks SCRAM-SHA-256, md5 and "
                               "cleartext passwords)")


def _startup(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", 196608) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def _summary(counts: BucketCounts) -> LatencySummary:
    return LatencySummary.of(counts.to_hdr())


def _record(counts: BucketCounts, ns: int) -> None:
    counts[bucket_index(ns // 1000 or 1)] += 1


def _driver_connects(target: ConnectionTarget) -> dict[str, Callable[[], None]]:
    """Each driver's connect + close, as the ``none`` strategies do it (named as the probe,
    so nothing mistakes these sessions for the benchmark's)."""
    target = target.with_params(application_name=PROBE_APPLICATION_NAME)
    conninfo = target.conninfo()
    kwargs = target.asyncpg_kwargs()

    def psycopg_connect() -> None:
        import psycopg

        psycopg.connect(conninfo, autocommit=True).close()

    def psycopg2_connect() -> None:
        import psycopg2

        psycopg2.connect(conninfo).close()

    def asyncpg_connect() -> None:
        import asyncpg

        async def once() -> None:
            await (await asyncpg.connect(**kwargs)).close()
        asyncio.run(once())

    return {"psycopg": psycopg_connect, "psycopg2": psycopg2_connect,
            "asyncpg": asyncpg_connect}


def _timed_connects(connect: Callable[[], None], samples: int,
                    concurrency: int) -> tuple[BucketCounts, BaseException | None]:
    """``samples`` connects spread over ``concurrency`` threads; each one's wall time, and
    the first failure if any (a thread stops at its first failure)."""
    counts = BucketCounts()
    failures: list[BaseException] = []
    lock = threading.Lock()
    per_thread = [samples // concurrency + (1 if i < samples % concurrency else 0)
                  for i in range(concurrency)]

    def loop(n: int) -> None:
        mine = BucketCounts()
        try:
            for _ in range(n):
                t0 = time.perf_counter_ns()
                connect()
                _record(mine, time.perf_counter_ns() - t0)
        except Exception as exc:  # whatever the driver raises: reported, never raised
            with lock:
                failures.append(exc)
        with lock:
            counts.add(mine)

    threads = [threading.Thread(target=loop, args=(n,)) for n in per_thread if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts, failures[0] if failures else None


def _probe(target: ConnectionTarget, samples: int
           ) -> tuple[dict[str, BucketCounts], str | None]:
    """The probe's histograms over ``samples`` connections (slices, total, unaccounted), or
    why it measured nothing (it stops at the first failure)."""
    counts = {name: BucketCounts() for name in (*SLICES, "total", "unaccounted")}
    for _ in range(samples):
        try:
            times = probe_once(target)
        except (ConnectError, OSError) as exc:  # OSError: refused, reset, timed out, TLS
            return counts, reason(exc, target)
        except (ValueError, struct.error) as exc:  # a reply that is not the protocol's
            return counts, reason(ValueError(f"the server's reply is not PostgreSQL's protocol "
                                           f"as the probe speaks it: {exc}"), target)
        for name, ns in times.slices.items():
            _record(counts[name], ns)
        _record(counts["total"], times.wall_ns)
        _record(counts["unaccounted"], times.unaccounted_ns)
    return counts, None


def connect_cost(target: ConnectionTarget, *, route: str = "direct", samples: int = 200,
                 concurrency: tuple[int, ...] = (1, 8),
                 drivers: tuple[str, ...] = ("psycopg", "psycopg2", "asyncpg")) -> ConnectCost:
    """The probe's slices over ``samples`` connections to ``target``, and each driver's
    connect(), labelled with ``route`` (the route ``target`` is the entry of: ``direct``,
    ``pgbouncer:session``, ...). Never raises for a connection that fails or a method the
    probe does not speak: that part of the result is "not measured", with the reason."""
    counts, why = _probe(target, samples)
    found = _driver_connects(target)
    measured = []
    for d in drivers:
        for n in concurrency:
            timed, failure = _timed_connects(found[d], samples, n)
            measured.append(DriverConnect(
                driver=d, concurrency=n,
                latency=_summary(timed) if failure is None else None,
                not_measured=reason(failure, target) if failure is not None else None))
    summaries = {name: _summary(c) for name, c in counts.items()}
    return ConnectCost(samples=samples, tls=target.get("sslmode") in TLS_MODES, route=route,
                       slices={n: summaries[n] for n in SLICES} if why is None else {},
                       total=summaries["total"] if why is None else None,
                       unaccounted=summaries["unaccounted"] if why is None else None,
                       drivers=tuple(measured), not_measured=why)
