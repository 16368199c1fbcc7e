"""``report.html``: one self-contained page (plotly.js inline, no network request) with
interactive charts and every table of the console.

Charts: throughput and p50/p99 latency per phase; per strategy, the mean time of an
operation split into waiting for a connection, running the statement and the rest (giving
the connection back, waiting for the interpreter), stacked;
latency percentile curves from the HDR histograms on a log-scaled percentile axis, as
HdrHistogram's plotter draws them. Then, for a run of scripts, per strategy and script its
commands as ``pgbench -r`` shows them and their calls against ``pg_stat_statements``; the
server and pooler cross-checks, the pgbench calibration, the environment and the config
(the password is already masked in it). Every text is escaped (SQL comes from user files).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from poolbench.measure.metrics import percentile_curve
from poolbench.report import atomic_write
from poolbench.report.console import (
    PACED_NOTE,
    SLICE_NAMES,
    UNACCOUNTED_NAME,
    calibration_by_script,
    calibration_paced,
    connect_cost_title,
    figure_scripts_cell,
    rate_cell,
    ratio_scripts_cell,
    round_trips_cell,
)
from poolbench.report.seed_line import run_sentences
from poolbench.report.timeline import series
from poolbench.results import PHASES, STATEMENT_CALLS, Check, ConnectCost, RunResults

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.bad { color: #b00; font-weight: bold; } .note { color: #666; font-size: 0.85rem; }
.chart { width: 100%; min-height: 420px; }
"""


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _esc(value: object) -> str:
    return html.escape(str(value))


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _figures(results: RunResults) -> list[tuple[str, dict[str, Any]]]:
    """(element id, plotly figure as data) per chart; values read from the result model."""
    strategies = results.strategies
    phases = {p.phase for s in strategies for p in s.phases}
    # a --mix or scripts run's phases are the mixed phase and its kinds, not CRUD's
    phase_axis = ("CRUD phase" if phases <= set(PHASES)
                  else "phase (mix: all; then each kind)")
    throughput = [{"type": "bar", "name": s.name, "x": [p.phase for p in s.phases],
                   "y": [p.throughput_ops_s for p in s.phases]} for s in strategies]
    latency = [{"type": "bar", "name": f"{s.name} p{q}", "x": [p.phase for p in s.phases],
                "y": [getattr(p.latency, f"p{q}_us") / 1000 for p in s.phases]}
               for s in strategies for q in (50, 99)]
    split = []
    for part, label in ((lambda p: p.acquire.mean_us, "waiting for a connection"),
                        (lambda p: p.execute.mean_us, "statement"),
                        (lambda p: p.release_mean_us,
                         "giving the connection back, waiting for the interpreter")):
        split.append({"type": "bar", "name": label,
                      "x": [[s.name for s in strategies for _ in s.phases],
                            [p.phase for s in strategies for p in s.phases]],
                      "y": [part(p) / 1000 for s in strategies for p in s.phases]})
    curves = []
    for s in strategies:
        for p in s.phases:
            points = [(pct, us) for pct, us in percentile_curve(p.histogram_latency_us)
                      if pct < 100.0]
            curves.append({"type": "scatter", "mode": "lines+markers",
                           "name": f"{s.name} {p.phase}",
                           "x": [1 / (1 - pct / 100) for pct, _ in points],
                           "y": [us / 1000 for _, us in points],
                           "text": [f"p{pct:g}" for pct, _ in points]})
    timeline, waiting = [], []
    for s in strategies:
        points = series(s)
        timeline.append({"type": "scatter", "mode": "lines", "name": s.name,
                         "x": list(range(len(points))), "y": [sec.ops for _, sec in points],
                         "text": [phase for phase, _ in points]})
        waiting.append({"type": "scatter", "mode": "lines", "name": s.name,
                        "x": list(range(len(points))), "y": [sec.waiting for _, sec in points],
                        "text": [phase for phase, _ in points]})
    ticks = [1 / (1 - q / 100) for q in (0, 90, 99, 99.9, 99.99, 99.999)]
    axis = {"title": {"text": "percentile"}, "type": "log", "tickvals": ticks,
            "ticktext": ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]}
    return [
        ("throughput", {"data": throughput, "layout": {
            "title": {"text": "Throughput per phase"}, "barmode": "group",
            "xaxis": {"title": {"text": phase_axis}, "categoryarray": list(PHASES)},
            "yaxis": {"title": {"text": "operations per second (median of trials)"}}}}),
        ("latency", {"data": latency, "layout": {
            "title": {"text": "Latency per operation, p50 and p99"}, "barmode": "group",
            "xaxis": {"title": {"text": phase_axis}},
            "yaxis": {"title": {"text": "milliseconds"}}}}),
        ("split", {"data": split, "layout": {
            "title": {"text": "Where an operation's time goes: waiting for a connection, the "
                               "statement, giving the connection back (means, successful "
                               "operations; a bar's top is the operation's mean)"},
            "barmode": "stack", "xaxis": {"title": {"text": "strategy / phase"}},
            "yaxis": {"title": {"text": "milliseconds (mean)"}}}}),
        ("percentiles", {"data": curves, "layout": {
            "title": {"text": "Latency by percentile (HDR histograms, successful operations)"},
            "xaxis": axis, "yaxis": {"title": {"text": "milliseconds"}}}}),
        ("timeline", {"data": timeline, "layout": {
            "title": {"text": "Throughput second by second (phases in turn, first counted "
                               "trial)"},
            "xaxis": {"title": {"text": "seconds of measured phases"}},
            "yaxis": {"title": {"text": "operations in that second"}, "rangemode": "tozero"}}}),
        ("waiting", {"data": waiting, "layout": {
            "title": {"text": "Workers waiting for a pooled connection (or connecting, "
                               "without a pool), second by second"},
            "xaxis": {"title": {"text": "seconds of measured phases"}},
            "yaxis": {"title": {"text": "workers acquiring (mean over the second)"},
                      "rangemode": "tozero"}}}),
    ]


