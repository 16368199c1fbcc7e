"""`poolbench compare`: a CI gate over two results.json files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import run_cli

from poolbench.db.target import ConnectionTarget


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory, target: ConnectionTarget) -> dict:
    cwd = tmp_path_factory.mktemp("compare")
    # Open loop at a fixed rate: each trial's throughput is the rate, within a fraction of a
    # percent, so a 30% drop stands out of the noise of this machine.
    result = run_cli("run", "--dsn", target.conninfo(), "--strategies", "psycopg:pool", "-n",
                     "1", "-w", "4", "--warmup", "1", "--trials", "4", "--rate", "400",
                     "--duration", "0.5", "--no-chart", "--table", "compare_users", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads((cwd / "reports" / "results.json").read_text())


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_identical_runs_pass_the_gate(tmp_path: Path, base_run: dict) -> None:
    base = write(tmp_path / "base.json", base_run)
    result = run_cli("compare", str(base), str(base), "--markdown", "cmp.md", "--html",
                     "cmp.html", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REGRESSION" not in result.stdout and "significant (p" not in result.stdout
    assert "Mann–Whitney U" in result.stdout
    assert "| psycopg:pool | read | throughput [ops/s] |" in (tmp_path / "cmp.md").read_text()
    assert "<table>" in (tmp_path / "cmp.html").read_text()


def test_throughput_lowered_30_percent_fails_the_gate(tmp_path: Path, base_run: dict) -> None:
    slower = copy.deepcopy(base_run)
    phase = slower["strategies"][0]["phases"][1]  # read
    assert phase["phase"] == "read"
    phase["throughput_ops_s"] *= 0.7
    for trial in phase["trials"]:
        trial["throughput_ops_s"] *= 0.7
    result = run_cli("compare", str(write(tmp_path / "base.json", base_run)),
                     str(write(tmp_path / "new.json", slower)), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "regression: psycopg:pool read throughput -30.0%" in result.stdout
    assert "regression: psycopg:pool create" not in result.stdout  # only what changed


def test_other_settings_or_machine_are_warned_about(tmp_path: Path, base_run: dict) -> None:
    other = copy.deepcopy(base_run)
    other["config"]["workers"] = 8
    other["environment"]["cpu_count"] = 64
    result = run_cli("compare", str(write(tmp_path / "base.json", base_run)),
                     str(write(tmp_path / "new.json", other)), cwd=tmp_path)
    assert result.returncode == 0
    assert "config differs: workers 4 -> 8" in result.stdout
    assert "environment differs: cpu_count" in result.stdout


def test_one_trial_each_cannot_be_judged(tmp_path: Path, base_run: dict) -> None:
    one = copy.deepcopy(base_run)
    for phase in one["strategies"][0]["phases"]:
        phase["trials"] = phase["trials"][:2]  # the warm-up and one counted trial
        phase["throughput_ops_s"] *= 0.5
    result = run_cli("compare", str(write(tmp_path / "base.json", one)),
                     str(write(tmp_path / "new.json", one)), cwd=tmp_path)
    assert result.returncode == 0 and "cannot be judged" in result.stdout


def test_older_schema_versions_are_read(tmp_path: Path, base_run: dict) -> None:
    old = copy.deepcopy(base_run)
    old["schema_version"] = 2
    old["harness_us_per_op"] = 2.4
    for strategy in old["strategies"]:
        for key in ("route", "prepared_statements", "pooler"):
            strategy.pop(key)
        for phase in strategy["phases"]:
            phase.pop("failed")
            phase.pop("histogram_failed_us")
    v1 = copy.deepcopy(old)
    v1["schema_version"] = 1
    v1.pop("calibration")
    v1.pop("harness_us_per_op")
    for version, data in ((2, old), (1, v1)):
        result = run_cli("compare", str(write(tmp_path / f"v{version}.json", data)),
                         str(write(tmp_path / "now.json", base_run)), cwd=tmp_path)
        assert result.returncode == 0, (version, result.stderr)


@pytest.mark.parametrize("content", ["not json at all", '{"schema_version": 99}', "[1, 2]",
                                     '{"schema_version": 3}'])
def test_unreadable_input_exits_2(tmp_path: Path, base_run: dict, content: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    base = write(tmp_path / "base.json", base_run)
    result = run_cli("compare", str(base), "bad.json", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.json" in lines[0], result.stderr
    result = run_cli("compare", str(base), "missing.json", cwd=tmp_path)
    assert result.returncode == 2 and "missing.json" in result.stderr
