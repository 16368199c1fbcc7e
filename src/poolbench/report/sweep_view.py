"""Views of a sweep: ``sweep.json`` (schema ``sweep.schema.json``), ``sweep.png`` and the
console table with the recommendation. They read :class:`SweepResults` only; the fitted
curve is drawn from the model's own prediction. One curve per (strategy, client count, RTT);
a strategy without a pool in a pool-size sweep is drawn as a horizontal reference line."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from poolbench.analysis.intervals import SMALL_TRIALS, Interval
from poolbench.analysis.sweep import SweepResults, curves, references
from poolbench.report import atomic_write
from poolbench.report.console import render_findings


def write_sweep(results: SweepResults, out_dir: Path, *, chart: bool = True) -> None:
    atomic_write(out_dir / "sweep.json", json.dumps(results.to_dict(), indent=2).encode()
                 + b"\n")
    if chart and results.points:
        atomic_write(out_dir / "sweep.png", sweep_png(results))


def curve_name(strategy: str, workers: int | None, rtt_ms: float | None = None) -> str:
    name = strategy if workers is None else f"{strategy} at {workers} clients"
    return name if rtt_ms is None else f"{name}, {rtt_ms:g} ms RTT"


def _interval(ci: tuple[float, float] | None, fmt: str) -> str:
    return "" if ci is None else f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def sweep_png(results: SweepResults) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = results.axis
    label = "pool size (connections, min = max)" if axis == "pool_size" else "clients (workers)"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 9), sharex=True,
                                      constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    found = curves(results.points, axis)
    for i, ((strategy, clients, rtt), mine) in enumerate(found.items()):
        colour = colours[i % len(colours)]
        name = curve_name(strategy, clients, rtt)
        model = next((m for m in results.models
                      if (m.strategy, m.workers, m.rtt_ms) == (strategy, clients, rtt)), None)
        xs = [getattr(p, axis) for p in mine]
        top.plot(xs, [p.throughput_ops_s for p in mine], "o", color=colour,
                 label=f"{name} (measured)")
        bottom.plot(xs, [p.latency.p99_us / 1000 for p in mine], "o-", color=colour,
                    label=name)
        if model is not None and model.lam > 0 and len(xs) > 1:
            lo, hi = min(xs), max(max(xs), model.peak_n or 0)
            grid = [lo + (hi - lo) * k / 100 for k in range(101)]
            residual = ("" if model.residual_pct is None
                        else f", residual {model.residual_pct:.1f}%")
            top.plot(grid, [model.predict(n) for n in grid], "-" if model.trusted else ":",
                     color=colour, label=f"{name} USL fit{residual}"
                     + ("" if model.trusted else " (not trusted)"))
            if model.peak_n is not None:  # set only when trusted and within reach
                top.axvline(model.peak_n, color=colour, linestyle="--", alpha=0.5)
                top.annotate(f"knee N*={model.peak_n:.0f}", (model.peak_n, model.predict(
                    model.peak_n)), color=colour, textcoords="offset points", xytext=(5, 5))
        rec = next((r for r in results.recommendations
                    if (r.strategy, r.workers, r.rtt_ms) == (strategy, clients, rtt)), None)
        if rec is not None and rec.pool_size is not None:
            at = next(p for p in mine if getattr(p, axis) == rec.pool_size)
            top.plot([rec.pool_size], [at.throughput_ops_s], marker="*", markersize=18,
                     color=colour, label=f"{name} recommended: {rec.pool_size}")
    # A strategy without a pool has no pool size: a horizontal line across the sizes.
    for j, p in enumerate(references(results.points, axis), start=len(found)):
        colour = colours[j % len(colours)]
        name = f"{curve_name(p.strategy, p.workers, p.rtt_ms)}: no pool (reference)"
        top.axhline(p.throughput_ops_s, color=colour, linestyle="-.", label=name)
        bottom.axhline(p.latency.p99_us / 1000, color=colour, linestyle="-.", label=name)
    top.set_ylabel("throughput (operations per second)")
    top.set_title("Throughput by " + label + " — measured, and the USL fit")
    bottom.set_ylabel("p99 latency (milliseconds)")
    bottom.set_xlabel(label)
    bottom.set_title("p99 latency")
    ticks = sorted({getattr(p, axis) for mine in found.values() for p in mine})
    for ax in (top, bottom):
        if ticks:  # a sweep of references alone has no N axis to draw
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.set_ylim(bottom=0)  # from zero, so a 5% difference does not look like 50%
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _trials(ci: Interval | None) -> str:
    """A point's trials: their median and its bootstrap interval, or why there is none."""
    if ci is None:
        return ""
    if ci.low is None or ci.high is None:
        return f"{ci.value:,.0f} (1 trial)"
    return f"{ci.value:,.0f} [{ci.low:,.0f}, {ci.high:,.0f}]" + (
        f" ({ci.n} trials: their range)" if ci.n <= SMALL_TRIALS else "")