def _sections(results: RunResults) -> str:
    parts = []
    rows = [[_esc(s.name), p.phase, f"{p.median_s:.3f}", f"{p.min_s:.3f}..{p.max_s:.3f}",
             f"{p.throughput_ops_s:,.0f}", _ms(p.latency.p50_us), _ms(p.latency.p99_us),
             _ms(p.acquire.p50_us), _ms(p.execute.p50_us),
             f'<span class="bad">{p.error_count}</span>' if p.error_count else ""]
            for s in results.strategies for p in s.phases]
    parts.append("<h2>Per strategy and phase</h2>" + _table(
        ["strategy", "phase", "median s", "min..max s", "ops/s", "p50 ms", "p99 ms",
         "wait p50 ms", "statement p50 ms", "errors"], rows))
    parts.extend(_statements(results))
    checked = [s for s in results.strategies if s.server is not None]
    if checked:
        # a script's statement calls are in its own section, not columns here
        names = [c.name for c in checked[0].server.checks  # type: ignore[union-attr]
                 if not c.name.startswith(STATEMENT_CALLS)]
        rows = []
        for s in checked:
            x = s.server
            assert x is not None
            rows.append([_esc(s.name), *(f"{c.ours:,}" if c.ok else
                                         f'<span class="bad">{c.ours:,} / {c.server:,}</span>'
                                         for c in x.checks
                                         if not c.name.startswith(STATEMENT_CALLS)),
                         f"{x.transactions_per_operation:.2f}",
                         "yes" if x.ok else '<span class="bad">NO</span>'])
        notes = sorted({n for s in checked for n in s.server.notes  # type: ignore[union-attr]
                        if not n.startswith(STATEMENT_NOTES)})
        parts.append("<h2>Server cross-check (poolbench / server)</h2>"
                     + _table(["strategy", *names, "server xacts/op", "agrees"], rows)
                     + "".join(f'<p class="note">{_esc(n)}</p>' for n in notes))
    pooled = [s for s in results.strategies if s.pooler is not None]
    if pooled:
        rows = [[_esc(s.name), _esc(s.pooler.version), "on" if s.prepared_statements else "off",
                 f"{s.pooler.transactions:,}", f"{s.pooler.queries:,}",
                 f"{s.pooler.server_connections_max} / {s.pooler.pool_size}",
                 s.pooler.clients_waiting_max, f"{s.pooler.maxwait_us_max / 1000:.1f}",
                 "yes" if s.pooler.ok else '<span class="bad">NO</span>']
                for s in pooled if s.pooler is not None]
        parts.append("<h2>Pooler cross-check</h2>" + _table(
            ["strategy", "pooler", "prepared", "transactions", "queries",
             "server conns max / pool", "clients waiting max", "maxwait ms", "agrees"], rows))
    cal = results.calibration
    if cal is not None:
        paced, by_script = calibration_paced(cal), calibration_by_script(cal)
        rows = [[f.script, "new per transaction (-C)" if f.connect_each else "persistent",
                 f.clients, f"{f.tps:,.0f}", _ms(f.latency.p50_us), _ms(f.latency.p99_us),
                 f"{f.connection_ms:.2f}", *([rate_cell(f)] if paced else []),
                 *([_esc(figure_scripts_cell(f))] if by_script else [])] for f in cal.figures]
        ratio_rows = [[_esc(r.strategy), r.script, r.against, f"{r.throughput:.2f}x",
                       f"{r.p50:.2f}x", f"{r.p99:.2f}x",
                       f"{r.connect:.2f}x" if r.connect is not None else "",
                       *([_esc(ratio_scripts_cell(r))] if by_script else [])]
                      for r in cal.ratios]
        on = f", your scripts: {_esc(cal.workload)}" if cal.workload else ""
        parts.append(f"<h2>pgbench on the same server{on} — {_esc(cal.pgbench)}</h2>"
                     + (f"<p>{_esc(PACED_NOTE)}</p>" if paced else "")
                     + _table(["script", "connections", "clients", "tps", "p50 ms", "p99 ms",
                               "connect ms", *(["-R"] if paced else []),
                               *(["tps per script"] if by_script else [])], rows)
                     + _table(["strategy", "script", "vs pgbench", "throughput", "p50", "p99",
                               "connect", *(["throughput per script"] if by_script else [])],
                              ratio_rows))
    parts.extend(_connect_cost(cost) for cost in results.connect_cost)
    if results.not_measured:
        parts.append("<h2>Not measured</h2>" + _table(
            ["measurement", "why"],
            [[_esc(m), _esc(why)] for m, why in results.not_measured.items()]))
    if results.findings:
        parts.append("<h2>Findings</h2>" + _table(
            ["finding", "strategy", "evidence", "fix"],
            [[_esc(f.rule), _esc(f.strategy), _esc(f.evidence), _esc(f.fix)]
             for f in results.findings]))
    v = results.verification
    if v is not None:
        parts.append("<h2>Data check</h2><p>" + (
            f"All rows of run {_esc(results.run_tag)} deleted; {v.other_rows_after} other rows "
            "unchanged." if v.ok else '<span class="bad">FAILED</span>: '
            f"{v.own_rows_left} rows of the run remain; other rows {v.other_rows_before} -> "
            f"{v.other_rows_after}") + "</p>")
    parts.append("<h2>Environment</h2><pre>" + _esc(json.dumps(results.environment, indent=2))
                 + "</pre><h2>Config</h2><pre>" + _esc(json.dumps(results.config, indent=2))
                 + "</pre>")
    return "".join(parts)


