"""The seed's "time for the work" line and what goes with it, as the sentences every view
(console, Markdown, HTML) prints: one line per driver, then the warnings and notes.
Read from :class:`~poolbench.results.Comparison`; nothing here computes a figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poolbench.results import Comparison, DriverComparison, RunResults


@dataclass(frozen=True)
class Sentence:
    """``line``: the seed's own format; ``detail``: which strategies it compares;
    ``warning``: the line does not compare the same work, or a pool was left out;
    ``note``: why a line is missing."""

    kind: Literal["line", "detail", "warning", "note"]
    text: str


def seed_line(d: DriverComparison) -> str:
    """The seed's summary line, verbatim format."""
    return (f"Without Pooling: {d.no_pool_s:.2f}s, With Pooling: {d.pooled_s:.2f}s, "
            f"Performance Gain: {d.gain_pct:.2f}%")


def sentences(c: Comparison) -> list[Sentence]:
    found = []
    if c.not_meaningful is not None:
        found.append(Sentence("note", f"no seed line: {c.not_meaningful}"))
    for d in c.drivers:
        found += [Sentence("line", seed_line(d)),
                  Sentence("detail", f"{d.driver}: no pool {d.no_pool}; pooled {d.pooled}; "
                                     "sums of per-phase medians")]
        if d.no_pool_errors:
            found.append(Sentence(
                "warning", f"{d.no_pool} had {d.no_pool_errors} failed operations: its time "
                "includes them though they did no work, so this line does not compare the "
                "same work"))
        found += [Sentence("warning", f"{name} is left out of the fastest pooled strategy: "
                                      f"{errors} failed operations")
                  for name, errors in d.excluded.items()]
    found += [Sentence("note", f"no seed line for {name}: {why}")
              for name, why in c.unpaired.items()]
    if c.best_overall is not None:
        found.append(Sentence("line", f"Best of all routes: {c.best_overall} "
                                      f"({c.best_overall_s:.2f}s, sum of per-phase medians)"))
    return found


def run_sentences(results: RunResults) -> list[Sentence]:
    """The comparison's sentences, or why there is none (``--duration``)."""
    if results.comparison is not None:
        return sentences(results.comparison)
    if results.config.get("duration_s") is not None:
        return [Sentence("note", "no seed line: with --duration every strategy runs for the "
                                 "same time; compare their throughput")]
    return []
