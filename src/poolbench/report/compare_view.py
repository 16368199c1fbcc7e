"""Views of a run comparison: console table, Markdown and a small HTML page. They read the
:class:`~poolbench.analysis.compare.RunComparison` only."""

from __future__ import annotations

import html

from rich.console import Console
from rich.table import Table

from poolbench.analysis.compare import Change, RunComparison

UNITS = {"throughput": "ops/s", "p50": "ms", "p99": "ms"}


def _value(c: Change, value: float) -> str:
    return f"{value:,.0f}" if c.metric == "throughput" else f"{value / 1000:.2f}"


def _verdict(c: Change) -> str:
    if c.p_value is None:
        return "cannot be judged (fewer than 2 counted trials)"
    if c.significant is None:
        return f"cannot be judged ({c.base_trials} and {c.new_trials} trials are too few)"
    if c.regression:
        return f"REGRESSION (p={c.p_holm:.3f})"
    if not c.significant:
        return f"noise (p={c.p_holm:.2f})"
    if not c.beyond_noise:
        return (f"within run-to-run noise (p={c.p_holm:.3f}, but the change is within the "
                f"runs' {c.spread_pct:.0f}% interquartile spread)")
    return f"significant (p={c.p_holm:.3f})"


def rows(comparison: RunComparison) -> list[list[str]]:
    return [[c.strategy, c.phase, f"{c.metric} [{UNITS[c.metric]}]", _value(c, c.base),
             _value(c, c.new), f"{c.change_pct:+.1f}%", _verdict(c)]
            for c in comparison.changes]


HEADERS = ["strategy", "phase", "figure", "base", "new", "change", "verdict"]


def render_comparison(comparison: RunComparison, console: Console) -> None:
    table = Table(title=f"poolbench compare: {comparison.base} -> {comparison.new} "
                        f"(threshold {comparison.threshold_pct:g}%)")
    for col in HEADERS:
        table.add_column(col, justify="left" if col in ("strategy", "phase", "figure",
                                                        "verdict") else "right")
    for c, row in zip(comparison.changes, rows(comparison)):
        style = "red" if c.regression else None
        table.add_row(*row, style=style)
    console.print(table)
    console.print(f"method: {comparison.method}; p is Holm-adjusted over the "
                  f"{comparison.family} figures compared", style="dim", highlight=False)
    for warning in comparison.warnings:
        console.print(f"[yellow]warning: {warning}[/]", highlight=False)
    for name in comparison.only_in_base:
        console.print(f"[yellow]only in {comparison.base}: {name}[/]", highlight=False)
    for name in comparison.only_in_new:
        console.print(f"[yellow]only in {comparison.new}: {name}[/]", highlight=False)
    for c in comparison.regressions:
        console.print(f"[red]regression: {c.strategy} {c.phase} {c.metric} "
                      f"{c.change_pct:+.1f}% (p={c.p_holm:.3f}, Holm-adjusted; beyond the "
                      f"{c.spread_pct:.0f}% interquartile spread)[/]", highlight=False)


def comparison_markdown(comparison: RunComparison) -> str:
    lines = [f"## poolbench compare: `{comparison.base}` → `{comparison.new}`", "",
             "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(":---" if i in (0, 1, 2, 6) else "---:" for i in range(7)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(comparison)]
    lines += ["", f"Method: {comparison.method}; p is Holm-adjusted over the "
                  f"{comparison.family} figures compared.", ""]
    lines += [f"- warning: {w}" for w in comparison.warnings]
    return "\n".join(lines) + "\n"


def comparison_html(comparison: RunComparison) -> str:
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    body = "".join(
        "<tr" + (' class="bad"' if c.regression else "") + ">"
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for c, row in zip(comparison.changes, rows(comparison)))
    warnings = "".join(f"<p class=\"warn\">warning: {html.escape(w)}</p>"
                       for w in comparison.warnings)
    title = html.escape(f"poolbench compare: {comparison.base} -> {comparison.new}")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>body{{font-family:system-ui,sans-serif;margin:2rem}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
            ".bad{color:#b00;font-weight:bold}.warn{color:#a60}</style></head><body>"
            f"<h1>{title}</h1><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            f"</table><p>Method: {html.escape(comparison.method)}; p is Holm-adjusted over "
            f"the {comparison.family} figures compared.</p>{warnings}"
            "</body></html>")