# The cross-check's notes on statement calls (check/statement_calls.py): why they are not
# measured, or shown and not checked; shown in the scripts' sections.
STATEMENT_NOTES = ("statement calls ", "calls of utility statements ")


def _statements(results: RunResults) -> list[str]:
    """Per strategy and script: its commands as pgbench -r shows them, then the calls
    pg_stat_statements counted of them against poolbench's (none without scripts)."""
    parts = []
    for s in results.strategies:
        calls = [c for c in (s.server.checks if s.server is not None else ())
                 if c.name.startswith(STATEMENT_CALLS)]
        notes = sorted(n for n in (s.server.notes if s.server is not None else ())
                       if n.startswith(STATEMENT_NOTES))
        for p in s.phases:
            if not p.statements:
                continue
            script = p.phase.removeprefix("script:")
            rows = [[f.line, f"<code>{_esc(f.command)}</code>", f"{f.count:,}",
                     f'<span class="bad">{f.failures:,}</span>' if f.failures else "0",
                     f"{f.mean_ms:.3f}" if f.mean_ms is not None else "—"]
                    for f in p.statements]
            part = (f"<h2>Statements of {_esc(script)} — {_esc(s.name)}</h2>"
                    '<p class="note">As pgbench -r shows them, over the counted trials; a '
                    "\\set is evaluated before the connection is taken, not timed.</p>"
                    + _table(["line", "command", "count", "failures", "mean ms"], rows))
            mine = [c for c in calls if _of_script(c, script)]
            if mine:
                part += ("<h3>Statement calls: successful executions (poolbench, warm-up "
                         "included) against pg_stat_statements calls</h3>"
                         + _table(["statement", "poolbench", "server", "checked"],
                                  [[_esc(c.name.removeprefix(STATEMENT_CALLS)),
                                    f"{c.ours:,}", f"{c.server:,}", _checked(c)]
                                   for c in mine]))
            part += "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
            parts.append(part)
    return parts


