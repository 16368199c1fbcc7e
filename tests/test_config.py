"""Where the database comes from: --dsn, DATABASE_URL, the seed's .env variables, PG*."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import clean_env, run_cli

from poolbench.config import resolve_target
from poolbench.db.target import ConnectionTarget
from poolbench.errors import ConfigError


def seed_env_text(target: ConnectionTarget) -> str:
    return (f"DB_NAME={target.get('dbname')}\nUSER_NAME={target.get('user')}\n"
            f"PASSWORD={target.password}\nHOST={target.get('host')}\nPORT={target.get('port')}\n")


def test_seed_env_file_is_honoured(tmp_path: Path, target: ConnectionTarget) -> None:
    (tmp_path / ".env").write_text(seed_env_text(target))
    result = run_cli("run", "-n", "20", "-w", "2", "--trials", "1", "--warmup", "0",
                     "--table", "env_users", "--no-chart", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DB_NAME/USER_NAME/PASSWORD/HOST/PORT" in result.stderr
    data = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert data["config"]["target"] == target.masked()
    assert data["environment"]["embedded_server"] is False


def test_precedence_dsn_then_database_url_then_seed_then_libpq(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_NAME=seeddb\nHOST=seedhost\n")
    environ = {"DATABASE_URL": "postgresql://u@urlhost/urldb", "PGHOST": "pghost"}
    assert resolve_target(dsn="host=dsnhost", env_file=env_file, environ=environ).get(
        "host") == "dsnhost"
    assert resolve_target(dsn=None, env_file=env_file, environ=environ).get("host") == "urlhost"
    assert resolve_target(dsn=None, env_file=env_file, environ={"PGHOST": "pghost"}).get(
        "host") == "seedhost"
    (tmp_path / "empty.env").write_text("")
    assert resolve_target(dsn=None, env_file=tmp_path / "empty.env",
                          environ={"PGHOST": "pghost"}).get("host") == "pghost"
    assert resolve_target(dsn=None, env_file=tmp_path / "empty.env", environ={}) is None


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_NAME=filedb\nPORT=5432\n")
    t = resolve_target(dsn=None, env_file=env_file, environ={"DB_NAME": "envdb"})
    assert (t.get("dbname"), t.get("port")) == ("envdb", "5432")


def test_malformed_env_file_names_the_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_NAME=x\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match="line 2"):
        resolve_target(dsn=None, env_file=env_file, environ={})
    result = run_cli("run", "--env-file", str(env_file), cwd=tmp_path, env=clean_env())
    assert result.returncode == 2 and "line 2" in result.stderr


def test_masked_dsn_hides_the_password() -> None:
    t = ConnectionTarget.from_dsn("postgresql://bob:s3cr%40t@db.example:6432/app?sslmode=require",
                                  source="--dsn")
    assert t.password == "s3cr@t"
    assert t.masked() == "postgresql://bob:***@db.example:6432/app?sslmode=require"
    assert "s3cr" in t.masked(show_password=True)
