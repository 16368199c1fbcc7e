"""What a new connection costs, broken down, measured by a small protocol probe.

The probe speaks PostgreSQL's wire protocol over a plain socket and times each step
of one connection: the TCP connect; the TLS slice (when ``sslmode`` asks for it: the
SSLRequest, the server's 'S', and the handshake, done over memory buffers so its
flights can be counted); the startup message and authentication exchange (SCRAM, md5
or cleartext: its round trips, the server's verification and, since the postmaster
forks the backend as it accepts, the fork), with the client's SCRAM key derivation
(PBKDF2, done by the maintained ``scramp`` library) timed as its own slice; the
backend's start from AuthenticationOk to ReadyForQuery; and a first query (``SELECT
1``). The slices are contiguous; a wall clock started before the TCP connect and
stopped after the socket is closed times the whole connection, and what no slice
covers (sending Terminate, closing, the probe's own bookkeeping) is reported as its
own figure, so the slices are checked against an independent total rather than
against their own sum.

Each slice also counts its round trips, from the protocol as it ran: the client
waiting for the server after sending counts one (a read after one or more sends;
a reply arriving in several pieces, or the server's messages following each other
with nothing sent between, count none). The TCP connect is one (SYN, SYN-ACK).
So TLS is SSLRequest 1 + handshake 1 (TLS 1.3; 2 when the server asks again, a
HelloRetryRequest, as PostgreSQL <= 17 does) or 2 (TLS 1.2); SCRAM is 3
(startup, client-first, client-final), md5 and cleartext 2, trust 1; the SCRAM key
derivation and the backend start are 0; the first query is 1.

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
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

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
# libpq's ssl_min/max_protocol_version words; libpq's minimum defaults to TLSv1.2.
TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class ProbeTimes:
    """One probe connection: nanoseconds per slice (see SLICES), and the wall time of the
    whole connection, timed apart from the slices (TCP connect to socket closed)."""

    slices: dict[str, int]
    wall_ns: int
    round_trips: dict[str, int] = field(default_factory=dict)  # per slice (module docstring)
    tls_version: str | None = None  # "TLSv1.3"...; None: the connection was not over TLS
    tls_cipher: str | None = None

    @property
    def unaccounted_ns(self) -> int:
        """The wall time no slice covers: Terminate, close, the probe's own bookkeeping."""
        return self.wall_ns - sum(self.slices.values())