def _p99_trials(ci: Interval | None) -> str:
    """A point's trials' p99 (ms): their median and its interval, as ``_trials``."""
    if ci is None or ci.low is None or ci.high is None:
        return ""
    return f"{ci.value / 1000:.2f} [{ci.low / 1000:.2f}, {ci.high / 1000:.2f}]"


def _rtt(asked: float | None, measured: float | None) -> str:
    """A point's RTT: asked, and what the relay check measured (none: direct)."""
    if asked is None:
        return ""
    return f"{asked:g}" + (f" ({measured:.2f})" if measured is not None else "")


def render_sweep(results: SweepResults, console: Console) -> None:
    table = Table(title=f"poolbench sweep — {len(results.points)} points"
                        + (" (partial)" if results.partial else ""))
    # --rtt's axis with more than one value: each point's RTT, asked (measured)
    distances = len({p.rtt_ms for p in results.points}) > 1
    for col in ("strategy", "pool", "workers", *(("RTT ms",) if distances else ()), "ops/s",
                "trials: median [95% interval]",
                "p50 ms", "p99 ms", "trials' p99 ms: median [95%]", "wait p50 ms",
                "wait p99 ms", "active backends median / max", "errors", "server agrees"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for p in results.points:
        table.add_row(p.strategy, str(p.pool_size or "no pool"), str(p.workers),
                      *((_rtt(p.rtt_ms, p.rtt_measured_ms),) if distances else ()),
                      f"{p.throughput_ops_s:,.0f}", _trials(p.throughput_interval),
                      f"{p.latency.p50_us / 1000:.2f}",
                      f"{p.latency.p99_us / 1000:.2f}", _p99_trials(p.p99_interval),
                      f"{p.acquire.p50_us / 1000:.2f}",
                      f"{p.acquire.p99_us / 1000:.2f}",
                      f"{p.active_median:g} / {p.active_max}" if p.active_max is not None
                      else "", str(p.errors or ""),
                      "yes" if p.server_ok else "[red]NO[/]" if p.server_ok is False else "")
    console.print(table)
    for p in references(results.points, results.axis):
        console.print(f"{curve_name(p.strategy, p.workers, p.rtt_ms)} has no pool: a "
                      f"reference line, not a pool size (not fitted, not recommended): "
                      f"{p.throughput_ops_s:,.0f} ops/s, p99 {p.latency.p99_us / 1000:.1f} ms",
                      highlight=False)
    for m in results.models:
        peak = f", peak N* = {m.peak_n:.1f}" if m.peak_n is not None else ""
        console.print(f"USL model, {curve_name(m.strategy, m.workers, m.rtt_ms)}: λ = {m.lam:,.1f} "
                      f"ops/s{_interval(m.lam_ci, ',.0f')}, σ = {m.sigma:.4f}"
                      f"{_interval(m.sigma_ci, '.4f')}, κ = {m.kappa:.6f}"
                      f"{_interval(m.kappa_ci, '.6f')} (95% intervals){peak}; {m.note}",
                      highlight=False)
    for r in results.recommendations:
        name = curve_name(r.strategy, r.workers, r.rtt_ms)
        if r.pool_size is None:
            console.print(f"[yellow]{name}: {r.reason}[/]", highlight=False)
        else:
            console.print(f"[bold]Recommended for {name}: {r.reason}[/]", highlight=False)
        if r.interval is not None and r.interval.low is None and r.interval.note:
            console.print(f"  no interval: {r.interval.note}", style="dim", highlight=False)
        console.print(f"  ({r.rule_of_thumb_note}; a rule of thumb, not a measurement)",
                      style="dim", highlight=False)
        if r.capacity_note:
            console.print(f"  {r.capacity_note}", highlight=False)
    adaptive = results.config.get("adaptive")
    if isinstance(adaptive, dict) and adaptive.get("budget_s") is not None:
        added = "; ".join(f"step {i}: " + ", ".join(
            f"{pool} ({name} at {clients}" + "".join(f", {r:g} ms RTT" for r in rtt) + ")"
            for name, pool, clients, *rtt in step)
                          for i, step in enumerate(adaptive.get("steps") or [], start=1))
        console.print(f"adaptive sizes (--budget {adaptive['budget_s']:g} s): "
                      f"{added or 'none added'}; stopped: {adaptive.get('stopped')}",
                      highlight=False)
    judged = sum(p.trials_judged for p in results.points)
    if judged:  # a sweep of trials under 10 s is not judged: its runs said so
        settled = sum(p.trials_settled for p in results.points)
        console.print(f"steady state (MSER-5, White 1997): {settled} of {judged} judged trials "
                      "settled" + ("" if settled == judged else
                                   " (see the finding 'not steady')"),
                      style="dim" if settled == judged else "yellow", highlight=False)
    render_findings(results.findings, console)
