"""How late the --rtt relay writes each chunk, with and without the lead it learns
(issue 19 §1: the relay's own share of the round trip's error).

The relay records, per chunk, when it was due (arrival + half the round trip) and when it
was written (``--trace``). One psycopg connection runs ``SELECT 1`` back to back for
SECONDS through a relay at each asked RTT, once with the relay arming its timers early by
the lateness it has learnt (the default, ``WakeLead``) and once never early
(``--lead-share 0``); printed per direction: the median and mean of written − due, and the
``SELECT 1`` round trip measured by the client (median), against asked + the direct one.

Run: python bench/relay_lateness.py [--rtt 1,5,20] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from _common import Report

from poolbench.db.server import EmbeddedServer
from poolbench.db.target import ConnectionTarget
from poolbench.network import relay
from poolbench.network.relay_process import upstream_args


def select_ones(conninfo: str, seconds: float) -> list[float]:
    """Each SELECT 1's round trip (ms) on one connection, back to back for ``seconds``."""
    found = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT 1")
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            conn.execute("SELECT 1").fetchone()
            found.append((time.perf_counter_ns() - t0) / 1e6)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="1,5,20", help="asked RTTs in ms, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    report = Report("relay_lateness")
    report.line(f"# one psycopg connection, SELECT 1 back to back for {args.seconds:g} s per "
                "line; late = written - due per chunk (the relay's trace), ms")
    with EmbeddedServer() as server, tempfile.TemporaryDirectory() as tmp:
        target = server.target
        direct = statistics.median(select_ones(target.conninfo(), args.seconds))
        report.line(f"direct SELECT 1: median {direct:.3f} ms")
        for rtt in (float(x) for x in args.rtt.split(",")):
            for share, label in ((relay.LEAD_SHARE, "lead learnt"), (0.0, "never early")):
                trace = Path(tmp) / f"trace-{rtt}-{share}.jsonl"
                proc = subprocess.Popen(
                    [sys.executable, "-I", relay.__file__, "--rtt-ms", repr(rtt),
                     "--lead-share", repr(share), "--trace", str(trace),
                     *upstream_args(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                assert proc.stdout is not None and proc.stdin is not None
                port = json.loads(proc.stdout.readline())["port"]
                params = {k: v for k, v in target.params if k != "hostaddr"}
                params.update(host="127.0.0.1", port=str(port))
                conninfo = ConnectionTarget(tuple(sorted(params.items())), target.source,
                                            target.embedded).conninfo()
                try:
                    through = statistics.median(select_ones(conninfo, args.seconds))
                finally:
                    proc.stdin.close()
                    proc.wait(timeout=10)
                rows = [json.loads(line) for line in trace.read_text().splitlines()]
                parts = []
                for to in ("server", "client"):
                    late = [(r["sent"] - r["due"]) * 1000 for r in rows if r.get("to") == to]
                    parts.append(f"to {to} median {statistics.median(late):+.3f} mean "
                                 f"{statistics.fmean(late):+.3f}")
                report.line(f"--rtt {rtt:g} {label:<11}: SELECT 1 median {through:.3f} ms "
                            f"({through - rtt - direct:+.3f} over asked + direct); late "
                            + "; ".join(parts))
    report.save()


if __name__ == "__main__":
    main()
