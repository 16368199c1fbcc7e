"""The terminal view: the seed's headline line, a table per strategy and phase, checks."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from poolbench.report.seed_line import run_sentences
from poolbench.results import (
    STATEMENT_CALLS,
    Calibration,
    Check,
    ConnectCost,
    Finding,
    PgbenchFigure,
    Ratio,
    RunResults,
)

STYLES = {"line": "", "detail": "dim", "warning": "yellow", "note": "dim"}


def render_seed_lines(results: RunResults, console: Console) -> None:
    """The seed's line per driver, with its warnings and notes."""
    for sentence in run_sentences(results):
        text = sentence.text if sentence.kind == "line" else (
            f"  ({sentence.text})" if sentence.kind == "detail" else
            f"  {sentence.text}" if sentence.kind == "warning" else f"({sentence.text})")
        console.print(text, style=STYLES[sentence.kind], highlight=False, markup=False)


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def render(results: RunResults, console: Console) -> None:
    render_seed_lines(results, console)
    table = Table(title=f"poolbench results — median of {results.config['trials']} trials, "
                        f"{results.config['rows']} rows, {results.config['workers']} workers")
    for col in ("strategy", "phase", "median s", "min..max s", "ops/s", "spread", "p50 ms",
                "p99 ms", "conn/wait p50 ms", "errors"):
        table.add_column(col, justify="left" if col in ("strategy", "phase") else "right")
    for s in results.strategies:
        for i, p in enumerate(s.phases):
            table.add_row(s.name if i == 0 else "", p.phase, f"{p.median_s:.3f}",
                          f"{p.min_s:.3f}..{p.max_s:.3f}", f"{p.throughput_ops_s:,.0f}",
                          f"{p.throughput_spread_pct:.0f}%" if len(p.trials) > 1 else "",
                          _ms(p.latency.p50_us), _ms(p.latency.p99_us), _ms(p.acquire.p50_us),
                          str(p.error_count) if p.error_count else "",
                          end_section=i == len(s.phases) - 1)
    console.print(table)
    _render_steady(results, console)
    _render_statements(results, console)
    _render_paced(results, console)
    _render_server(results, console)
    _render_activity(results, console)
    _render_pooler(results, console)
    _render_calibration(results, console)
    _render_rtt(results, console)
    for cost in results.connect_cost:
        render_connect_cost(cost, console)
    render_distances(results, console)
    cluster = results.environment.get("cluster")
    if isinstance(cluster, dict):
        nodes = "; ".join(f"{n['address']} ({n['host']}, {n['cpu_count']} CPUs, {n['workers']} "
                          f"workers, pool {n['pool_min']}..{n['pool_max']})"
                          for n in cluster["nodes"])
        console.print(f"Ran on {len(cluster['nodes'])} nodes of {cluster['address']}: {nodes}",
                      highlight=False)
    if results.harness_us_per_op:
        kinds = ", ".join(f"{kind} {us:.2f} µs" for kind, us in results.harness_us_per_op.items())
        console.print(f"poolbench's own work per operation (timing, recording, scheduling, "
                      f"progress), measured this run on the run's executors with "
                      f"{results.config['workers']} workers: {kinds}", style="dim",
                      highlight=False)
    for s in results.strategies:
        if s.error_count:
            detail = "; ".join(
                f"{p.phase}: " + ", ".join(f"{k}×{v}" for k, v in p.errors.items())
                + f" (each took p50 {_ms(p.failed.p50_us)} ms, max {_ms(p.failed.max_us)} ms)"
                for p in s.phases if p.errors)
            console.print(f"[yellow]{s.name}: {s.error_count} failed operations ({detail})[/]",
                          highlight=False)
        if s.held_too_long:
            console.print(f"[yellow]{s.name}: {s.held_too_long} connections were held longer "
                          f"than --acquire-timeout ({results.config['acquire_timeout_s']} s) "
                          "before being returned (possible leak)[/]", highlight=False)
        if s.leftover_rows_deleted and results.config.get("mix"):
            # A mix ends with rows alive (its prefill and creates not deleted): expected.
            console.print(f"{s.name}: the end-of-strategy sweep deleted the "
                          f"{s.leftover_rows_deleted} rows the mix left alive", highlight=False)
        elif s.leftover_rows_deleted and results.partial and s is results.strategies[-1]:
            # The run was cut: its rows were left by the interruption, not by failed deletes.
            console.print(f"{s.name}: the end-of-strategy sweep deleted the "
                          f"{s.leftover_rows_deleted} rows the interrupted run left",
                          highlight=False)
        elif s.leftover_rows_deleted:
            console.print(f"[yellow]{s.name}: {s.leftover_rows_deleted} of its rows were left "
                          "by failed deletes and removed by the end-of-strategy sweep[/]")
    render_findings(results.findings, console)
    for measurement, why in results.not_measured.items():
        console.print(f"{measurement}: not measured: {why}", style="yellow", markup=False,
                      highlight=False)
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


