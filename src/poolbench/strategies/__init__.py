"""Registry of connection strategies: CLI name -> ``module:Class``.

Adding a strategy is one module and one line here. Modules are imported lazily
so that a missing optional driver only matters to the strategies that use it.
"""

from __future__ import annotations

import importlib

from poolbench.errors import ConfigError, StrategyUnavailable
from poolbench.strategies.base import AsyncStrategy, Strategy, StrategySettings, SyncStrategy

REGISTRY: dict[str, str] = {
    "psycopg2:none": "poolbench.strategies.psycopg2_none:Psycopg2NoPool",
    "psycopg2:simple": "poolbench.strategies.psycopg2_pools:Psycopg2SimplePool",
    "psycopg2:threaded": "poolbench.strategies.psycopg2_pools:Psycopg2ThreadedPool",
    "psycopg:none": "poolbench.strategies.psycopg_none:PsycopgNoPool",
    "psycopg:pool": "poolbench.strategies.psycopg_pool_strategy:PsycopgPool",
    "asyncpg:none": "poolbench.strategies.asyncpg_none:AsyncpgNoPool",
    "asyncpg:pool": "poolbench.strategies.asyncpg_pool_strategy:AsyncpgPool",
    "psycopg-async:none": "poolbench.strategies.psycopg_async:PsycopgAsyncNoPool",
    "psycopg-async:pool": "poolbench.strategies.psycopg_async:PsycopgAsyncPool",
    "sqlalchemy:nullpool": "poolbench.strategies.sqlalchemy_engine:SqlalchemyNullPool",
    "sqlalchemy:queuepool": "poolbench.strategies.sqlalchemy_engine:SqlalchemyQueuePool",
    "sqlalchemy-asyncpg:nullpool":
        "poolbench.strategies.sqlalchemy_engine:SqlalchemyAsyncpgNullPool",
    "sqlalchemy-asyncpg:queuepool":
        "poolbench.strategies.sqlalchemy_engine:SqlalchemyAsyncpgQueuePool",
}


def parse_strategy_names(spec: str) -> tuple[str, ...]:
    """``"all"`` or a comma-separated list of registry names, checked."""
    if spec.strip() == "all":
        return tuple(REGISTRY)
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for name in names:
        if name not in REGISTRY:
            raise ConfigError(f"--strategies: unknown strategy {name!r}; choose from "
                              f"{', '.join(REGISTRY)} or 'all'")
    return names


def load_strategy(name: str) -> type[Strategy]:
    """Import a strategy class; a missing driver becomes StrategyUnavailable."""
    module_name, class_name = REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or name.split(":")[0]
        raise StrategyUnavailable(
            f"strategy {name} needs the Python package {missing!r}, which is not installed; "
            f"pip install {missing}, or leave {name} out of --strategies") from None
    return getattr(module, class_name)


__all__ = ["REGISTRY", "AsyncStrategy", "Strategy", "StrategySettings", "SyncStrategy",
           "load_strategy", "parse_strategy_names"]