def _of_script(check: Check, script: str) -> bool:
    """Whether a statement-calls check counts a command of ``script``: its name is the
    commands' file:line, joined with " + " where the server cannot tell them apart."""
    return any(member.rpartition(":")[0] == script
               for member in check.name.removeprefix(STATEMENT_CALLS).split(" + "))


def _checked(c: Check) -> str:
    if not c.exact:
        return "shown, not checked (see below)"
    return "yes, equal" if c.ok else '<span class="bad">NO: they differ</span>'


def _connect_cost(cost: ConnectCost) -> str:
    """The probe's slices and each driver's connect(), or why they were not measured."""
    head = f"<h2>{_esc(connect_cost_title(cost))}</h2>"
    if cost.total is None:
        probe = f"<p>The probe: not measured: {_esc(cost.not_measured)}</p>"
    else:
        rows = [[_esc(SLICE_NAMES.get(n, n)), _ms(s.p50_us), _ms(s.p99_us), _ms(s.mean_us),
                 round_trips_cell(cost, n)] for n, s in cost.slices.items()]
        if cost.unaccounted is not None:
            u = cost.unaccounted
            rows.append([_esc(UNACCOUNTED_NAME), _ms(u.p50_us), _ms(u.p99_us), _ms(u.mean_us),
                         ""])
        rows.append(["<b>total</b> (wall clock around each connection)",
                     _ms(cost.total.p50_us), _ms(cost.total.p99_us), _ms(cost.total.mean_us),
                     str(sum(cost.round_trips.values())) if cost.round_trips else ""])
        probe = _table(["slice", "p50 ms", "p99 ms", "mean ms", "round trips"], rows)
    drivers = [[_esc(d.driver), d.concurrency, _ms(d.latency.p50_us), _ms(d.latency.p99_us)]
               if d.latency is not None else
               [_esc(d.driver), d.concurrency, f"not measured: {_esc(d.not_measured)}", ""]
               for d in cost.drivers]
    return head + probe + _table(["driver", "threads", "connect() p50 ms", "p99 ms"], drivers)


def report_html(results: RunResults) -> str:
    from plotly.offline import get_plotlyjs

    cfg = results.config
    title = (f"poolbench: {cfg['rows']} rows, {cfg['workers']} workers, pool "
             f"{cfg['pool_min']}..{cfg['pool_max']}" + (" (partial)" if results.partial else ""))
    headline = "".join({"line": "<p><b>{}</b></p>", "detail": '<p class="note">({})</p>',
                        "warning": '<p class="bad">{}</p>', "note": '<p class="note">{}</p>'}
                       [sentence.kind].format(_esc(sentence.text))
                       for sentence in run_sentences(results))
    figures = _figures(results)
    divs = "".join(f'<div class="chart" id="{name}"></div>' for name, _ in figures)
    draw = "".join(f"Plotly.newPlot({json.dumps(name)}, {json.dumps(fig['data'])}, "
                   f"{json.dumps(fig['layout'])}, {{responsive: true}});\n"
                   for name, fig in figures)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body><h1>{_esc(title)}</h1>{headline}"
            f"{divs}{_sections(results)}<script>{draw}</script></body></html>")


class HtmlExporter:
    filename = "report.html"

    def write(self, results: RunResults, path: Path) -> None:
        atomic_write(path, report_html(results).encode())
