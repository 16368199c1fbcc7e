"""What a phase of scripts needs, as plain data: it crosses process boundaries."""

from __future__ import annotations

from dataclasses import dataclass

from poolbench.config import ScriptFile
from poolbench.db.workload import ScriptMode
from poolbench.workloads.script.interp import default_seed_of
from poolbench.workloads.script.parser import Script, parse_script


@dataclass(frozen=True)
class ScriptPlan:
    """What a phase of scripts needs, as plain data (it crosses process boundaries: the
    texts travel, each process parses them again): the scripts, how the strategy sends
    their statements, ``:scale``, the run's seed, and whether sessions are read-only."""

    files: tuple[ScriptFile, ...]
    mode: ScriptMode
    scale: int = 1
    seed: int = 0
    read_only: bool = False
    # typed_params modes: per statement ($n text), which parameters go as text
    text_params: tuple[tuple[str, tuple[bool, ...]], ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        """Each script's phase name (``script:NAME``), in the order given."""
        return tuple(f"script:{f.name}" for f in self.files)

    def parse(self) -> tuple[Script, ...]:
        return tuple(parse_script(f.text, name=f.path) for f in self.files)

    @property
    def default_seed(self) -> int:
        """``:default_seed`` (the seed of ``hash()``): one for the whole run."""
        return default_seed_of(self.seed)
