"""What the activity sampler costs, measured inside one run so that the machine's drift
cancels: one long pooled read phase with the run's own sampler off, while this script
starts and stops a sampler (the same class, every 100 ms, on the run's backends, reading
resources each second; its process started before the run) in alternate blocks of BLOCK_S
seconds. Each block's first second (the switch) is left out. Each "on" block's operations
are divided by the mean of its two "off" neighbours', and the mean of those ratios is given
with a 95% confidence interval (Student's t). An A/A control does the same with nothing
switched. Target: within 1%.
Run: python bench/sampler_cost.py [seconds per run, default 240]
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

from _common import Report
from scipy import stats

from poolbench import RunConfig, run
from poolbench.db.server import EmbeddedServer
from poolbench.db.target import APPLICATION_NAME
from poolbench.events import RunEvents
from poolbench.measure.sampler import Sampler, ServerProcesses

BLOCK_S = 3


def measure(server: EmbeddedServer, seconds: float, *, switch: bool) -> tuple[list[float],
                                                                               float]:
    """Per 'on' block, its operations over its neighbours'; the sampler's CPU share."""
    assert server.target is not None
    sampler = Sampler(server.target, (APPLICATION_NAME,), 0.1,
                      server=ServerProcesses.find(data_dir=str(server.data_dir)))
    events, started, done = RunEvents(), threading.Event(), threading.Event()
    origin: list[float] = []
    cpu = [0.0, 0.0]  # the sampler's process, the client's processes, over 'on' blocks

    def phase_started(**_: object) -> None:
        origin.append(time.monotonic())
        started.set()

    def switcher() -> None:
        started.wait()
        block = 0
        while not done.is_set():
            on = switch and block % 2 == 0
            if on:
                sampler.start()
            done.wait(max(0.0, origin[0] + (block + 1) * BLOCK_S - time.monotonic()))
            if on and (summary := sampler.stop()) is not None:
                cpu[0] += summary.sampler_cpu_s or 0.0
                cpu[1] += summary.client_cpu_s
            block += 1

    events.phase_started.add_listener(phase_started)
    thread = threading.Thread(target=switcher)
    thread.start()
    try:
        results = run(RunConfig(target=server.target, strategies=("psycopg:pool",), rows=1000,
                                workers=8, pool_min=8, pool_max=8, warmup=0, trials=1,
                                duration_s=seconds, out_dir=None, sample_interval_s=0,
                                mix=(("read", 1),)), events=events)
    finally:
        done.set()
        thread.join()
        sampler.close()
    ops = {s.second: s.ops for s in results.strategies[0].phase("mix").trials[0].timeline}
    # Each whole block's seconds after its first (the last, cut-short second left out).
    blocks: dict[int, list[int]] = {}
    for second, n in ops.items():
        if second % BLOCK_S and second + 1 < seconds:
            blocks.setdefault(second // BLOCK_S, []).append(n)
    whole = {b: statistics.mean(v) for b, v in blocks.items() if len(v) == BLOCK_S - 1}
    ratios = [whole[b] / ((whole[b - 1] + whole[b + 1]) / 2) for b in whole
              if b % 2 == 0 and b - 1 in whole and b + 1 in whole]
    return ratios, (cpu[0] / cpu[1] if cpu[1] else 0.0)


def interval(ratios: list[float]) -> tuple[float, float, float]:
    mean = statistics.mean(ratios)
    half = stats.t.ppf(0.975, len(ratios) - 1) * statistics.stdev(ratios) / len(ratios) ** 0.5
    return mean, mean - half, mean + half


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 240.0
    report = Report("sampler_cost")
    with EmbeddedServer(max_connections=100) as server:
        control, _ = measure(server, seconds, switch=False)
        ratios, share = measure(server, seconds, switch=True)
    for name, values in (("sampler on / off", ratios), ("A/A control (nothing switched)",
                                                         control)):
        mean, low, high = interval(values)
        report.line(f"{name}: {mean:.3f}x, 95% CI {low:.3f}..{high:.3f} ({len(values)} "
                    f"'on' blocks of {BLOCK_S} s, each against its two neighbours; "
                    f"psycopg:pool reads, 8 workers, one {seconds:g} s phase)")
    report.line("target: within 1% (0.99x..1.01x); met only if the interval lies inside it")
    report.line(f"the sampler's own CPU: {share:.2%} of the client's over the 'on' blocks "
                "(the CPU time of its own process; what its work can take from a CPU-bound "
                "client on shared cores)")
    report.save()


if __name__ == "__main__":
    main()
