"""``--cluster``: one strategy's workers spread over the nodes of a Dask cluster.

Each node (a Dask worker process) holds a :class:`Node` actor that runs the same
executor as a local run (threads, or one event loop) with its share of the
workers and its own pool (``--workers``/N and ``--pool-max``/N, remainders to the
first nodes, exactly as ``--processes`` divides them), so each node behaves like
one application instance with its own pool. A phase starts behind a barrier:
every node builds its workers and reports them waiting, then the coordinator
tells all to go; each node times its phase on its own clock from its "go" to its
last worker's finish, and the phase's time is the longest of those (clocks of
different machines are never subtracted from each other). Recorders come back
and merge exactly as they do from threads and processes. The password reaches a
node only inside the task payload, and every repr of a target masks it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from poolbench.environment import package_versions
from poolbench.errors import ConfigError, ConnectError, PoolbenchError, WorkerProcessError
from poolbench.measure.executor import OnProgress, PhaseRun, StopFlag, in_process_executor
from poolbench.measure.metrics import now_ns
from poolbench.measure.processes import portable_error, process_settings, share
from poolbench.strategies import load_strategy
from poolbench.strategies.base import Strategy, StrategySettings
from poolbench.workloads.phase import PhaseSpec

POLL_S = 0.05  # how often the coordinator asks nodes whether their phase has finished
CONNECT_TIMEOUT_S = 10.0  # how long to wait for a scheduler to answer (--cluster-timeout)
VERSIONED = ("poolbench", "psycopg", "psycopg-pool", "psycopg2-binary", "asyncpg",
             "sqlalchemy", "hdrhistogram")


class NodeLost(PoolbenchError):
    """A node (Dask worker) of the cluster was lost mid-run; the others were stopped."""

    exit_code = 7


def node_facts() -> dict[str, Any]:
    """Where a node runs: host, Python, package versions, CPU count (a plain Dask task)."""
    return {"host": socket.gethostname(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "versions": package_versions(VERSIONED)}


@dataclass(frozen=True)
class ClusterNodes:
    """The nodes a run uses: their Dask addresses and facts, and the client to reach them."""

    address: str
    client: Any
    nodes: tuple[str, ...]
    facts: tuple[dict[str, Any], ...]

    def describe(self, workers: int, pool_min: int, pool_max: int) -> dict[str, Any]:
        """The JSON record: per node its facts and its share of workers and pool."""
        count = len(self.nodes)
        return {"address": self.address, "nodes": [
            {"address": addr, **facts,
             "workers": share(workers, i, count), "pool_min": share(pool_min, i, count),
             "pool_max": share(pool_max, i, count)}
            for i, (addr, facts) in enumerate(zip(self.nodes, self.facts))]}


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while a LocalCluster starts its node processes, which keep it (an
    ignored signal survives exec, and Python and asyncio then install no handler of their
    own). Ctrl-C in a terminal signals the whole process group; the nodes must not die of
    it: poolbench stops them itself, and a node dying would read as a lost node (exit 7)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def connect_cluster(address: str, nodes: int | None, stack: ExitStack, *,
                    timeout_s: float = CONNECT_TIMEOUT_S) -> ClusterNodes:
    """A Dask client for ``address`` (``local:N`` starts a LocalCluster of N worker
    processes), waiting ``timeout_s`` for a scheduler to answer; the first ``nodes``
    workers; each one's facts, checked against ours."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--cluster needs Dask: pip install 'poolbench[dask]'") from None
    if address.startswith("local:"):
        try:
            count = int(address.split(":", 1)[1])
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(f"--cluster {address!r}: give local:N with N >= 1 worker processes")
        with _sigint_ignored():  # the node processes inherit it: see _sigint_ignored
            cluster = stack.enter_context(LocalCluster(n_workers=count, threads_per_worker=2,
                                                       processes=True, dashboard_address=None))
        client = stack.enter_context(Client(cluster))
    else:
        try:
            client = stack.enter_context(Client(address, timeout=timeout_s))
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"--cluster {address}: cannot reach the Dask scheduler "
                               f"({type(exc).__name__}); is `dask scheduler` running there?"
                               ) from None
    available = sorted(client.scheduler_info()["workers"])
    if not available:
        raise ConnectError(f"--cluster {address}: the scheduler has no workers; start "
                           "`dask worker` on the client machines")
    if nodes is not None and nodes > len(available):
        raise ConfigError(f"--nodes {nodes}: the cluster has {len(available)} workers")
    chosen = tuple(available[:nodes] if nodes else available)
    facts = tuple(client.submit(node_facts, workers=[addr], pure=False,
                                allow_other_workers=False).result() for addr in chosen)
    ours = node_facts()
    for addr, theirs in zip(chosen, facts):
        mismatched = {k: (ours["versions"].get(k), theirs["versions"].get(k))
                      for k in set(ours["versions"]) | set(theirs["versions"])
                      if ours["versions"].get(k) != theirs["versions"].get(k)}
        if ours["python"].rsplit(".", 1)[0] != theirs["python"].rsplit(".", 1)[0]:
            mismatched["python"] = (ours["python"], theirs["python"])
        if mismatched:
            detail = ", ".join(f"{k} {a} here, {b} there" for k, (a, b) in sorted(
                mismatched.items()))
            raise ConfigError(f"node {addr} ({theirs['host']}) runs other versions than this "
                              f"machine: {detail}; install the same versions on every node")
    return ClusterNodes(address=address, client=client, nodes=chosen, facts=facts)


