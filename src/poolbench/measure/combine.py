"""Combining what one strategy measured in several separate windows (``--interleave``: one
trial at a time, the strategies' order rotating) into one record, as if measured at once.

Counts add up; maxima take the maximum; shares are weighted by their samples; a check
is exact only if every window's was. Pure functions of frozen records.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import replace

from poolbench.measure.runner import StrategyMeasurement
from poolbench.results import ActivitySummary, Check, CrossCheck, PoolerCheck


def measurements(parts: list[StrategyMeasurement]) -> StrategyMeasurement:
    stats: Counter[str] = Counter()
    for m in parts:
        stats.update(m.stats)
    return StrategyMeasurement(parts[0].strategy, max(m.open_s for m in parts),
                               tuple(p for m in parts for p in m.phases), dict(stats),
                               interrupted=any(m.interrupted for m in parts),
                               window_stats=tuple(m.stats for m in parts)
                               if len(parts) > 1 else ())


def _checks(parts: list[tuple[Check, ...]]) -> tuple[Check, ...]:
    merged: dict[str, Check] = {}
    for checks in parts:
        for c in checks:
            seen = merged.get(c.name)
            merged[c.name] = c if seen is None else replace(
                seen, ours=c.ours if c.at_most else seen.ours + c.ours,
                server=max(seen.server, c.server) if c.at_most else seen.server + c.server,
                exact=seen.exact and c.exact)
    return tuple(merged.values())


def cross_checks(parts: list[CrossCheck | None]) -> CrossCheck | None:
    if not parts or any(p is None for p in parts):
        return None
    found = [p for p in parts if p is not None]
    transactions = sum(p.transactions for p in found)
    operations = sum(p.operations for p in found)
    deltas: Counter[str] = Counter()
    calls: Counter[str] | None = Counter()
    for p in found:
        deltas.update(p.database_deltas)
        if p.statement_calls is None:
            calls = None
        elif calls is not None:
            calls.update(p.statement_calls)
    return CrossCheck(checks=_checks([p.checks for p in found]), transactions=transactions,
                      operations=operations,
                      transactions_per_operation=round(transactions / operations, 3)
                      if operations else 0.0, database_deltas=dict(deltas),
                      statement_calls=dict(calls) if calls is not None else None,
                      exact=all(p.exact for p in found),
                      notes=tuple(dict.fromkeys(n for p in found for n in p.notes)))


def pooler_checks(parts: list[PoolerCheck | None]) -> PoolerCheck | None:
    found = [p for p in parts if p is not None]
    if not found:
        return None
    first = found[0]
    return replace(first, checks=_checks([p.checks for p in found]),
                   transactions=sum(p.transactions for p in found),
                   queries=sum(p.queries for p in found),
                   server_connections_max=max(p.server_connections_max for p in found),
                   clients_waiting_max=max(p.clients_waiting_max for p in found),
                   maxwait_us_max=max(p.maxwait_us_max for p in found),
                   samples=sum(p.samples for p in found),
                   notes=tuple(dict.fromkeys(n for p in found for n in p.notes)))


def activities(parts: list[ActivitySummary | None]) -> ActivitySummary | None:
    found = [p for p in parts if p is not None]
    if not found:
        return None
    samples = sum(a.samples for a in found) or 1

    def weighted(share: dict[str, float] | float, a: ActivitySummary) -> float:
        return a.samples / samples * share  # type: ignore[operator]

    waits: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for a in found:
        for k, v in a.wait_shares.items():
            waits[k] += weighted(v, a)
        events.update(a.wait_events)
    offset, timeline = 0, []
    for a in found:  # windows one after another, seconds counted on
        timeline += [replace(s, second=s.second + offset) for s in a.timeline]
        offset += (a.timeline[-1].second + 1) if a.timeline else 0
    known = [a.server_cpu_s for a in found]
    rss = [a.server_rss_max_mb for a in found]
    return ActivitySummary(
        samples=samples, interval_s=found[0].interval_s,
        seconds=round(sum(a.seconds for a in found), 3),
        backends_max=max(a.backends_max for a in found),
        active_median=statistics.median(a.active_median for a in found),
        active_max=max(a.active_max for a in found),
        idle_in_transaction_share=round(sum(weighted(a.idle_in_transaction_share, a)
                                            for a in found), 4),
        wait_shares={k: round(v, 4) for k, v in waits.most_common()},
        wait_events=dict(events.most_common(10)),
        client_cpu_s=round(sum(a.client_cpu_s for a in found), 3),
        server_cpu_s=round(sum(known), 3) if None not in known else None,  # type: ignore
        client_rss_max_mb=max(a.client_rss_max_mb for a in found),
        server_rss_max_mb=max(rss) if None not in rss else None,  # type: ignore[type-var]
        timeline=tuple(timeline), sampler_cpu_s=round(sum(a.sampler_cpu_s for a in found), 4))
