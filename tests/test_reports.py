"""The real CLI writes PNG, JSON and CSV; JSON matches its schema and what the console printed."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import run_cli

from poolbench import RunConfig, run
from poolbench.config import ScriptFile
from poolbench.db.target import ConnectionTarget
from poolbench.measure.metrics import decode_histogram
from poolbench.report import written_files
from poolbench.report.chart import ChartExporter
from poolbench.report.html import HtmlExporter
from poolbench.results import LatencySummary

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, target: ConnectionTarget):
    cwd = tmp_path_factory.mktemp("run")
    result = run_cli("run", "--dsn", target.conninfo(), "-n", "40", "-w", "4", "--trials", "2",
                     "--table", "report_users", "--connect-samples", "1", cwd=cwd,
                     keep_password=True)  # the reports' masking of a password in --dsn
    assert result.returncode == 0, result.stderr
    return result, cwd / "reports"


def test_writes_chart_json_csv_markdown_and_html(cli_run) -> None:
    result, out = cli_run
    png = (out / "crud_performance_comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    names = ("results.json", "results.csv", "results.md", "report.html", "timeline.png")
    for name in names:
        assert (out / name).stat().st_size > 0, name
    # the closing line names every file written, and only those
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("Reports written to")]
    listed = set(line.split("(", 1)[1].rstrip(")").split(", "))
    assert listed == {*names, "crud_performance_comparison.png"} == {
        p.name for p in out.iterdir() if not p.name.startswith(".")}  # no statements.csv


def test_markdown_table_is_the_json(cli_run) -> None:
    _, out = cli_run
    data = json.loads((out / "results.json").read_text())
    lines = (out / "results.md").read_text().splitlines()
    (c,) = data["comparison"]["drivers"]  # the default run: psycopg2 without and with a pool
    assert any(line.startswith(f"Without Pooling: {c['no_pool_s']:.2f}s, With Pooling: "
                               f"{c['pooled_s']:.2f}s, Performance Gain: {c['gain_pct']:.2f}%")
               for line in lines)
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| `")]
    expected = [[f" `{s['name']}` ", f" {p['phase']} ", f" {p['median_s']:.3f} ",
                 f" {p['min_s']:.3f} ", f" {p['max_s']:.3f} ", f" {p['throughput_ops_s']:,.0f} ",
                 f" {p['latency']['p50_us'] / 1000:.2f} ", f" {p['latency']['p99_us'] / 1000:.2f} ",
                 f" {p['acquire']['p50_us'] / 1000:.2f} ", f" {p['execute']['p50_us'] / 1000:.2f} ",
                 f" {sum(p['errors'].values())} "]
                for s in data["strategies"] for p in s["phases"]]
    assert rows == expected


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium (Debian's, driven by playwright) for this module's pages."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: apt-get install chromium chromium-driver")
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def offline_page(browser: Any, html: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """``html`` opened with every request but the file's own blocked: the page, the
    console errors and the blocked requests (dialogs recorded as errors)."""
    errors: list[str] = []
    blocked: list[str] = []

    def only_the_file(route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: errors.append(f"dialog: {d.message}") or d.dismiss())
        page.route("**/*", only_the_file)
        page.goto(html.resolve().as_uri())
        yield page, errors, blocked
    finally:
        page.close()


def test_html_report_opens_offline_in_chromium(cli_run, chromium) -> None:
    """Headless Chromium, every request but the file's own blocked: no console error,
    every strategy named, every chart drawn; a CRUD run has no statements section."""
    _, out = cli_run
    data = json.loads((out / "results.json").read_text())
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with offline_page(chromium, out / "report.html") as (page, errors, blocked):
        for chart in ("throughput", "latency", "split", "percentiles", "timeline",
                      "waiting"):
            page.wait_for_selector(f"#{chart} .main-svg", timeout=15_000)
            assert page.locator(f"#{chart} .main-svg .trace").count() > 0, chart
        text = page.inner_text("body")
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert errors == [] and blocked == []
    for strategy in data["strategies"]:
        assert strategy["name"] in text
    assert "waiting for a connection" in text
    assert "Statements of" not in text and "Statement calls" not in text


def test_json_matches_schema(cli_run) -> None:
    _, out = cli_run
    schema = json.loads(resources.files("poolbench").joinpath("results.schema.json").read_text())
    data = json.loads((out / "results.json").read_text())
    jsonschema.validate(data, schema)
    assert data["partial"] is False and data["verification"]["ok"] is True
    assert data["config"]["target"].count("***") == 1


def test_console_numbers_are_the_json_numbers(cli_run) -> None:
    result, out = cli_run
    data = json.loads((out / "results.json").read_text())
    (c,) = data["comparison"]["drivers"]
    assert (f"Without Pooling: {c['no_pool_s']:.2f}s, With Pooling: {c['pooled_s']:.2f}s, "
            f"Performance Gain: {c['gain_pct']:.2f}%") in result.stdout
    for strategy in data["strategies"]:
        for phase in strategy["phases"]:
            row = (rf"{phase['phase']}\s+│\s+{phase['median_s']:.3f}\s+│.*"
                   rf"{phase['throughput_ops_s']:,.0f}\s+│\s+"
                   rf"{phase['throughput_spread_pct']:.0f}%\s+│\s+"
                   rf"{phase['latency']['p50_us'] / 1000:.2f}"
                   rf"\s+│\s+{phase['latency']['p99_us'] / 1000:.2f}")
            assert re.search(row, result.stdout), (strategy["name"], phase["phase"])


def test_printed_percentiles_recompute_from_raw_histograms(cli_run) -> None:
    _, out = cli_run
    data = json.loads((out / "results.json").read_text())
    for strategy in data["strategies"]:
        for phase in strategy["phases"]:
            hist = decode_histogram(phase["histogram_latency_us"])
            recomputed = LatencySummary.of(hist)
            assert recomputed.p99_us == phase["latency"]["p99_us"]
            assert recomputed.count == phase["ops"]


def test_csv_has_one_row_per_strategy_phase_and_trial(cli_run) -> None:
    _, out = cli_run
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * 4 * 3  # 2 strategies, 4 phases, 1 warm-up + 2 trials
    data = json.loads((out / "results.json").read_text())
    first = data["strategies"][0]["phases"][0]["trials"][1]
    assert float(rows[1]["elapsed_s"]) == pytest.approx(first["elapsed_s"], abs=1e-6)
    assert rows[0]["warmup"] == "1" and rows[1]["warmup"] == "0"


def test_password_never_written(cli_run, target: ConnectionTarget) -> None:
    result, out = cli_run
    assert target.password
    texts = [result.stdout, result.stderr, (out / "results.json").read_text(),
             (out / "results.csv").read_text()]
    assert "psycopg2:threaded" in texts[0] + texts[2] + texts[3]  # the artefacts have content
    for artefact in texts:
        assert target.password not in artefact


def test_chart_text_shows_the_run_and_never_the_password(target: ConnectionTarget,
                                                         table: str) -> None:
    """What a reader of the PNG sees is its text elements: titles, labels, legend."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    results = run(RunConfig(target=target, strategies=("psycopg:none", "psycopg:pool"), rows=20,
                            workers=2, warmup=0, trials=1, table=table, out_dir=None,
                            connect_samples=1))
    fig = ChartExporter().figure(results)
    try:
        texts = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
    finally:
        plt.close(fig)
    assert {"psycopg:none", "psycopg:pool", "create", "delete"} <= set(texts)
    assert any("20 rows, 2 workers" in t for t in texts)
    assert target.password and not any(target.password in t for t in texts)


