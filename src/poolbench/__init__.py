"""poolbench: what connection pooling does for your PostgreSQL workload, measured.

Library use mirrors the CLI::

    from poolbench import RunConfig, run
    results = run(RunConfig(rows=500, workers=16, strategies=("psycopg:none", "psycopg:pool")))
"""

from poolbench.api import run
from poolbench.config import RunConfig
from poolbench.db.target import ConnectionTarget

__all__ = ["ConnectionTarget", "RunConfig", "run"]