class Node:
    """The actor on one Dask worker: one strategy's executor, driven phase by phase."""

    def __init__(self, name: str, settings: StrategySettings) -> None:
        self.stop = threading.Event()
        self.secrets = settings.target.secrets()
        self.executor = in_process_executor(load_strategy(name), settings, stop=self.stop)
        self._ready = threading.Event()
        self._go = threading.Event()
        self._thread: threading.Thread | None = None
        self._run: PhaseRun | None = None
        self._error: BaseException | None = None

    def open(self) -> float:
        return self.executor.open()

    def prepare(self, spec: PhaseSpec) -> bool:
        """Start the phase; return once every worker of this node waits at the barrier."""
        self._ready.clear()
        self._go.clear()
        self._run, self._error = None, None

        def gate() -> int:
            self._ready.set()
            self._go.wait()
            return now_ns()  # this node's clock: its phase time is measured on it alone

        def body() -> None:
            try:
                self._run = self.executor.run_phase(spec, _ignore, gate)
            except BaseException as exc:
                self._error = exc
                self._ready.set()

        self._thread = threading.Thread(target=body, name="poolbench-node-phase", daemon=True)
        self._thread.start()
        self._ready.wait()
        return self._error is None

    def go(self) -> None:
        self._go.set()

    def poll(self) -> tuple[str, Any] | None:
        """None while the phase runs; then ("ok", PhaseRun) or ("error", exception): one of
        poolbench's own (a script's error: its exit code holds on a cluster too), else a
        WorkerProcessError with the text, secrets masked."""
        if self._thread is not None and self._thread.is_alive():
            return None
        if self._error is not None:
            return "error", portable_error(self._error, self.secrets)
        return "ok", self._run

    def halt(self) -> None:
        self.stop.set()
        self._go.set()

    def close(self) -> dict[str, int]:
        self.stop.set()
        self.executor.close()
        return self.executor.stats()


def _ignore(advance: int) -> None:
    """Progress on a node is summed by the coordinator when the phase ends."""