# A script whose SQL carries markup: the page must show it as text, never run it.
TAGGED = """\\set k random(1, 9)
SELECT :k AS k, '<script>alert(1)</script>' AS tag;
SELECT 2 AS two;
"""


@pytest.fixture(scope="module")
def script_run(tmp_path_factory: pytest.TempPathFactory, target: ConnectionTarget):
    """A run of one script through the library (no PNG charts: seconds saved), its page
    written by the exporter the run's final write uses."""
    out = tmp_path_factory.mktemp("scripts")
    results = run(RunConfig(target=target, strategies=("psycopg:pool",), rows=12, workers=2,
                            pool_max=2, warmup=1, trials=1, out_dir=out, chart=False,
                            scripts=(ScriptFile("tagged.sql", "tagged.sql", TAGGED, 1),)))
    HtmlExporter().write(results, out / HtmlExporter.filename)
    return results, out


def test_statements_csv_holds_the_json_statements(script_run) -> None:
    """One row per strategy, script phase and command, the numbers of results.json; the
    CLI's closing line names statements.csv, and results.csv keeps its one row per trial."""
    results, out = script_run
    assert "statements.csv" in written_files(results, chart=True)
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        *written_files(results, chart=False), "report.html"}
    data = json.loads((out / "results.json").read_text())
    expected = [{"strategy": s["name"], "phase": p["phase"], "line": str(f["line"]),
                 "command": f["command"], "count": str(f["count"]),
                 "failures": str(f["failures"]),
                 "mean_ms": "" if f["mean_ms"] is None else repr(f["mean_ms"])}
                for s in data["strategies"] for p in s["phases"] for f in p.get("statements", ())]
    rows = list(csv.DictReader((out / "statements.csv").open()))
    assert rows == expected
    assert [(r["line"], r["count"], r["mean_ms"] == "") for r in rows] == [
        ("1", "12", True), ("2", "12", False), ("3", "12", False)]
    assert rows[1]["command"] == "SELECT :k AS k, '<script>alert(1)</script>' AS tag;"
    trials = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["phase"], r["warmup"]) for r in trials] == [
        ("mix", "1"), ("mix", "0"), ("script:tagged.sql", "1"), ("script:tagged.sql", "0")]


