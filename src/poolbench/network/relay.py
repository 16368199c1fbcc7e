"""The delay relay: a TCP relay on 127.0.0.1 that holds every chunk of bytes for half a
round trip in each direction, keeps their order, and limits no bandwidth.

It runs in a process of its own (started by :class:`~poolbench.network.relay_process.
RelayProcess`), so its work never competes with the clients' interpreter for the GIL.
It imports only the standard library and is started by path (``python -I relay.py``):
``poolbench``'s package imports the whole library, which would cost each start a second.

How it delays without serialising anything: each relayed connection is a pair of asyncio
protocols, one on the client's socket and one on the server's, each with a delay line for
what it reads. A chunk read is stamped with its due time (:class:`DelaySchedule`) and
appended to its direction's line; one timer per direction (``loop.call_at``) is armed for
the chunk at the head of the line, and when it fires every chunk whose time has come is
written, in order, in one write, and the timer re-armed for the next. A chunk waits only
for its own time and for the chunks before it on the same connection, never for another
connection or for a reply. A chunk costs a callback and a timer, not a task, a queue
and a future (the streams-and-tasks path before it cost two to three times the CPU per
message: bench/relay_cost.py, docs/network.md); with a zero delay, a chunk that finds its line
empty is written at once, from the read. Every socket reads into one buffer, copied out
at once (asyncio's own allocates 256 kB per read, which costs three system calls).
The client's first bytes leave one round trip after it connected, as a TCP handshake at
that distance would make them (the client's ``connect()`` returns at once here, so a new
connection costs, end to end, the round trips it costs at that distance); what it sends
before the relay's own connection to the server is open waits in its line.

Flow control: when the socket a direction writes to has more unsent bytes than its
transport's high-water mark, the relay stops reading the other socket until it drains
(``pause_writing`` / ``resume_writing`` on the writing side pause and resume the reading
side), so a slow reader holds its sender back rather than the relay's memory growing.
A line itself holds what arrived in the last half round trip, as a link of that length.

Ends: an end of stream is passed on (a half-close, ``write_eof``) at its own due time,
after the chunks before it, as data is; a connection that breaks counts as its end of
stream (what it sent before still arrives, on time), and what was on its way to it is
dropped. The pair is closed once the end of stream has been passed on both ways. A server
that cannot be reached closes the client's connection, as with no server there.

Timers: asyncio on an ``epoll`` selector wakes at whole milliseconds (``epoll_wait``'s
resolution), far too coarse for a 0.5 ms delay, so the loop runs on ``select()`` (micro-
second timeouts) with the process's timer slack set to 1 ns. Even so a sleeping process
wakes late (0.1-0.3 ms per timer on the shared VMs here, more the longer it slept): the
relay learns how late its timers fire (:class:`WakeLead`, a running mean) and arms each
one that much early, at most a quarter of the one-way delay, so chunks leave on average
when they are due instead of always after. ``select()`` handles file
descriptors below 1024 only: the relay lowers its own limit of open files to 1024 (beyond
it a connection waits in the listen queue instead of breaking the loop) and carries at
most :data:`MAX_CONNECTIONS` at once (more are closed on arrival); poolbench refuses a run
that would need more. asyncio sets ``TCP_NODELAY`` on every TCP socket it carries, so no
chunk waits in the kernel for another.

Protocol with the parent: one JSON line on stdout once listening (``{"port": N}``) or
failing to (``{"error": "..."}``, exit 2); it exits when its stdin reaches end of file
(the parent closed it, or died) or on SIGTERM; SIGINT is the parent's to handle.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

MAX_CONNECTIONS = 400  # at once; two descriptors each, under select()'s 1024
FD_CEILING = 1024
CHUNK_BYTES = 1 << 16  # read at most at once
PR_SET_TIMERSLACK = 29
EOF = b""  # in a delay line: the end of the stream, passed on like data
LEAD_ALPHA = 1 / 32  # a timer's lateness: its weight in the running mean (WakeLead)
LEAD_SHARE = 0.25  # of the one-way delay: the most a timer is armed early


@dataclass(frozen=True)
class DelaySchedule:
    """When a chunk that reached the relay at ``arrival`` (seconds, the loop's clock) may
    leave it: half a round trip later; towards the server, also no earlier than one and a
    half round trips after the connection was ``opened`` (the handshake's round trip, then
    the way there)."""

    rtt_s: float

    def due(self, arrival: float, *, opened: float, to_server: bool) -> float:
        one_way = self.rtt_s / 2
        if to_server:
            return max(arrival, opened + self.rtt_s) + one_way
        return arrival + one_way


class WakeLead:
    """How late this process's timers fire, learnt as they fire, and so how much earlier
    to arm the next one (seconds). Each timer's lateness (from the time it was armed for
    to the time it ran; clipped at the one-way delay, so that one stall of the machine
    does not teach it) moves a running mean by :data:`LEAD_ALPHA` of the difference; the
    lead is that mean, at most :data:`LEAD_SHARE` of the one-way delay: a chunk then
    leaves on average when it is due, and never sooner than three quarters of its delay
    after it arrived."""

    def __init__(self, rtt_s: float, share: float = LEAD_SHARE) -> None:
        self.one_way = rtt_s / 2
        self.cap = self.one_way * share
        self.late = 0.0

    def learn(self, late: float) -> None:
        self.late += LEAD_ALPHA * (min(late, self.one_way) - self.late)

    @property
    def lead(self) -> float:
        return min(self.late, self.cap)


@dataclass(frozen=True)
class Upstream:
    """Where every connection is forwarded: a TCP host and port, or a Unix socket path."""

    host: str | None = None
    port: int | None = None
    unix_path: str | None = None

    async def open(self, protocol: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        if self.unix_path is not None:
            transport, _ = await loop.create_unix_connection(protocol, self.unix_path)
        else:
            transport, _ = await loop.create_connection(protocol, self.host, self.port)
        return transport


class Relay:
    """The relay's connections: each accepted one forwarded to ``upstream`` through two
    delay lines. ``trace``, if given, gets one JSON line per chunk written: the relay's
    own decisions (arrival, due, the lead its timer took, sent; the loop's clock in
    seconds), and one per connection let go (``closed``; ``abort``: at the relay's stop)."""

    def __init__(self, upstream: Upstream, schedule: DelaySchedule,
                 trace: IO[str] | None = None, lead_share: float = LEAD_SHARE) -> None:
        self.upstream = upstream
        self.schedule = schedule
        self.trace = trace
        self.pairs: set[_Pair] = set()  # accepted and not yet closed
        # Every socket reads into this one buffer, copied out at once: a fresh 256 kB
        # buffer per read (asyncio's default) costs an mmap, mremap and munmap each time.
        self.inbox = memoryview(bytearray(CHUNK_BYTES))
        self.wake = WakeLead(schedule.rtt_s, lead_share)
        self.connections = 0  # forwarded so far: each one's number in the trace

    @property
    def active(self) -> int:
        """Connections carried now (accepted, not yet closed)."""
        return len(self.pairs)

    def accept(self) -> asyncio.Protocol:
        """The protocol for a client's new connection (``loop.create_server``'s factory)."""
        return _Pair(self).client

    def close_all(self) -> None:
        for pair in list(self.pairs):
            pair.close(abort=True)


class _Pair:
    """One relayed connection: the client's end, the server's end, and when it opened."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.loop = asyncio.get_running_loop()
        self.opened = 0.0
        self.conn = 0
        self.closed = False
        self.client = _End(self, to_server=True)
        self.server = _End(self, to_server=False)
        self.client.peer, self.server.peer = self.server, self.client
        self.opening: asyncio.Task[None] | None = None

    def accepted(self) -> None:
        self.opened = self.loop.time()
        if self.relay.active >= MAX_CONNECTIONS:
            self.closed = True
            assert self.client.transport is not None
            self.client.transport.close()
            return
        self.relay.pairs.add(self)
        self.opening = self.loop.create_task(self._open_upstream())

    async def _open_upstream(self) -> None:
        try:
            await self.relay.upstream.open(lambda: self.server)
        except OSError:
            self.close()  # the client sees its connection closed, as with no server there

    def upstream_open(self) -> None:
        """The server's end is connected: what the client sent meanwhile may now leave."""
        if self.closed:
            assert self.server.transport is not None
            self.server.transport.close()
            return
        self.relay.connections += 1
        self.conn = self.relay.connections
        self.client.arm()

    def ended(self) -> None:
        """One direction is over; the pair closes when both are."""
        if self.client.passed_on and self.server.passed_on:
            self.close()

    def close(self, *, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.pairs.discard(self)
        if self.relay.trace is not None and self.conn:
            self.relay.trace.write(json.dumps({"conn": self.conn, "closed": self.loop.time(),
                                               "abort": abort}) + "\n")
        for end in (self.client, self.server):
            end.passed_on = True
            if end.timer is not None:
                end.timer.cancel()
                end.timer = None
            end.line.clear()
            if end.transport is not None:
                if abort:
                    end.transport.abort()
                else:
                    end.transport.close()


class _End(asyncio.BufferedProtocol):
    """One socket of a pair. What it reads goes into its delay line, towards its peer's
    socket; what its peer reads is written to it."""

    peer: _End

    def __init__(self, pair: _Pair, *, to_server: bool) -> None:
        self.pair = pair
        self.to_server = to_server  # the client's end: what it reads goes to the server
        self.transport: asyncio.Transport | None = None
        self.line: collections.deque[tuple[float, float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.armed_for = 0.0  # the loop time the timer was armed for
        self.read_end = False  # its end of stream (or its loss) is in the line
        self.passed_on = False  # its direction is over: end of stream written, or dropped

    # What it reads, delayed towards its peer.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.to_server:
            self.pair.accepted()
        else:
            self.pair.upstream_open()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.pair.relay.inbox

    def buffer_updated(self, nbytes: int) -> None:
        self._stamp(bytes(self.pair.relay.inbox[:nbytes]))

    def eof_received(self) -> bool:
        self._stamp(EOF)
        return True  # half-closed: its peer's bytes may still be written to it

    def _stamp(self, chunk: bytes) -> None:
        if self.read_end or self.passed_on:
            return
        self.read_end = not chunk
        pair = self.pair
        arrival = pair.loop.time()
        due = pair.relay.schedule.due(arrival, opened=pair.opened, to_server=self.to_server)
        line = self.line
        line.append((arrival, due, chunk))
        if len(line) == 1:
            if due <= arrival and self.peer.transport is not None:
                self._flush()  # no delay, nothing before it: written from the read
            else:
                self.arm()

    def arm(self) -> None:
        """A timer for the chunk at the head of the line, once the peer's socket is open."""
        if self.line and self.timer is None and self.peer.transport is not None:
            self.armed_for = self.line[0][1] - self.pair.relay.wake.lead
            self.timer = self.pair.loop.call_at(self.armed_for, self._fire)

    def _fire(self) -> None:
        """The timer: how late it ran teaches the lead; then the flush."""
        self.pair.relay.wake.learn(self.pair.loop.time() - self.armed_for)
        self._flush()

    def _flush(self) -> None:
        """Write every chunk whose time (less the lead) has come, in order; re-arm for the
        next."""
        self.timer = None
        pair = self.pair
        out = self.peer.transport
        assert out is not None
        line = self.line
        lead = pair.relay.wake.lead
        reach = pair.loop.time() + lead  # what is due by then leaves now
        chunks: list[tuple[float, float, bytes]] = []
        ending = False
        while line and line[0][1] <= reach:
            item = line.popleft()
            if not item[2]:
                ending = True
                break
            chunks.append(item)
        if chunks:
            out.write(chunks[0][2] if len(chunks) == 1 else b"".join(c for _, _, c in chunks))
            if pair.relay.trace is not None:
                self._trace(chunks, lead)
        if ending:
            if out.can_write_eof() and not out.is_closing():
                # A peer that reset its socket meanwhile (a TLS client that closed before
                # the server's close_notify reached it) refuses the half-close (ENOTCONN):
                # its direction is over all the same.
                with contextlib.suppress(OSError):
                    out.write_eof()
            self.passed_on = True
            pair.ended()
        elif line:
            self.arm()

    def _trace(self, chunks: list[tuple[float, float, bytes]], lead: float) -> None:
        pair = self.pair
        trace = pair.relay.trace
        assert trace is not None
        sent = pair.loop.time()
        to = "server" if self.to_server else "client"
        for arrival, due, chunk in chunks:
            trace.write(json.dumps({
                "conn": pair.conn, "to": to, "opened": pair.opened, "arrival": arrival,
                "due": due, "lead": lead, "sent": sent, "bytes": len(chunk)}) + "\n")

    # Flow control: its socket's unsent bytes hold back the peer's reading.

    def pause_writing(self) -> None:
        if self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone: what it sent still leaves on time, then its end of stream; what was on its
        way to it is dropped."""
        pair = self.pair
        if pair.closed:
            return
        self._stamp(EOF)
        peer = self.peer
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        peer.line.clear()
        peer.passed_on = True
        pair.ended()


def _precise_timers() -> None:
    """Timer slack of 1 ns (Linux adds 50 µs to every timeout by default)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def _descriptors_for_select() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > FD_CEILING:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_CEILING, hard))


def _say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(relay: Relay, port: int) -> int:
    """Listen on 127.0.0.1:``port`` (0: a free one) until stdin ends or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        server = await loop.create_server(relay.accept, "127.0.0.1", port,
                                          reuse_address=True)
    except OSError as exc:
        _say({"error": exc.strerror or str(exc)})
        return 2

    def on_stdin() -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            stop.set()

    loop.add_reader(0, on_stdin)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    _say({"port": server.sockets[0].getsockname()[1]})
    async with server:
        await stop.wait()
        server.close()
        relay.close_all()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="poolbench's delay relay (started by "
                                                 "poolbench; see docs/network.md)")
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream-host")
    parser.add_argument("--upstream-port", type=int)
    parser.add_argument("--upstream-unix")
    parser.add_argument("--trace", help="write the relay's decisions, one JSON line a chunk")
    parser.add_argument("--lead-share", type=float, default=LEAD_SHARE,
                        help="the most a timer is armed early, in one-way delays (0: never; "
                             "bench/relay_lateness.py compares)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _precise_timers()
    _descriptors_for_select()
    upstream = Upstream(host=args.upstream_host, port=args.upstream_port,
                        unix_path=args.upstream_unix)
    with contextlib.ExitStack() as stack:
        trace = (stack.enter_context(open(args.trace, "a", buffering=1, encoding="utf-8"))
                 if args.trace else None)
        relay = Relay(upstream, DelaySchedule(args.rtt_ms / 1000), trace,
                      lead_share=min(max(args.lead_share, 0.0), 0.5))
        loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        try:
            return loop.run_until_complete(serve(relay, args.port))
        finally:
            loop.close()


if __name__ == "__main__":
    sys.exit(main())
