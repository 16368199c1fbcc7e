"""The terminal view: the seed's headline line, a table per strategy and phase, checks."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from poolbench.results import RunResults


def seed_line(results: RunResults) -> str | None:
    """The seed's summary line, verbatim format; None without a no-pool and a pooled run."""
    c = results.comparison
    if c is None:
        return None
    return (f"Without Pooling: {c.no_pool_s:.2f}s, With Pooling: {c.pooled_s:.2f}s, "
            f"Performance Gain: {c.gain_pct:.2f}%")


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def render(results: RunResults, console: Console) -> None:
    line = seed_line(results)
    if line:
        c = results.comparison
        console.print(line, highlight=False)
        console.print(f"  (no pool: {c.no_pool}; pooled: {c.pooled}; sums of per-phase medians)",
                      style="dim", highlight=False)
    table = Table(title=f"poolbench results — median of {results.config['trials']} trials, "
                        f"{results.config['rows']} rows, {results.config['workers']} workers")
    for col in ("strategy", "phase", "median s", "min..max s", "ops/s", "p50 ms", "p99 ms",
                "conn/wait p50 ms", "errors"):
        table.add_column(col, justify="left" if col in ("strategy", "phase") else "right")
    for s in results.strategies:
        for i, p in enumerate(s.phases):
            table.add_row(s.name if i == 0 else "", p.phase, f"{p.median_s:.3f}",
                          f"{p.min_s:.3f}..{p.max_s:.3f}", f"{p.throughput_ops_s:,.0f}",
                          _ms(p.latency.p50_us), _ms(p.latency.p99_us), _ms(p.acquire.p50_us),
                          str(p.error_count) if p.error_count else "",
                          end_section=i == len(s.phases) - 1)
    console.print(table)
    for s in results.strategies:
        if s.error_count:
            detail = ", ".join(f"{p.phase}: " + ", ".join(f"{k}×{v}" for k, v in p.errors.items())
                               for p in s.phases if p.errors)
            console.print(f"[yellow]{s.name}: {s.error_count} failed operations ({detail})[/]",
                          highlight=False)
        if s.leftover_rows_deleted:
            console.print(f"[yellow]{s.name}: {s.leftover_rows_deleted} of its rows were left "
                          "by failed deletes and removed by the end-of-strategy sweep[/]")
    v = results.verification
    if v is not None:
        if v.ok:
            console.print(f"Data check: all rows of run {results.run_tag} deleted; "
                          f"{v.other_rows_after} other rows unchanged.", style="green",
                          highlight=False)
        else:
            same = v.other_rows_digest_before == v.other_rows_digest_after
            console.print(f"[red]Data check FAILED: {v.own_rows_left} rows of run "
                          f"{results.run_tag} remain; other rows {v.other_rows_before} -> "
                          f"{v.other_rows_after}, digest {'unchanged' if same else 'changed'}[/]")