def test_html_shows_each_scripts_statements_escaped(script_run, chromium) -> None:
    """The page's statements table is results.json's, the command with <script> shown as
    text (escaped, never run); the calls against pg_stat_statements are the cross-check's."""
    _, out = script_run
    raw = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "<script>alert(1)" not in raw
    data = json.loads((out / "results.json").read_text())
    (s,) = data["strategies"]
    figures = s["phases"][1]["statements"]
    calls = [c for c in s["server"]["checks"] if c["name"].startswith("calls ")]
    assert [c["ours"] for c in calls] == [24, 24]  # warm-up and counted trial
    with offline_page(chromium, out / "report.html") as (page, errors, blocked):
        heading = page.get_by_role("heading", name="Statements of tagged.sql — psycopg:pool")
        tables = heading.locator("xpath=following-sibling::table")
        statements = [[c.strip() for c in row.split("\t")] for row in
                      tables.nth(0).locator("tbody tr").all_inner_texts()]
        checked = [[c.strip() for c in row.split("\t")] for row in
                   tables.nth(1).locator("tbody tr").all_inner_texts()]
        server_header = page.locator("h2:text('Server cross-check') + table thead").inner_text()
    assert errors == [] and blocked == []
    assert statements == [
        [str(f["line"]), f["command"], f"{f['count']:,}", str(f["failures"]),
         "—" if f["mean_ms"] is None else f"{f['mean_ms']:.3f}"] for f in figures]
    assert statements[1][1] == "SELECT :k AS k, '<script>alert(1)</script>' AS tag;"
    assert [row[:3] for row in checked] == [
        [c["name"].removeprefix("calls "), f"{c['ours']:,}", f"{c['server']:,}"]
        for c in calls]
    assert "calls " not in server_header  # the calls are in the script's section only
