"""The delay relay: a TCP relay on 127.0.0.1 that holds every chunk of bytes for half a
round trip in each direction, keeps their order, and limits no bandwidth.

It runs in a process of its own (started by :class:`~poolbench.network.relay_process.
RelayProcess`), so its work never competes with the clients' interpreter for the GIL.
It imports only the standard library and is started by path (``python -I relay.py``):
``poolbench``'s package imports the whole library, which would cost each start a second.

How it delays without serialising anything: per connection and direction, one task reads
chunks as they come and stamps each with its due time (:class:`DelaySchedule`), and one
task writes them in order, each when it is due. A chunk waits only for its own time and
for the chunks before it on the same connection, never for another connection or for a
reply. The client's first bytes leave one round trip after it connected, as a TCP
handshake at that distance would make them (the client's ``connect()`` returns at once
here, so a new connection costs, end to end, the round trips it costs at that distance).

Timers: asyncio on an ``epoll`` selector wakes at whole milliseconds (``epoll_wait``'s
resolution), far too coarse for a 0.5 ms delay, so the loop runs on ``select()`` (micro-
second timeouts) with the process's timer slack set to 1 ns. ``select()`` handles file
descriptors below 1024 only: the relay lowers its own limit of open files to 1024 (beyond
it a connection waits in the listen queue instead of breaking the loop) and carries at
most :data:`MAX_CONNECTIONS` at once (more are closed on arrival); poolbench refuses a run
that would need more.

Protocol with the parent: one JSON line on stdout once listening (``{"port": N}``) or
failing to (``{"error": "..."}``, exit 2); it exits when its stdin reaches end of file
(the parent closed it, or died) or on SIGTERM; SIGINT is the parent's to handle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import sys
from dataclasses import dataclass
from typing import IO

MAX_CONNECTIONS = 400  # at once; two descriptors each, under select()'s 1024
FD_CEILING = 1024
CHUNK_BYTES = 1 << 16
PR_SET_TIMERSLACK = 29


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


@dataclass(frozen=True)
class Upstream:
    """Where every connection is forwarded: a TCP host and port, or a Unix socket path."""

    host: str | None = None
    port: int | None = None
    unix_path: str | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_path is not None:
            return await asyncio.open_unix_connection(self.unix_path, limit=CHUNK_BYTES)
        return await asyncio.open_connection(self.host, self.port, limit=CHUNK_BYTES)


class Relay:
    """The relay's connections: each accepted one forwarded to ``upstream`` through two
    delay lines. ``trace``, if given, gets one JSON line per chunk written: the relay's
    own decisions (arrival, due, sent; the loop's clock in seconds)."""

    def __init__(self, upstream: Upstream, schedule: DelaySchedule,
                 trace: IO[str] | None = None) -> None:
        self.upstream = upstream
        self.schedule = schedule
        self.trace = trace
        self.writers: set[asyncio.StreamWriter] = set()
        self.active = 0  # connections open now
        self.connections = 0  # forwarded so far: each one's number in the trace

    async def handle(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        if self.active >= MAX_CONNECTIONS:
            client_writer.close()
            return
        self.active += 1
        self.writers.add(client_writer)
        upstream_writer = None
        try:
            try:
                upstream_reader, upstream_writer = await self.upstream.open()
            except OSError:
                return  # the client sees its connection closed, as with no server there
            self.writers.add(upstream_writer)
            for writer in (client_writer, upstream_writer):
                _no_delay(writer)
            self.connections += 1
            conn = self.connections
            tasks = [asyncio.ensure_future(self._pipe(conn, client_reader, upstream_writer,
                                                      opened, to_server=True)),
                     asyncio.ensure_future(self._pipe(conn, upstream_reader, client_writer,
                                                      opened, to_server=False))]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.active -= 1
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self.writers.discard(writer)
                    writer.close()

    async def _pipe(self, conn: int, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, opened: float, *, to_server: bool) -> None:
        """One direction: chunks written in arrival order, each at its due time; the end
        of the stream passed on (half-close) at its own due time."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, float, bytes]] = asyncio.Queue()

        def stamp(chunk: bytes) -> None:
            arrival = loop.time()
            queue.put_nowait((arrival, self.schedule.due(arrival, opened=opened,
                                                         to_server=to_server), chunk))

        async def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(CHUNK_BYTES):
                    stamp(chunk)
            stamp(b"")  # end of stream, or the peer gone: passed on like data

        reading = asyncio.ensure_future(read())
        try:
            while True:
                arrival, due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                writer.write(chunk)
                if self.trace is not None:
                    self.trace.write(json.dumps({
                        "conn": conn, "to": "server" if to_server else "client",
                        "opened": opened, "arrival": arrival, "due": due,
                        "sent": loop.time(), "bytes": len(chunk)}) + "\n")
                await writer.drain()
        finally:
            reading.cancel()

    def close_all(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
        server = await asyncio.start_server(relay.handle, "127.0.0.1", port,
                                            limit=CHUNK_BYTES, reuse_address=True)
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
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _precise_timers()
    _descriptors_for_select()
    upstream = Upstream(host=args.upstream_host, port=args.upstream_port,
                        unix_path=args.upstream_unix)
    with contextlib.ExitStack() as stack:
        trace = (stack.enter_context(open(args.trace, "a", buffering=1, encoding="utf-8"))
                 if args.trace else None)
        relay = Relay(upstream, DelaySchedule(args.rtt_ms / 1000), trace)
        loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        try:
            return loop.run_until_complete(serve(relay, args.port))
        finally:
            loop.close()


if __name__ == "__main__":
    sys.exit(main())
