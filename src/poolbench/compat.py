"""The seed script's names, for users of ``db_manager.py`` / ``main.py``.

Behaves as the seed documents: ``DB_CONFIG`` is read from the environment and
``./.env`` (``DB_NAME``, ``USER_NAME``, ``PASSWORD``, ``HOST``, ``PORT``) when this
module is imported; ``PoolManager`` is ``SimpleConnectionPool(1, 50)`` shared
between threads, exactly as the seed does (psycopg2 documents that pool as not
thread-safe: prefer ``poolbench run --strategies psycopg2:threaded``). Unlike
the seed, rows carry a run tag, so ``run_crud_tests`` only ever deletes its own.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.pool

from poolbench.config import SEED_VARIABLES, read_env_file
from poolbench.db.workload import RunTable, ensure_table, new_run_tag
from poolbench.results import PHASES


def _db_config_from_environment() -> dict[str, str]:
    merged = {**read_env_file(Path(".env"), explicit=False), **os.environ}
    return {ours: merged[name] for name, ours in SEED_VARIABLES.items() if merged.get(name)}


DB_CONFIG: dict[str, str] = _db_config_from_environment()
TABLE = "users"


class BaseDBManager(ABC):
    """The seed's CRUD calls over an abstract way of getting a connection."""

    def __init__(self, db_config: dict[str, Any] | None = None) -> None:
        self.db_config = dict(DB_CONFIG if db_config is None else db_config)
        self._statements = RunTable(TABLE, "").statements()

    @abstractmethod
    def get_connection(self) -> Any: ...

    @abstractmethod
    def close_connection(self, conn: Any) -> None: ...

    def _run(self, phase: str, params: tuple[object, ...]) -> Any:
        conn = self.get_connection()
        try:
            with conn.cursor() as cur:
                cur.execute(self._statements[phase].sql, params)
                row = cur.fetchone() if self._statements[phase].returns_row else None
            conn.commit()
            return row
        finally:
            self.close_connection(conn)

    def create_user(self, username: str, email: str) -> int:
        return int(self._run("create", (username, email))[0])

    def read_user(self, user_id: int) -> tuple[Any, ...] | None:
        return self._run("read", (user_id,))

    def update_user(self, user_id: int, new_email: str) -> None:
        self._run("update", (new_email, user_id))

    def delete_user(self, user_id: int) -> None:
        self._run("delete", (user_id,))


class NoPoolManager(BaseDBManager):
    """Opens and closes a new connection per call."""

    def get_connection(self) -> Any:
        return psycopg2.connect(**self.db_config)

    def close_connection(self, conn: Any) -> None:
        conn.close()


class PoolManager(BaseDBManager):
    """``psycopg2.pool.SimpleConnectionPool(1, 50)``, shared across threads as in the seed."""

    def __init__(self, db_config: dict[str, Any] | None = None, minconn: int = 1,
                 maxconn: int = 50) -> None:
        super().__init__(db_config)
        self.pool = psycopg2.pool.SimpleConnectionPool(minconn, maxconn, **self.db_config)

    def get_connection(self) -> Any:
        return self.pool.getconn()

    def close_connection(self, conn: Any) -> None:
        self.pool.putconn(conn)

    def closeall(self) -> None:
        self.pool.closeall()


def setup_database(db_config: dict[str, Any] | None = None) -> None:
    """Create table ``users`` if missing; refuse (SchemaConflict) if it has another shape."""
    conn = psycopg2.connect(**(DB_CONFIG if db_config is None else db_config))
    try:
        conn.autocommit = True
        ensure_table(conn, TABLE)
    finally:
        conn.close()


def run_crud_tests(manager: BaseDBManager, num_data_points: int,
                   num_workers: int) -> dict[str, float]:
    """Create, read, update, delete ``num_data_points`` users; seconds per phase."""
    workload = RunTable(TABLE, new_run_tag())
    creates = workload.create_params(0, num_data_points)
    results: dict[str, float] = {}
    ids: list[int] = []
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for phase in PHASES:
            t0 = time.perf_counter()
            if phase == "create":
                ids = list(pool.map(lambda p: manager.create_user(*p), creates))
            elif phase == "read":
                list(pool.map(manager.read_user, ids))
            elif phase == "update":
                list(pool.map(lambda p: manager.update_user(p[1], p[0]),
                              workload.update_params(0, ids)))
            else:
                list(pool.map(manager.delete_user, ids))
            results[phase] = time.perf_counter() - t0
    return results


def generate_report(results_no_pool: dict[str, float], results_pool: dict[str, float],
                    num_data_points: int, out_dir: str | Path = "reports") -> Path:
    """Print the seed's totals and per-phase times; save the seed's comparison chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total_no, total_pool = sum(results_no_pool.values()), sum(results_pool.values())
    gain = (total_no - total_pool) / total_no * 100 if total_no else 0.0
    print(f"Without Pooling: {total_no:.2f}s, With Pooling: {total_pool:.2f}s, "
          f"Performance Gain: {gain:.2f}%")
    fig, ax = plt.subplots(figsize=(9, 5), constrained_layout=True)
    xs = range(len(PHASES))
    ax.bar([x - 0.2 for x in xs], [results_no_pool[p] for p in PHASES], 0.4,
           label="Without Pooling")
    ax.bar([x + 0.2 for x in xs], [results_pool[p] for p in PHASES], 0.4, label="With Pooling")
    ax.set_xticks(list(xs), PHASES)
    ax.set_xlabel("CRUD phase")
    ax.set_ylabel("seconds (lower is better)")
    ax.set_title(f"CRUD performance, {num_data_points} operations per phase")
    ax.legend()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "crud_performance_comparison.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    for phase in PHASES:
        print(f"{phase}: without pooling {results_no_pool[phase]:.3f}s "
              f"({num_data_points / results_no_pool[phase]:.0f} ops/s), with pooling "
              f"{results_pool[phase]:.3f}s ({num_data_points / results_pool[phase]:.0f} ops/s)")
    return path
