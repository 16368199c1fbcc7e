"""``crud_performance_comparison.png``: grouped bars per phase, one bar per strategy.

Four panels read left to right: median seconds per phase (whiskers: min..max
over trials), throughput, p99 latency, and the mean operation split into waiting
for a connection, running the statement, and the rest (giving the connection back,
waiting for the interpreter). Nothing here computes a statistic.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from poolbench.report import atomic_write
from poolbench.results import PHASES, RunResults, StrategyResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class ChartExporter:
    filename = "crud_performance_comparison.png"

    def write(self, results: RunResults, path: Path) -> None:
        import matplotlib.pyplot as plt

        fig = self.figure(results)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write(path, buf.getvalue())

    def figure(self, results: RunResults) -> Figure:
        """The chart as a matplotlib figure (its text elements are what a reader sees)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        strategies = results.strategies
        names = list(dict.fromkeys(p.phase for s in strategies for p in s.phases)) or list(PHASES)
        # a --mix or scripts run's phases are the mixed phase and its kinds, not CRUD's
        axis = "CRUD phase" if set(names) <= set(PHASES) else "phase (mix: all; then each kind)"
        fig, axes = plt.subplots(1, 4, figsize=(21, 6.2), constrained_layout=True)
        width = 0.8 / max(len(strategies), 1)
        panels = (
            ("Median time per phase", "seconds (lower is better)", lambda p: p.median_s),
            ("Throughput", "operations per second (higher is better)",
             lambda p: p.throughput_ops_s),
            ("p99 latency per operation", "milliseconds (lower is better)",
             lambda p: p.latency.p99_us / 1000),
        )
        for ax, (title, ylabel, value) in zip(axes[:3], panels):
            for i, s in enumerate(strategies):
                xs = [names.index(p.phase) + (i - (len(strategies) - 1) / 2) * width
                      for p in s.phases]
                ys = [value(p) for p in s.phases]
                yerr = None
                if ax is axes[0]:
                    yerr = [[p.median_s - p.min_s for p in s.phases],
                            [p.max_s - p.median_s for p in s.phases]]
                ax.bar(xs, ys, width, label=s.name, yerr=yerr, capsize=3)
            ax.set_xticks(range(len(names)), names)
            ax.set_xlabel(axis)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(axis="y", alpha=0.3)
        self._split_panel(axes[3], strategies, width, names, axis)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, title="driver:pool", loc="outside lower center",
                   ncols=min(len(labels), 7), fontsize="small")
        cfg = results.config
        server = results.environment.get("server", {})
        fig.suptitle(
            f"poolbench: {cfg['rows']} rows, {cfg['workers']} workers, pool {cfg['pool_min']}.."
            f"{cfg['pool_max']}, median of {cfg['trials']} trials — PostgreSQL "
            f"{server.get('server_version', '?')}" + ("  [PARTIAL]" if results.partial else ""))
        return fig

    @staticmethod
    def _split_panel(ax: Axes, strategies: tuple[StrategyResult, ...], width: float,
                     names: list[str], axis: str) -> None:
        """Each bar is one strategy's mean operation split in three, bottom to top: waiting
        for a connection (solid), the statement (hatched), and the rest: giving the
        connection back and waiting for the interpreter (dotted). The bar's top is the
        operation's mean."""
        import matplotlib.pyplot as plt

        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, s in enumerate(strategies):
            xs = [names.index(p.phase) + (i - (len(strategies) - 1) / 2) * width
                  for p in s.phases]
            wait = [p.acquire.mean_us / 1000 for p in s.phases]
            statement = [p.execute.mean_us / 1000 for p in s.phases]
            rest = [p.release_mean_us / 1000 for p in s.phases]
            colour = colours[i % len(colours)]
            ax.bar(xs, wait, width, color=colour, gid=f"{s.name}:wait")
            ax.bar(xs, statement, width, bottom=wait, color=colour, alpha=0.45, hatch="//",
                   gid=f"{s.name}:statement")
            ax.bar(xs, rest, width, bottom=[w + x for w, x in zip(wait, statement)],
                   color=colour, alpha=0.2, hatch="..", gid=f"{s.name}:rest")
        ax.set_xticks(range(len(names)), names)
        ax.set_xlabel(f"{axis} (solid: waiting for a connection; hatched: statement;\n"
                      "dotted: giving the connection back, waiting for the interpreter)")
        ax.set_ylabel("milliseconds, mean per operation")
        ax.set_title("Where an operation's time goes")
        ax.grid(axis="y", alpha=0.3)