class ClusterExecutor:
    """The executor protocol of :mod:`poolbench.measure.runner`, over a cluster's nodes."""

    def __init__(self, cls: type[Strategy], settings: StrategySettings, *,
                 cluster: ClusterNodes, stop: StopFlag) -> None:
        self.cluster = cluster
        self.outer_stop = stop
        self._stats: dict[str, int] = {}
        self.lost: set[str] = set()
        count = len(cluster.nodes)
        # Each actor's Dask future: Dask marks it erred as soon as the scheduler drops the
        # node's worker (its connection closed), which no call to the node waits for.
        self.placed = [self._call(addr, lambda addr=addr, i=i: cluster.client.submit(
            Node, cls.name, process_settings(settings, i, count), actor=True, workers=[addr],
            allow_other_workers=False, pure=False)) for i, addr in enumerate(cluster.nodes)]
        self.actors = [self._call(addr, future.result)
                       for addr, future in zip(cluster.nodes, self.placed)]
        self.closed = False

    def _call(self, addr: str, call: Any) -> Any:
        """``call()``, a remote call to a node; any failure of it means the node is lost."""
        try:
            return call()
        except PoolbenchError:
            raise
        except Exception as exc:
            raise self._lost(addr, f"{type(exc).__name__}: {str(exc)[:200].strip()}"
                             ) from None

    def _lost(self, addr: str, why: str) -> NodeLost:
        """Node ``addr`` is lost: the others are stopped; the error to raise."""
        self.lost.add(addr)
        self.halt()
        return NodeLost(f"node {addr} was lost ({why}); the other nodes were stopped")

    def _answer(self, addr: str, call: Any) -> Any:
        """The answer to ``call`` (an actor's future) from node ``addr``; NodeLost as soon as
        Dask reports the node's worker gone, rather than when the call gives up on the
        dead address (Dask retries a refused connection for up to its connect timeout)."""
        placed = self.placed[self.cluster.nodes.index(addr)]
        while not call.done():
            if placed.status != "finished":  # "error": the scheduler removed the worker
                raise self._lost(addr, f"Dask reports its worker gone: {placed.status}")
            with contextlib.suppress(TimeoutError):
                call.result(timeout=POLL_S)  # waits until answered, or for the next look
        return self._call(addr, call.result)

    def _all(self, method: str, *args: Any) -> list[Any]:
        futures = [(addr, self._call(addr, lambda a=actor: getattr(a, method)(*args)))
                   for addr, actor in zip(self.cluster.nodes, self.actors)]
        return [self._answer(addr, future) for addr, future in futures]

    def halt(self) -> None:
        """Ask every node still there to stop its workers."""
        for addr, actor in zip(self.cluster.nodes, getattr(self, "actors", [])):
            if addr in self.lost:
                continue
            try:
                actor.halt().result(timeout=5)
            except Exception:
                self.lost.add(addr)  # gone too: nothing left to stop there

    def open(self) -> float:
        return max(self._all("open"))

    def run_phase(self, spec: PhaseSpec, on_progress: OnProgress) -> PhaseRun:
        count = len(self.actors)
        futures = [(addr, self._call(addr, lambda a=actor, i=i: a.prepare(spec.share(i, count))))
                   for i, (addr, actor) in enumerate(zip(self.cluster.nodes, self.actors))]
        for addr, future in futures:
            self._answer(addr, future)  # every node's workers wait: the barrier
        self._all("go")
        runs: dict[int, PhaseRun] = {}
        while len(runs) < count:
            if self.outer_stop.is_set():
                self.halt()
            for i, (addr, actor) in enumerate(zip(self.cluster.nodes, self.actors)):
                if i in runs:
                    continue
                answer = self._answer(addr, self._call(addr, lambda a=actor: a.poll()))
                if answer is None:
                    continue
                kind, value = answer
                if kind == "error":
                    self.halt()
                    if isinstance(value, PoolbenchError) and \
                            not isinstance(value, WorkerProcessError):
                        raise value  # the workload's own error, as without a cluster
                    raise NodeLost(f"node {addr} failed: {value}")
                runs[i] = value
            if len(runs) < count:
                time.sleep(POLL_S)  # poll interval: Dask actors answer calls, they do not push
        recorders = [r for run in runs.values() for r in run.recorders]
        on_progress(sum(r.ok + sum(r.errors.values()) for r in recorders))
        # The phase lasts as long as its slowest node, each timed on its own clock.
        longest = max(run.end_ns - run.start_ns for run in runs.values())
        return PhaseRun(0, longest, recorders,
                        [i for k in sorted(runs) for i in runs[k].created])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.lost:  # the run failed already: close what is left, quietly
            for addr, actor in zip(self.cluster.nodes, self.actors):
                if addr not in self.lost:
                    try:
                        actor.close().result(timeout=30)
                    except Exception:
                        continue
            return
        stats = self._all("close")
        for part in stats:
            for key, value in part.items():
                self._stats[key] = self._stats.get(key, 0) + value

    def stats(self) -> dict[str, int]:
        return dict(self._stats)
