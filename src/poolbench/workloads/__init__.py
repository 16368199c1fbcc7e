"""Registry of workloads: what one operation does on a connection.

Adding a workload is one module (behind :class:`poolbench.workloads.base.Workload`) and one
line here; the config names which one a run takes. Modules are imported lazily: the
package's own modules (the phase a worker runs, the script language) import nothing of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poolbench.config import RunConfig
    from poolbench.workloads.base import Workload

REGISTRY: dict[str, str] = {
    "crud": "poolbench.workloads.crud:CrudWorkload",  # the seed's four phases (default)
    "mix": "poolbench.workloads.mix:MixWorkload",  # --mix: the four statements by weight
    "scripts": "poolbench.workloads.scripted:ScriptWorkload",  # -f/-b: pgbench scripts
}


def workload_name(config: RunConfig) -> str:
    """Which workload ``config`` asks for."""
    return "scripts" if config.scripts else "mix" if config.mix else "crud"


def load_workload(config: RunConfig) -> Workload:
    """The workload ``config`` asks for, made from it."""
    module_name, class_name = REGISTRY[workload_name(config)].split(":")
    return getattr(importlib.import_module(module_name), class_name)(config)