def _render_steady(results: RunResults, console: Console) -> None:
    """Once per run: how many counted trials settled (MSER-5, trials' steady verdicts), or
    that they were too short to judge. A trial that never settled is also a finding."""
    verdicts = [t.steady for s in results.strategies for p in s.phases
                if not p.phase.startswith(("mix:", "script:"))
                for t in p.trials if t.steady is not None]
    short = [v.observations for v in verdicts if v.settled is None]
    judged = [v for v in verdicts if v.settled is not None]
    if short:
        console.print(f"steady state: not judged: {max(short)} intervals < 100 (MSER-5 judges "
                      "a trial's operations per 0.1 s and needs 100: --duration 10 or more)",
                      style="dim", markup=False, highlight=False)
    if judged:
        settled = [v for v in judged if v.settled]
        unsettled = len(judged) - len(settled)
        console.print(f"steady state (MSER-5, White 1997): {len(settled)} of {len(judged)} "
                      "trial phases settled"
                      + (f", warm-up up to {max(v.cut_s for v in settled):g} s (reported, "
                         "not cut)" if settled else "")
                      + (f"; {unsettled} never settled (see the findings)" if unsettled else ""),
                      style="yellow" if unsettled else "dim", markup=False, highlight=False)


def _render_rtt(results: RunResults, console: Console) -> None:
    """With --rtt: the round trip asked, and the one the relay gave, measured."""
    r = results.rtt
    if r is None:
        return
    line = (f"rtt: asked {r.asked_ms:g} ms, measured {r.measured_ms:.3f} ms through the relay "
            f"(loopback base {r.base_ms:.3f} ms; SELECT 1 on {r.concurrency} connections at "
            f"once, {r.round_trips} round trips)")
    if r.ok:
        console.print(f"{line}: within {r.tolerance_ms:.3f} ms of asked + base", highlight=False)
    else:
        console.print(f"{line}: {abs(r.error_ms):.3f} ms {'over' if r.error_ms > 0 else 'under'} "
                      f"asked + base, beyond the {r.tolerance_ms:.3f} ms tolerance (5%, at least "
                      f"50 µs): these figures are at {r.measured_ms - r.base_ms:.3f} ms of "
                      f"round trip, not {r.asked_ms:g}", style="yellow", highlight=False,
                      markup=False)


def _render_paced(results: RunResults, console: Console) -> None:
    """With --rate: latency from the scheduled start beside latency from the actual start."""
    rows = [(s, p) for s in results.strategies for p in s.phases if p.scheduled is not None]
    if not rows:
        return
    table = Table(title=f"open loop at {results.config['rate']:,.0f} ops/s — latency from the "
                        "scheduled start (includes waiting for a worker) vs the actual start")
    for col in ("strategy", "phase", "ops/s", "scheduled p50 ms", "scheduled p99 ms",
                "actual p50 ms", "actual p99 ms"):
        table.add_column(col, justify="left" if col in ("strategy", "phase") else "right")
    for s, p in rows:
        assert p.scheduled is not None
        table.add_row(s.name, p.phase, f"{p.throughput_ops_s:,.0f}", _ms(p.scheduled.p50_us),
                      _ms(p.scheduled.p99_us), _ms(p.latency.p50_us), _ms(p.latency.p99_us))
    console.print(table)


