"""Run events: the runner fires them, and does not know who listens.

Progress bars, exporters that rewrite partial results, and (later) samplers
subscribe with ``add_listener``; the runner only calls ``fire``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class EventHook:
    """A list of listeners called in order with keyword arguments."""

    def __init__(self) -> None:
        self._listeners: list[Callable[..., Any]] = []

    def add_listener(self, listener: Callable[..., Any]) -> Callable[..., Any]:
        self._listeners.append(listener)
        return listener

    def fire(self, **kwargs: Any) -> None:
        for listener in self._listeners:
            listener(**kwargs)


@dataclass
class RunEvents:
    """Hooks of one run. Keyword arguments each hook fires with are documented per field."""

    #: clone: db.clone.Clone — --clone made the run's copy of the database (before connected)
    clone_ready: EventHook = field(default_factory=EventHook)
    #: target: ConnectionTarget, server: dict (version and settings), after the first connect
    connected: EventHook = field(default_factory=EventHook)
    #: run_tag: str, table: str — the tag every row of this run carries
    run_started: EventHook = field(default_factory=EventHook)
    #: strategy: str, trials: int
    strategy_started: EventHook = field(default_factory=EventHook)
    #: strategy: str, trial: int, warmup: bool, phase: str, total: int
    phase_started: EventHook = field(default_factory=EventHook)
    #: advance: int (operations finished since the last event, ok or failed)
    progress: EventHook = field(default_factory=EventHook)
    #: measurement: PhaseMeasurement
    phase_finished: EventHook = field(default_factory=EventHook)
    #: results: RunResults (partial: every strategy finished so far)
    strategy_finished: EventHook = field(default_factory=EventHook)
    #: seconds: float — pgbench calibration (--baseline pgbench) starts, about this long
    calibration_started: EventHook = field(default_factory=EventHook)
    #: results: RunResults (final; ``partial`` is set if the run was cut short)
    run_finished: EventHook = field(default_factory=EventHook)
