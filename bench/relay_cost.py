"""What the --rtt relay costs: its CPU per forwarded message, and the round trip it adds
beyond the delay asked (issue 19 §1).

On one embedded server, CLIENTS psycopg connections each run ROUND_TRIPS ``SELECT 1`` in
a loop through a relay (src/poolbench/network/), at each RTT asked. A ``SELECT 1`` is one
message each way (the client's Query; the server's RowDescription, DataRow,
CommandComplete and ReadyForQuery leave in one write), so the relay forwards two per round
trip. The relay's CPU (user + system of its process, from /proc via psutil) over those
messages gives its cost per message; the mean round trip through it, minus the direct one
measured just before, minus the RTT asked, is what it adds on top.

Run: python bench/relay_cost.py [--rtt 0,1] [--clients 8] [--round-trips 2000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import psutil
import psycopg
from _common import Report

from poolbench.db.server import EmbeddedServer
from poolbench.network.relay_process import RelayProcess


def round_trips(conninfo: str, clients: int, each: int) -> float:
    """Mean seconds per SELECT 1 over ``clients`` connections doing ``each`` in a loop."""
    conns = [psycopg.connect(conninfo, autocommit=True) for _ in range(clients)]
    times: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def loop(conn: psycopg.Connection) -> None:
        start.wait()
        t0 = time.perf_counter()
        for _ in range(each):
            conn.execute("SELECT 1", prepare=False)
        with lock:
            times.append((time.perf_counter() - t0) / each)

    threads = [threading.Thread(target=loop, args=(c,)) for c in conns]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in conns:
            c.close()
    return statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="0,1", help="asked RTTs in ms, comma-separated")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--round-trips", type=int, default=2000, help="per client")
    args = parser.parse_args()
    report = Report("relay_cost")
    report.line(f"# {args.clients} psycopg connections, {args.round_trips} SELECT 1 each, "
                "through the relay at each asked RTT; 2 messages forwarded per round trip")
    with EmbeddedServer() as server:
        target = server.target
        direct = round_trips(target.conninfo(), args.clients, args.round_trips)
        report.line(f"direct: {direct * 1e3:.3f} ms per round trip")
        for asked in (float(x) for x in args.rtt.split(",")):
            relay = RelayProcess(target, asked)
            through = relay.start()
            try:
                assert relay.proc is not None
                proc = psutil.Process(relay.proc.pid)
                before = proc.cpu_times()
                mean = round_trips(through.conninfo(), args.clients, args.round_trips)
                after = proc.cpu_times()
            finally:
                relay.stop()
            cpu = (after.user - before.user) + (after.system - before.system)
            messages = 2 * args.clients * args.round_trips
            added = (mean - direct) * 1e3 - asked
            report.line(f"--rtt {asked:g}: {mean * 1e3:.3f} ms per round trip ({added:+.3f} ms "
                        f"beyond direct + asked); the relay's CPU {cpu:.2f} s for {messages:,} "
                        f"messages = {cpu / messages * 1e6:.1f} µs per message")
    report.save()


if __name__ == "__main__":
    main()
