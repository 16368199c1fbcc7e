"""``results.md``: the seed's summary line and one table row per strategy and phase, in
hyperfine's ``--export-markdown`` style, ready to paste into a pull request."""

from __future__ import annotations

from pathlib import Path

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
from poolbench.results import STATEMENT_CALLS, ConnectCost, RunResults

HEADER = ("| Strategy | Phase | Median [s] | Min [s] | Max [s] | Throughput [ops/s] | "
          "p50 [ms] | p99 [ms] | Wait p50 [ms] | Statement p50 [ms] | Errors |")


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|")


def _connect_cost(cost: ConnectCost) -> list[str]:
    """The probe's slices and each driver's connect(), or why they were not measured."""
    if cost.total is None:
        lines = ["", f"{connect_cost_title(cost)}: not measured: {_cell(cost.not_measured)}"]
    else:
        lines = ["", f"{connect_cost_title(cost)}:", "", "| Slice | p50 [ms] | p99 [ms] | "
                 "Mean [ms] | Round trips |", "|:---|---:|---:|---:|---:|"]
        rows = [(SLICE_NAMES.get(n, n), s, round_trips_cell(cost, n))
                for n, s in cost.slices.items()]
        if cost.unaccounted is not None:
            rows.append((UNACCOUNTED_NAME, cost.unaccounted, ""))
        rows.append(("**total** (wall clock around each connection)", cost.total,
                     str(sum(cost.round_trips.values())) if cost.round_trips else ""))
        lines += [f"| {name} | {_ms(s.p50_us)} | {_ms(s.p99_us)} | {_ms(s.mean_us)} | {trips} |"
                  for name, s, trips in rows]
    lines += ["", "| Driver | Threads | connect() p50 [ms] | p99 [ms] |", "|:---|---:|---:|---:|"]
    lines += [f"| {d.driver} | {d.concurrency} | {_ms(d.latency.p50_us)} | "
              f"{_ms(d.latency.p99_us)} |" if d.latency is not None else
              f"| {d.driver} | {d.concurrency} | not measured: {_cell(d.not_measured)} | |"
              for d in cost.drivers]
    return lines


def _calibration(results: RunResults) -> list[str]:
    """pgbench's figures on the same server, then each strategy as a ratio of them."""
    cal = results.calibration
    if cal is None:
        return []
    paced, by_script = calibration_paced(cal), calibration_by_script(cal)
    on = f"your scripts: `{_cell(cal.workload)}`" if cal.workload else "statements"
    lines = ["", f"pgbench on the same server and {on} ({_cell(cal.pgbench)})"
             + (f"; {PACED_NOTE}" if paced else "") + ":", "",
             "| Script | Connections | Clients | tps | p50 [ms] | p99 [ms] | Connect [ms] |"
             + (" -R |" if paced else "") + (" tps per script |" if by_script else ""),
             "|:---|:---|---:|---:|---:|---:|---:|" + ("---:|" if paced else "")
             + (":---|" if by_script else "")]
    lines += [f"| {f.script} | {'new per transaction (-C)' if f.connect_each else 'persistent'}"
              f" | {f.clients} | {f.tps:,.0f} | {_ms(f.latency.p50_us)} | "
              f"{_ms(f.latency.p99_us)} | {f.connection_ms:.2f} |"
              + (f" {rate_cell(f)} |" if paced else "")
              + (f" {figure_scripts_cell(f)} |" if by_script else "") for f in cal.figures]
    if cal.ratios:
        lines += ["", "poolbench / pgbench (throughput > 1: faster; latency > 1: slower)"
                  + (", paced" if paced else "") + ":", "",
                  "| Strategy | Script | vs pgbench | Throughput | p50 | p99 | Connect |"
                  + (" Throughput per script |" if by_script else ""),
                  "|:---|:---|:---|---:|---:|---:|---:|" + (":---|" if by_script else "")]
        lines += [f"| `{r.strategy}` | {r.script} | {r.against} | {r.throughput:.2f}x | "
                  f"{r.p50:.2f}x | {r.p99:.2f}x | "
                  + (f"{r.connect:.2f}x" if r.connect is not None else "") + " |"
                  + (f" {ratio_scripts_cell(r)} |" if by_script else "") for r in cal.ratios]
    return lines


def _statements(results: RunResults) -> list[str]:
    """Each script's commands as pgbench -r shows them (none without scripts)."""
    rows = [(s, p) for s in results.strategies for p in s.phases if p.statements]
    if not rows:
        return []
    lines = ["", "Statement latencies (as pgbench -r), counted trials; a `\\set` is evaluated "
             "before the connection is taken, not timed:", "",
             "| Strategy | Script | Line | Mean [ms] | Count | Failures | Command |",
             "|:---|:---|---:|---:|---:|---:|:---|"]
    lines += [f"| `{s.name}` | {_cell(p.phase.removeprefix('script:'))} | {f.line} | "
              + (f"{f.mean_ms:.3f}" if f.mean_ms is not None else "—")
              + f" | {f.count} | {f.failures} | `{_cell(f.command)}` |"
              for s, p in rows for f in p.statements]
    calls = [(s.name, c) for s in results.strategies if s.server is not None
             for c in s.server.checks if c.name.startswith(STATEMENT_CALLS)]
    if calls:
        lines += ["", "| Strategy | Statement | poolbench | pg_stat_statements calls | "
                  "Checked |", "|:---|:---|---:|---:|:---|"]
        lines += [f"| `{name}` | {_cell(c.name.removeprefix(STATEMENT_CALLS))} | {c.ours} | "
                  f"{c.server} | {('yes' if c.ok else '**NO**') if c.exact else 'shown only'} |"
                  for name, c in calls]
    return lines


def markdown(results: RunResults) -> str:
    cfg = results.config
    lines = [f"## poolbench: {cfg['rows']} rows, {cfg['workers']} workers, pool "
             f"{cfg['pool_min']}..{cfg['pool_max']}, median of {cfg['trials']} trials"
             + (" (partial)" if results.partial else ""), ""]
    for sentence in run_sentences(results):
        lines += [{"line": "{}", "detail": "({})", "warning": "**Warning:** {}",
                   "note": "_{}_"}[sentence.kind].format(sentence.text), ""]
    lines += [HEADER, "|" + "|".join(":---" if i < 2 else "---:" for i in range(11)) + "|"]
    for s in results.strategies:
        for p in s.phases:
            lines.append(
                f"| `{s.name}` | {p.phase} | {p.median_s:.3f} | {p.min_s:.3f} | {p.max_s:.3f} | "
                f"{p.throughput_ops_s:,.0f} | {_ms(p.latency.p50_us)} | {_ms(p.latency.p99_us)} "
                f"| {_ms(p.acquire.p50_us)} | {_ms(p.execute.p50_us)} | {p.error_count} |")
    lines += _statements(results)
    lines += _calibration(results)
    for cost in results.connect_cost:
        lines += _connect_cost(cost)
    lines += [f"\n**{m}: not measured:** {_cell(why)}" for m, why in results.not_measured.items()]
    env = results.environment
    server = env.get("server", {})
    lines += ["", f"PostgreSQL {server.get('server_version', '?')}, poolbench "
              f"{env.get('poolbench', '?')}, Python {env.get('python', '?')}, "
              f"{env.get('cpu_count', '?')} CPUs; run `{results.run_tag}`, "
              f"{results.started_at}.", ""]
    return "\n".join(lines)


class MarkdownExporter:
    filename = "results.md"

    def write(self, results: RunResults, path: Path) -> None:
        atomic_write(path, markdown(results).encode())
