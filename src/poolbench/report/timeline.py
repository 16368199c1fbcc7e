"""``timeline.png``: second by second, each strategy's throughput, p99 and workers waiting for
a connection through its phases (the first counted trial), and the server's active backends
as the sampler saw them."""

from __future__ import annotations

import io
from pathlib import Path

from poolbench.report import atomic_write
from poolbench.results import RunResults, Second, StrategyResult


def series(s: StrategyResult) -> list[tuple[str, Second]]:
    """The first counted trial's seconds, phase after phase."""
    found = []
    for p in s.phases:
        counted = [t for t in p.trials if not t.warmup]
        if counted:
            found += [(p.phase, sec) for sec in counted[0].timeline]
    return found


class TimelineExporter:
    filename = "timeline.png"

    def write(self, results: RunResults, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ops_ax, p99_ax, wait_ax, active_ax) = plt.subplots(
            4, 1, figsize=(12, 13), sharex=False, constrained_layout=True)
        for s in results.strategies:
            points = series(s)
            xs = list(range(len(points)))
            ops_ax.plot(xs, [sec.ops for _, sec in points], label=s.name)
            p99_ax.plot(xs, [sec.p99_us / 1000 for _, sec in points], label=s.name)
            wait_ax.plot(xs, [sec.waiting for _, sec in points], label=s.name)
            if s.activity is not None and s.activity.timeline:
                active_ax.plot([a.second for a in s.activity.timeline],
                               [a.active for a in s.activity.timeline], label=s.name)
        ops_ax.set_ylabel("operations in that second")
        ops_ax.set_title("Throughput, second by second (create, read, update, delete in turn; "
                         "first counted trial)")
        p99_ax.set_ylabel("p99 latency (milliseconds)")
        p99_ax.set_title("p99 latency, second by second")
        wait_ax.set_ylabel("workers acquiring (mean)")
        wait_ax.set_title("Workers waiting for a pooled connection (or connecting, without a "
                          "pool), second by second")
        for ax in (ops_ax, p99_ax, wait_ax):
            ax.set_xlabel("seconds of measured phases")
        active_ax.set_xlabel("seconds since the strategy started (sampled)")
        active_ax.set_ylabel("active backends (median of samples)")
        active_ax.set_title("The server's active backends (pg_stat_activity)")
        for ax in (ops_ax, p99_ax, wait_ax, active_ax):
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)  # counts and times: from zero, so changes keep their size
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write(path, buf.getvalue())
