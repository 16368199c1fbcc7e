"""Scale-out over a Dask LocalCluster: the same pooled read workload at 1, 2 (and more
where cores allow) nodes on one embedded server; throughput per node count, the scale-out
efficiency (throughput at N nodes / (N x throughput at 1)), and the client's and the
server's CPU use, to say which side saturates.
Run: python bench/scale_out.py [seconds per phase, default 3]
"""

from __future__ import annotations

import os
import sys

import psutil
from _common import Report

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer

WORKERS_PER_NODE = 8
STRATEGY = "psycopg:pool"


def server_cpu_s(data_dir: str) -> float:
    """CPU seconds of the embedded server so far: the postmaster, its live children, and the
    children it has reaped (backends that exited count in its children_* times)."""
    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if data_dir in " ".join(proc.info["cmdline"] or ()):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
                for child in proc.children(recursive=True):
                    c = child.cpu_times()
                    total += c.user + c.system
        except psutil.Error:
            continue
    return total


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    report = Report("scale_out")
    cores = os.cpu_count() or 1
    counts = [n for n in (1, 2, 4) if n <= max(2, cores)]
    report.line(f"{STRATEGY} point reads, {WORKERS_PER_NODE} workers and a pool of "
                f"{WORKERS_PER_NODE} per node, {seconds:g} s per phase, {cores} cores in all "
                "(client nodes and server share them)")
    report.line(f"{'nodes':>5} {'read ops/s':>11} {'efficiency':>11} {'server CPU %':>13}")
    base = 0.0
    with EmbeddedServer(max_connections=120) as server:
        for n in counts:
            cpu0 = server_cpu_s(str(server.data_dir))
            results = run(RunConfig(target=server.target, strategies=(STRATEGY,), rows=1,
                                    workers=WORKERS_PER_NODE * n,
                                    pool_min=WORKERS_PER_NODE * n,
                                    pool_max=WORKERS_PER_NODE * n, warmup=0, trials=1,
                                    duration_s=seconds, out_dir=None, cluster=f"local:{n}"))
            phases = results.strategies[0].phases
            busy = sum(p.median_s for p in phases)
            cpu = (server_cpu_s(str(server.data_dir)) - cpu0) / busy * 100 if busy else 0.0
            tps = results.strategies[0].phase("read").throughput_ops_s
            base = base or tps
            report.line(f"{n:>5} {tps:>11,.0f} {tps / (n * base):>11.2f} {cpu:>13.0f}")
    report.line(f"server CPU % is of one core, over the run's phases; {cores} cores means at "
                f"most {cores * 100}% for client and server together")
    report.save()


if __name__ == "__main__":
    main()
