"""Exporters: one module per output format, each a class with ``filename`` and ``write``
(and ``applies(results)`` for a file written for some runs only: ``statements.csv``).

Exporters read :class:`~poolbench.results.RunResults` only. The
:class:`ExportManager` rewrites every file after each strategy, so a crash
or interrupt keeps the results gathered so far (marked ``partial``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NoReturn, Protocol

from poolbench.errors import ConfigError
from poolbench.events import RunEvents
from poolbench.results import RunResults


class Exporter(Protocol):
    filename: str

    def write(self, results: RunResults, path: Path) -> None: ...


def applies(exporter: Exporter, results: RunResults) -> bool:
    """Whether ``exporter`` writes a file for ``results``: always, unless it has an
    ``applies(results)`` of its own (``statements.csv``: only for a run of scripts)."""
    own = getattr(exporter, "applies", None)
    return own is None or bool(own(results))


def written_files(results: RunResults, *, chart: bool) -> list[str]:
    """The names of the files a run's final write leaves, in order."""
    return [e.filename for e in file_exporters(chart=chart) if applies(e, results)]


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and prove a file can be written there, before any run."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _cannot_write("--out", out_dir, exc)
    _probe_write("--out", out_dir)


def check_file_writable(option: str, path: Path) -> None:
    """Prove a file can be written at ``path`` (its folder exists and takes one; it is not
    itself a folder), before any work."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file's path")
    _probe_write(option, path.parent)


def _probe_write(option: str, folder: Path) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".poolbench-probe-"):
            pass
    except OSError as exc:
        _cannot_write(option, folder, exc)


def _cannot_write(option: str, folder: Path, exc: OSError) -> NoReturn:
    raise ConfigError(f"{option}: cannot write to {folder} ({exc.strerror or exc}); "
                      "choose a writable folder") from None


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_exporters(*, chart: bool) -> list[Exporter]:
    """JSON, CSV and Markdown always; the PNG chart and the HTML report with ``chart``."""
    from poolbench.report.csv_export import CsvExporter, StatementsCsvExporter
    from poolbench.report.json_export import JsonExporter
    from poolbench.report.markdown import MarkdownExporter

    exporters: list[Exporter] = [JsonExporter(), CsvExporter(), StatementsCsvExporter(),
                                 MarkdownExporter()]
    if chart:
        from poolbench.report.chart import ChartExporter
        from poolbench.report.html import HtmlExporter
        from poolbench.report.timeline import TimelineExporter

        exporters += [ChartExporter(), TimelineExporter(), HtmlExporter()]
    return exporters


class ExportManager:
    """Writes every file exporter's output into one folder whenever results change.

    The chart costs about a second to draw and the HTML page carries plotly.js (4.8 MB),
    so partial results (after each strategy but the last) get JSON, CSV and Markdown
    only; the chart and the page are written for the final results, complete or partial.
    """

    def __init__(self, out_dir: Path, *, chart: bool = True) -> None:
        self.out_dir = out_dir
        self.exporters = file_exporters(chart=False)
        self.final_exporters = file_exporters(chart=chart)

    def subscribe(self, events: RunEvents) -> None:
        events.strategy_finished.add_listener(self.write_partial)
        events.run_finished.add_listener(self.write_final)

    def write_partial(self, results: RunResults) -> None:
        self._write(self.exporters, results)

    def write_final(self, results: RunResults) -> None:
        self._write(self.final_exporters, results)

    def _write(self, exporters: list[Exporter], results: RunResults) -> None:
        for exporter in exporters:
            if applies(exporter, results):
                exporter.write(results, self.out_dir / exporter.filename)
