"""What a new connection costs, broken down, measured by a small protocol probe.

The probe speaks PostgreSQL's wire protocol over a plain socket and times each
step of one connection: the TCP connect; the TLS handshake (when ``sslmode``
asks for it); the startup message and authentication exchange (for SCRAM: its
round trips, the server's verification and, since the postmaster forks the
backend as it accepts, the fork), with the client's SCRAM key derivation
(PBKDF2, done by the maintained ``scramp`` library) timed as its own slice; the
backend's start from AuthenticationOk to ReadyForQuery; and a first query
(``SELECT 1``). The slices are contiguous, so they add up to the probe's total.
Beside it, each driver's own ``connect()`` is timed single-threaded and at each
concurrency: what it costs above the single-threaded figure is waiting for the
CPU and the GIL. The password is used only in memory, never logged.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConnectError
from poolbench.measure.metrics import BucketCounts, bucket_index
from poolbench.results import ConnectCost, DriverConnect, LatencySummary

SLICES = ("tcp", "tls", "auth_exchange", "scram_key_derivation", "backend_start",
          "first_query")
PROBE_APPLICATION_NAME = "poolbench-probe"
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


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


def probe_once(target: ConnectionTarget) -> dict[str, int]:
    """One connection, step by step; nanoseconds per slice (see SLICES)."""
    import scramp

    host, port = target.get("host") or "127.0.0.1", int(target.get("port") or 5432)
    user, password = target.get("user") or "postgres", target.password or ""
    times: dict[str, int] = dict.fromkeys(SLICES, 0)
    t0 = time.perf_counter_ns()
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t1 = time.perf_counter_ns()
    times["tcp"] = t1 - t0
    try:
        if target.get("sslmode") in ("require", "verify-ca", "verify-full", "prefer"):
            sock.sendall(SSL_REQUEST)
            if sock.recv(1) == b"S":
                context = ssl.create_default_context()
                if target.get("sslmode") in ("require", "prefer"):
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(sock, server_hostname=host)
            elif target.get("sslmode") != "prefer":
                raise ConnectError("sslmode asks for TLS but the server does not offer it")
        wire = _Wire(sock)
        t2 = time.perf_counter_ns()
        times["tls"] = t2 - t1
        params = {"user": user, "database": target.dbname,
                  "application_name": PROBE_APPLICATION_NAME}
        wire.sock.sendall(_startup(params))
        derivation = 0
        client: scramp.ScramClient | None = None
        while True:
            kind, body = wire.receive()
            if kind != b"R":
                continue
            code = struct.unpack("!i", body[:4])[0]
            if code == 0:
                break
            if code == 10:  # SASL: the mechanisms the server offers
                client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
                first = client.get_client_first().encode()
                wire.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
            elif code == 11 and client is not None:
                client.set_server_first(body[4:].decode())
                d0 = time.perf_counter_ns()
                final = client.get_client_final().encode()  # PBKDF2 happens here
                derivation = time.perf_counter_ns() - d0
                wire.send(b"p", final)
            elif code == 12 and client is not None:
                client.set_server_final(body[4:].decode())
            elif code == 3:
                wire.send(b"p", password.encode() + b"\0")
            else:
                raise ConnectError(f"the probe speaks SCRAM and cleartext only; the server "
                                   f"asked for authentication method {code}")
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
    return times


def _startup(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", 196608) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def _summary(counts: BucketCounts) -> LatencySummary:
    return LatencySummary.of(counts.to_hdr())


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


def _timed_connects(connect: Callable[[], None], samples: int, concurrency: int) -> BucketCounts:
    """``samples`` connects spread over ``concurrency`` threads; each one's wall time."""
    counts = BucketCounts()
    lock = threading.Lock()
    per_thread = [samples // concurrency + (1 if i < samples % concurrency else 0)
                  for i in range(concurrency)]

    def loop(n: int) -> None:
        mine = BucketCounts()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            connect()
            mine[bucket_index((time.perf_counter_ns() - t0) // 1000 or 1)] += 1
        with lock:
            counts.add(mine)

    threads = [threading.Thread(target=loop, args=(n,)) for n in per_thread if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


def connect_cost(target: ConnectionTarget, *, samples: int = 200,
                 concurrency: tuple[int, ...] = (1, 8),
                 drivers: tuple[str, ...] = ("psycopg", "psycopg2", "asyncpg")) -> ConnectCost:
    """The probe's slices over ``samples`` connections, and each driver's connect()."""
    slices = {name: BucketCounts() for name in (*SLICES, "total")}
    for _ in range(samples):
        times = probe_once(target)
        for name, ns in times.items():
            slices[name][bucket_index(ns // 1000 or 1)] += 1
        slices["total"][bucket_index(sum(times.values()) // 1000 or 1)] += 1
    found = _driver_connects(target)
    measured = tuple(DriverConnect(driver=d, concurrency=n,
                                   latency=_summary(_timed_connects(found[d], samples, n)))
                     for d in drivers for n in concurrency)
    summaries = {name: _summary(counts) for name, counts in slices.items()}
    return ConnectCost(samples=samples, tls=target.get("sslmode") in ("require", "verify-ca",
                                                                      "verify-full"),
                       slices={n: summaries[n] for n in SLICES}, total=summaries["total"],
                       drivers=measured)