def _check_cell(c: Check) -> str:
    return (f"{c.ours:,}" if c.ok else f"[red]{c.ours:,} / {c.server:,}[/]" if c.exact
            else f"[yellow]{c.ours:,} / {c.server:,} (not checked)[/]")


def _render_statements(results: RunResults, console: Console) -> None:
    """Each script's commands as pgbench -r shows them: mean latency, count, failures."""
    rows = [(s, p) for s in results.strategies for p in s.phases if p.statements]
    if not rows:
        return
    table = Table(title="Statement latencies (as pgbench -r), counted trials; a \\set is "
                        "evaluated before the connection is taken, not timed")
    for col in ("strategy", "script", "line", "mean ms", "count", "failures", "command"):
        table.add_column(col, justify="left" if col in ("strategy", "script", "command")
                         else "right")
    for s, p in rows:
        for j, f in enumerate(p.statements):
            table.add_row(s.name if j == 0 else "", p.phase.removeprefix("script:") if j == 0
                          else "", str(f.line),
                          f"{f.mean_ms:.3f}" if f.mean_ms is not None else "—",
                          f"{f.count:,}", f"{f.failures:,}" if f.failures else "",
                          # Text: SQL's [brackets] are not markup
                          Text(f.command if len(f.command) <= 60 else f.command[:59] + "…"),
                          end_section=j == len(p.statements) - 1)
    console.print(table)


