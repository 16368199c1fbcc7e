"""``results.json``: the versioned, complete record of a run (see results.schema.json)."""

from __future__ import annotations

import json
from pathlib import Path

from poolbench.report import atomic_write
from poolbench.results import RunResults


class JsonExporter:
    filename = "results.json"

    def write(self, results: RunResults, path: Path) -> None:
        atomic_write(path, json.dumps(results.to_dict(), indent=2).encode() + b"\n")