class _Wire:
    """Just enough of the protocol to connect, authenticate, run one query and leave; over
    the socket, or over TLS done in memory buffers (so the handshake's flights are seen).
    Counts round trips: a read after one or more sends is one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tls: ssl.SSLObject | None = None
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.round_trips = 0
        self._sent = False

    def _to_wire(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)
            self._sent = True

    def _from_wire(self, n: int) -> bytes:
        if self._sent:  # the client now waits for the server's answer
            self.round_trips += 1
            self._sent = False
        chunk = self.sock.recv(n)
        if not chunk:
            raise ConnectError("the server closed the connection during the probe")
        return chunk

    def send_raw(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.write(data)
            data = self._outgoing.read()
        self._to_wire(data)

    def send(self, kind: bytes, body: bytes) -> None:
        self.send_raw(kind + struct.pack("!i", len(body) + 4) + body)

    def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """The TLS handshake; from here on, every message goes over TLS. The client's last
        flight (TLS 1.3's Finished) is sent, not waited for: it goes with the startup."""
        self.tls = context.wrap_bio(self._incoming, self._outgoing,
                                    server_hostname=server_hostname)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._to_wire(self._outgoing.read())
                self._incoming.write(self._from_wire(65536))
        self._to_wire(self._outgoing.read())

    def _read(self, n: int) -> bytes:
        if self.tls is None:
            return self._from_wire(n)
        while True:
            try:
                chunk = self.tls.read(n)
            except ssl.SSLWantReadError:
                self._incoming.write(self._from_wire(65536))
                continue
            if not chunk:
                raise ConnectError("the server closed the connection during the probe")
            return chunk

    def exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += self._read(n - len(data))
        return data

    def receive(self) -> tuple[bytes, bytes]:
        head = self.exact(5)
        body = self.exact(struct.unpack("!i", head[1:])[0] - 4)
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
    """One connection, step by step. Raises ConnectError if the server refuses it (TLS
    included: sslmode asks for it and the server does not offer it, or its certificate
    does not verify) or asks for an authentication method the probe does not speak."""
    start = time.perf_counter_ns()
    host, port = target.get("host") or "127.0.0.1", int(target.get("port") or 5432)
    address = target.get("hostaddr") or host  # libpq connects to hostaddr, names host
    times: dict[str, int] = dict.fromkeys(SLICES, 0)
    trips: dict[str, int] = dict.fromkeys(SLICES, 0)
    t0 = time.perf_counter_ns()
    sock = socket.create_connection((address, port), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t1 = time.perf_counter_ns()
        times["tcp"], trips["tcp"] = t1 - t0, 1  # connect() returns at the SYN-ACK
        wire = _Wire(sock)
        asks_tls = target.get("sslmode") in (*TLS_MODES, "prefer")
        if asks_tls:
            _tls(wire, target, host)
        t2 = time.perf_counter_ns()
        # Without TLS asked for, no slice: the few instructions between are the rest's.
        times["tls"], trips["tls"] = (t2 - t1 if asks_tls else 0), wire.round_trips
        before = wire.round_trips
        derivation = _authenticate(wire, target)
        t3 = time.perf_counter_ns()
        times["scram_key_derivation"] = derivation
        times["auth_exchange"], trips["auth_exchange"] = t3 - t2 - derivation, (
            wire.round_trips - before)
        before = wire.round_trips
        wire.until(b"Z")
        t4 = time.perf_counter_ns()
        times["backend_start"], trips["backend_start"] = t4 - t3, wire.round_trips - before
        before = wire.round_trips
        wire.send(b"Q", b"SELECT 1\0")
        wire.until(b"Z")
        times["first_query"] = time.perf_counter_ns() - t4
        trips["first_query"] = wire.round_trips - before
        version, cipher = ((wire.tls.version(), (wire.tls.cipher() or ("",))[0])
                           if wire.tls is not None else (None, None))
        wire.send(b"X", b"")
    finally:
        sock.close()
    return ProbeTimes(slices=times, wall_ns=time.perf_counter_ns() - start, round_trips=trips,
                      tls_version=version, tls_cipher=cipher)


def _tls(wire: _Wire, target: ConnectionTarget, host: str) -> None:
    """SSLRequest, then the handshake if the server answers 'S' (``sslmode=prefer`` goes on
    in plain text on 'N'; the other modes that ask for TLS refuse to)."""
    mode = target.get("sslmode")
    context = _tls_context(target)  # libpq too makes its SSL context per connection
    wire.send_raw(SSL_REQUEST)
    answer = wire.exact(1)  # exactly one byte: what follows 'S' is the handshake's
    if answer == b"N":
        if mode == "prefer":
            return
        raise ConnectError(f"sslmode={mode} asks for TLS but the server does not accept it "
                           "(it answered the SSLRequest with N: ssl is off on the server)")
    if answer != b"S":
        raise ConnectError(f"the server answered the SSLRequest with {answer!r}, not S or N")
    # libpq sends the host name as SNI (sslsni=1) unless it is an IP address, as Python does.
    sni = target.get("sslsni", "1") != "0" or mode == "verify-full"
    wire.start_tls(context, host if sni else None)


def _tls_context(target: ConnectionTarget) -> ssl.SSLContext:
    """The client's TLS settings as libpq makes them from the target: ``require`` and
    ``prefer`` verify nothing, unless a root certificate file exists (libpq then verifies
    the chain, as for ``verify-ca``); ``verify-ca`` verifies the chain against
    ``sslrootcert`` (default ``~/.postgresql/root.crt``; ``system``: the system's roots);
    ``verify-full`` the host name as well. ``ssl_min_protocol_version`` (default TLSv1.2)
    and ``ssl_max_protocol_version`` bound the version."""
    mode = target.get("sslmode")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system roots loaded unless asked
    for key, attr, default in (("ssl_min_protocol_version", "minimum_version", "TLSv1.2"),
                               ("ssl_max_protocol_version", "maximum_version", None)):
        word = target.get(key) or default
        if word is None:
            continue
        if word not in TLS_VERSIONS:
            raise ConnectError(f"{key}={word} is not one of {', '.join(TLS_VERSIONS)}")
        setattr(context, attr, TLS_VERSIONS[word])
    root = target.get("sslrootcert") or str(Path.home() / ".postgresql" / "root.crt")
    context.check_hostname = mode == "verify-full"
    if root == "system":
        if mode != "verify-full":
            raise ConnectError(f"sslrootcert=system needs sslmode=verify-full, not {mode} "
                               "(libpq refuses it too)")
        context.load_default_certs()
    elif mode in ("verify-ca", "verify-full") or Path(root).is_file():
        if not Path(root).is_file():
            raise ConnectError(f"sslmode={mode} verifies the server's certificate, but the "
                               f"root certificate file {root} does not exist: give "
                               "sslrootcert=FILE (or system), or sslmode=require")
        context.load_verify_locations(root)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def _authenticate(wire: _Wire, target: ConnectionTarget) -> int:
    """The startup message and the authentication exchange, up to AuthenticationOk;
    returns the nanoseconds spent deriving the SCRAM key (0 for other methods)."""
    import scramp

    user, password = target.get("user") or "postgres", target.password or ""
    wire.send_raw(_startup({"user": user, "database": target.dbname,
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


@dataclass
class _Probed:
    """The probe's connections, gathered: histograms (slices, total, unaccounted), the
    round trips per slice (the most any connection took), the last TLS version and cipher,
    or why it measured nothing (it stops at the first failure)."""

    counts: dict[str, BucketCounts]
    round_trips: dict[str, int] = field(default_factory=dict)
    tls_version: str | None = None
    tls_cipher: str | None = None
    why: str | None = None


def _probe(target: ConnectionTarget, samples: int) -> _Probed:
    probed = _Probed({name: BucketCounts() for name in (*SLICES, "total", "unaccounted")})
    try:  # the probe logs in itself: where libpq would connect, as whom it would log in
        target = target.logged_in()
    except psycopg.Error as exc:
        probed.why = reason(exc, target)
        return probed
    if target.over_unix_socket:
        probed.why = (f"the connections go over a Unix socket (host={target.get('host')}); "
                      "the probe times TCP connections only")
        return probed
    for _ in range(samples):
        try:
            times = probe_once(target)
        except (ConnectError, OSError) as exc:  # OSError: refused, reset, timed out, TLS
            probed.why = reason(exc, target)
            return probed
        except (ValueError, struct.error) as exc:  # a reply that is not the protocol's
            probed.why = reason(ValueError(f"the server's reply is not PostgreSQL's protocol "
                                           f"as the probe speaks it: {exc}"), target)
            return probed
        for name, ns in times.slices.items():
            _record(probed.counts[name], ns)
        _record(probed.counts["total"], times.wall_ns)
        _record(probed.counts["unaccounted"], times.unaccounted_ns)
        for name, n in times.round_trips.items():
            probed.round_trips[name] = max(n, probed.round_trips.get(name, 0))
        probed.tls_version, probed.tls_cipher = times.tls_version, times.tls_cipher
    return probed


def connect_cost(target: ConnectionTarget, *, route: str = "direct", samples: int = 200,
                 concurrency: tuple[int, ...] = (1, 8),
                 drivers: tuple[str, ...] = ("psycopg", "psycopg2", "asyncpg")) -> ConnectCost:
    """The probe's slices over ``samples`` connections to ``target``, and each driver's
    connect(), labelled with ``route`` (the route ``target`` is the entry of: ``direct``,
    ``pgbouncer:session``, ...). Never raises for a connection that fails or a method the
    probe does not speak: that part of the result is "not measured", with the reason."""
    probed = _probe(target, samples)
    counts, why = probed.counts, probed.why
    found = _driver_connects(target)
    measured = []
    # a thread makes one connect at least: no more threads than samples, each level once
    levels = sorted({min(n, samples) for n in concurrency})
    for d in drivers:
        for n in levels:
            timed, failure = _timed_connects(found[d], samples, n)
            measured.append(DriverConnect(
                driver=d, concurrency=n,
                latency=_summary(timed) if failure is None else None,
                not_measured=reason(failure, target) if failure is not None else None))
    summaries = {name: _summary(c) for name, c in counts.items()}
    # Over TLS: what the probe's connections used (prefer: if the server accepted), or, if
    # the probe could not measure, what sslmode asks for.
    tls = probed.tls_version is not None if why is None else target.get("sslmode") in TLS_MODES
    return ConnectCost(samples=samples, tls=tls, route=route,
                       slices={n: summaries[n] for n in SLICES} if why is None else {},
                       total=summaries["total"] if why is None else None,
                       unaccounted=summaries["unaccounted"] if why is None else None,
                       drivers=tuple(measured), not_measured=why,
                       round_trips=dict(probed.round_trips) if why is None else {},
                       tls_version=probed.tls_version, tls_cipher=probed.tls_cipher)