def _render_server(results: RunResults, console: Console) -> None:
    """What the server itself counted per strategy, beside poolbench's own counts."""
    checked = [s for s in results.strategies if s.server is not None]
    if not checked:
        return
    table = Table(title="Server cross-check (pg_stat_database / pg_stat_user_tables; "
                        "poolbench / server, warm-up included)")
    names = [c.name for c in checked[0].server.checks  # type: ignore[union-attr]
             if not c.name.startswith(STATEMENT_CALLS)]
    for col in ("strategy", *names, "server xacts/op", "agrees"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    calls = []
    for s in checked:
        x = s.server
        assert x is not None
        cells = [_check_cell(c) for c in x.checks if not c.name.startswith(STATEMENT_CALLS)]
        calls += [(s.name, c) for c in x.checks if c.name.startswith(STATEMENT_CALLS)]
        table.add_row(s.name, *cells, f"{x.transactions_per_operation:.2f}",
                      "yes" if x.ok else "[red]NO[/]")
    console.print(table)
    if calls:
        table = Table(title="Script statements: successful executions (poolbench) against "
                            "pg_stat_statements calls, warm-up included")
        for col in ("strategy", "statement", "poolbench / server"):
            table.add_column(col, justify="right" if col.startswith("poolbench") else "left")
        for name, c in calls:
            table.add_row(name, c.name.removeprefix(STATEMENT_CALLS), _check_cell(c))
        console.print(table)
    notes = sorted({n for s in checked for n in s.server.notes})  # type: ignore[union-attr]
    for note in notes:
        console.print(f"  note: {note}", style="dim", highlight=False)


def _render_activity(results: RunResults, console: Console) -> None:
    """What the server and the machine did while each strategy ran (the sampler)."""
    sampled = [s for s in results.strategies if s.activity is not None]
    if not sampled:
        return
    table = Table(title="Server activity and resources while each strategy ran "
                        "(pg_stat_activity and psutil, sampled)")
    for col in ("strategy", "active backends median / max", "idle in txn", "waiting on",
                "client CPU ms / 1000 ops", "server CPU ms / 1000 ops", "RSS client / server MB"):
        table.add_column(col, justify="left" if col in ("strategy", "waiting on") else "right")
    cut = results.strategies[-1] if results.partial else None
    for s in sampled:
        a = s.activity
        assert a is not None
        ops = sum(t.ops + sum(t.errors.values()) for p in s.phases for t in p.trials)
        # The strategy an interrupt cut short spent CPU on a phase that was not kept: its
        # CPU per operation would be inflated, so it is not shown.
        per_op = ops > 0 and s is not cut
        waits = ", ".join(f"{k} {v:.0%}" for k, v in list(a.wait_shares.items())[:3])
        table.add_row(s.name, f"{a.active_median:g} / {a.active_max}",
                      f"{a.idle_in_transaction_share:.0%}", waits,
                      f"{a.client_cpu_s * 1e6 / ops:.1f}" if per_op else "—",
                      (f"{a.server_cpu_s * 1e6 / ops:.1f}" if per_op else "—")
                      if a.server_cpu_s is not None else "?",
                      f"{a.client_rss_max_mb:.0f} / "
                      + (f"{a.server_rss_max_mb:.0f}" if a.server_rss_max_mb is not None
                         else "?"))
    console.print(table)
    if cut is not None and cut.activity is not None:
        console.print(f"  note: {cut.name} was interrupted mid-phase: its CPU per operation "
                      "is not shown (the cut phase's operations are not counted)",
                      style="dim", highlight=False)


def _render_pooler(results: RunResults, console: Console) -> None:
    """What the pooler itself counted (PgBouncer's SHOW STATS / SHOW POOLS) per strategy."""
    checked = [s for s in results.strategies if s.pooler is not None]
    if not checked:
        return
    versions = ", ".join(sorted({s.pooler.version for s in checked}))  # type: ignore[union-attr]
    table = Table(title=f"Pooler cross-check ({versions}: SHOW STATS / SHOW POOLS; "
                        "poolbench / pooler, warm-up included)")
    for col in ("strategy", "prepared", "transactions", "queries", "server conns max/pool",
                "clients waiting max", "maxwait ms", "agrees"):
        table.add_column(col, justify="left" if col in ("strategy", "pooler") else "right")
    for s in checked:
        x = s.pooler
        assert x is not None
        cells = []
        for c in x.checks:
            if c.at_most:
                continue
            cells.append(f"{c.ours:,}" if c.ok else f"[red]{c.ours:,} / {c.server:,}[/]"
                         if c.exact else f"[yellow]{c.ours:,} / {c.server:,} (not checked)[/]")
        bound = next((c for c in x.checks if c.at_most), None)
        table.add_row(s.name, "on" if x.prepared_statements else "off",
                      *cells, f"{x.server_connections_max} / {x.pool_size}"
                      if bound is None or bound.ok else
                      f"[red]{x.server_connections_max} / {x.pool_size}[/]",
                      str(x.clients_waiting_max), f"{x.maxwait_us_max / 1000:.1f}",
                      "yes" if x.ok else "[red]NO[/]")
    console.print(table)
    for note in sorted({n for s in checked for n in s.pooler.notes}):  # type: ignore[union-attr]
        console.print(f"  note: {note}", style="dim", highlight=False)
    if any(not s.pooler.prepared_statements for s in checked):  # type: ignore[union-attr]
        console.print("  note: prepared statements off: this PgBouncer cannot keep them in "
                      "transaction mode (before 1.21), so each driver's documented setting "
                      "turned them off (--keep-prepared keeps them, and counts the errors)",
                      style="dim", highlight=False)
    failing = {s.name for s in checked if s.prepared_statements and s.route.endswith(
        "transaction") and any("Prepared" in k or "prepared" in k or "26000" in k
                               or "42P05" in k for p in s.phases for k in p.errors)}
    for name in sorted(failing):
        console.print(f"[yellow]{name}: prepared statements failed behind a transaction pooler "
                      "(a statement prepared on one server connection was used on another). "
                      "Fix: turn the driver's prepared statements off (asyncpg "
                      "statement_cache_size=0, psycopg prepare_threshold=None), which poolbench "
                      "does unless --keep-prepared, or use PgBouncer >= 1.21 with "
                      "max_prepared_statements[/]", highlight=False)


def calibration_paced(cal: Calibration) -> bool:
    """Whether pgbench ran paced (``--rate``, given to it as ``-R``)."""
    return any(f.rate is not None for f in cal.figures)


PACED_NOTE = ("paced: --rate given to pgbench as -R (per second over all clients); "
              "latencies from each operation's scheduled start, as pgbench's")


def rate_cell(figure: PgbenchFigure) -> str:
    """The -R pgbench was given (blank: unpaced)."""
    if figure.rate is None:
        return ""
    return f"{figure.rate:,.0f}" if figure.rate.is_integer() else f"{figure.rate:,.3f}"


def calibration_by_script(cal: Calibration) -> bool:
    """Whether pgbench ran several scripts, each with figures of its own."""
    return any(len(f.scripts) > 1 for f in cal.figures)


def figure_scripts_cell(figure: PgbenchFigure) -> str:
    """pgbench's tps of each script, in order (``read.sql 812``)."""
    return ", ".join(f"{s.phase.removeprefix('script:')} {s.tps:,.0f}" for s in figure.scripts)


def ratio_scripts_cell(ratio: Ratio) -> str:
    """Each script's throughput ratio, in order (``read.sql 0.93x``)."""
    return ", ".join(f"{s.phase.removeprefix('script:')} {s.throughput:.2f}x"
                     for s in ratio.scripts)


def _render_calibration(results: RunResults, console: Console) -> None:
    """pgbench's figures on the same server, then each strategy as a ratio of them."""
    cal = results.calibration
    if cal is None:
        return
    paced, by_script = calibration_paced(cal), calibration_by_script(cal)
    on = f"your scripts: {cal.workload}" if cal.workload else "statements"
    table = Table(title=f"pgbench on the same server and {on} — {cal.pgbench}"
                        + (f" ({PACED_NOTE})" if paced else ""))
    for col in ("script", "connections", "clients", "tps", "p50 ms", "p99 ms", "connect ms",
                *(["-R"] if paced else []), *(["tps per script"] if by_script else [])):
        table.add_column(col, justify="left" if col in ("script", "connections",
                                                        "tps per script") else "right")
    for f in cal.figures:
        table.add_row(f.script, "new per transaction (-C)" if f.connect_each else "persistent",
                      str(f.clients), f"{f.tps:,.0f}", _ms(f.latency.p50_us),
                      _ms(f.latency.p99_us), f"{f.connection_ms:.2f}",
                      *([rate_cell(f)] if paced else []),
                      *([figure_scripts_cell(f)] if by_script else []))
    console.print(table)
    if not cal.ratios:
        return
    mine = " on your scripts" if cal.workload else ""
    ratio_table = Table(title=f"poolbench / pgbench{mine} (throughput > 1: faster; latency > 1: "
                              "slower)" + (" — paced" if paced else ""))
    for col in ("strategy", "script", "vs pgbench", "throughput", "p50", "p99", "connect",
                *(["throughput per script"] if by_script else [])):
        ratio_table.add_column(col, justify="left" if col in (
            "strategy", "script", "vs pgbench", "throughput per script") else "right")
    for r in cal.ratios:
        ratio_table.add_row(r.strategy, r.script, r.against, f"{r.throughput:.2f}x",
                            f"{r.p50:.2f}x", f"{r.p99:.2f}x",
                            f"{r.connect:.2f}x" if r.connect is not None else "",
                            *([ratio_scripts_cell(r)] if by_script else []))
    console.print(ratio_table)


SLICE_NAMES = {"tcp": "TCP connect", "tls": "TLS (SSLRequest + handshake)",
               "auth_exchange": "startup + authentication exchange (incl. the server's fork)",
               "scram_key_derivation": "SCRAM key derivation (client CPU)",
               "backend_start": "backend start (AuthenticationOk -> ReadyForQuery)",
               "first_query": "first query (SELECT 1)"}
UNACCOUNTED_NAME = "in no slice (Terminate, close, the probe's own work)"


def connect_cost_title(cost: ConnectCost) -> str:
    """The probe's heading: how many connections, over TLS or not, on which route."""
    tls = (f" over {cost.tls_version} ({cost.tls_cipher})" if cost.tls_version
           else " over TLS" if cost.tls else "")
    return (f"What a new connection costs — protocol probe, {cost.samples} connections"
            f"{tls}, route {cost.route}")


def round_trips_cell(cost: ConnectCost, name: str) -> str:
    """A slice's round trips (docs/connect-cost.md), or blank where none were counted."""
    n = cost.round_trips.get(name)
    return "" if n is None else str(n)


def render_connect_cost(cost: ConnectCost, console: Console) -> None:
    """The probe's slices of one new connection, then each driver's connect()."""
    if cost.total is None:
        # markup off: a server's or a driver's message may hold [brackets]
        console.print(f"{connect_cost_title(cost)}: not measured: {cost.not_measured}",
                      highlight=False, markup=False)
    else:
        table = Table(title=connect_cost_title(cost))
        for col in ("slice", "p50 ms", "p99 ms", "mean ms", "round trips"):
            table.add_column(col, justify="left" if col == "slice" else "right")
        for name, s in cost.slices.items():
            table.add_row(SLICE_NAMES.get(name, name), _ms(s.p50_us), _ms(s.p99_us),
                          _ms(s.mean_us), round_trips_cell(cost, name))
        if cost.unaccounted is not None:
            table.add_row(UNACCOUNTED_NAME, _ms(cost.unaccounted.p50_us),
                          _ms(cost.unaccounted.p99_us), _ms(cost.unaccounted.mean_us), "")
        table.add_row("[b]total (wall clock around each connection)[/]", _ms(cost.total.p50_us),
                      _ms(cost.total.p99_us), _ms(cost.total.mean_us),
                      str(sum(cost.round_trips.values())) if cost.round_trips else "",
                      end_section=True)
        table.add_row("slices added up", "", "", _ms(cost.parts_sum_us), "")
        console.print(table)
    measured = [d for d in cost.drivers if d.latency is not None]
    if measured:
        drivers = Table(title=f"Each driver's connect() + close(), per call (threads), "
                              f"route {cost.route}")
        for col in ("driver", "threads", "p50 ms", "p99 ms", "waiting for CPU/GIL p50 ms"):
            drivers.add_column(col, justify="left" if col == "driver" else "right")
        for d in measured:
            assert d.latency is not None
            alone = cost.driver(d.driver, 1)
            wait = (d.latency.p50_us - alone.latency.p50_us
                    if alone and alone.latency and d.concurrency > 1 else None)
            drivers.add_row(d.driver, str(d.concurrency), _ms(d.latency.p50_us),
                            _ms(d.latency.p99_us), _ms(wait) if wait is not None else "")
        console.print(drivers)
    unmeasured: dict[tuple[str, str | None], list[int]] = {}
    for d in cost.drivers:
        if d.latency is None:
            unmeasured.setdefault((d.driver, d.not_measured), []).append(d.concurrency)
    for (driver, why), threads in unmeasured.items():
        console.print(f"{driver}'s connect() at {', '.join(map(str, threads))} thread(s), route "
                      f"{cost.route}: not measured: {why}", highlight=False, markup=False)


def render_distances(results: RunResults, console: Console) -> None:
    """The run projected to other network distances: per strategy and RTT, a new
    connection, an operation, what the pool saves, the connections busy (docs/distance.md)."""
    if not results.distances:
        return
    at = results.distances[0].measured_at_ms
    table = Table(title=f"at other distances — this run's figures (measured at {at:g} ms added "
                        "RTT) + round trips × RTT; a model, see docs/distance.md")
    for col in ("strategy", "RTT ms", "connect ms (trips)", "operation ms (trips)",
                "statement ms", "pool saves ms", "connections busy"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    rows = results.distances
    for i, d in enumerate(rows):
        first = i == 0 or rows[i - 1].strategy != d.strategy
        second = not first and (i == 1 or rows[i - 2].strategy != d.strategy)
        last = i + 1 == len(rows) or rows[i + 1].strategy != d.strategy
        table.add_row(d.strategy if first else f"[dim]vs {d.pooled_by}[/]"
                      if second and d.pooled_by else "",
                      f"{d.rtt_ms:g}",
                      f"{d.connect_ms:.2f} ({d.connect_round_trips})"
                      if d.connect_ms is not None else "",
                      f"{d.operation_ms:.2f} ({d.operation_round_trips:g})",
                      f"{d.statement_ms:.2f}",
                      f"{d.saved_ms:.2f} ({d.gain_pct:.0f}%)"
                      if d.saved_ms is not None and d.gain_pct is not None else "",
                      f"{d.connections_busy:.1f}", end_section=last)
    console.print(table)


def render_findings(found: tuple[Finding, ...], console: Console) -> None:
    for f in found:
        console.print(f"[yellow]finding: {f.rule} ({f.strategy}): {f.evidence}.[/] Fix: {f.fix}.",
                      highlight=False)
