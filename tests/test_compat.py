"""The seed's own names (poolbench.compat) behave as the seed documents."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from conftest import table_contents

from poolbench import compat
from poolbench.db.target import ConnectionTarget
from poolbench.errors import SchemaConflict


@pytest.fixture
def db_config(target: ConnectionTarget, admin: psycopg.Connection):
    # compat works on table "users" in the database given; use a database of its own.
    admin.execute("DROP DATABASE IF EXISTS compat_db")
    admin.execute("CREATE DATABASE compat_db")
    yield {"dbname": "compat_db", "user": target.get("user"), "password": target.password,
           "host": target.get("host"), "port": target.get("port")}
    admin.execute("DROP DATABASE compat_db WITH (FORCE)")


def test_seed_flow_runs_and_reports(db_config, target: ConnectionTarget, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    compat.setup_database(db_config)
    with psycopg.connect(target.with_params(dbname="compat_db").conninfo(),
                         autocommit=True) as conn:
        conn.execute("INSERT INTO users (username, email) VALUES ('keep', 'keep@example.com')")
        before = table_contents(conn, "users")
        no_pool = compat.run_crud_tests(compat.NoPoolManager(db_config), 30, 5)
        pool_manager = compat.PoolManager(db_config)
        pooled = compat.run_crud_tests(pool_manager, 30, 5)
        pool_manager.closeall()
        assert table_contents(conn, "users") == before
    assert set(no_pool) == set(pooled) == {"create", "read", "update", "delete"}
    assert all(v > 0 for v in [*no_pool.values(), *pooled.values()])
    path = compat.generate_report(no_pool, pooled, 30, out_dir=tmp_path)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert "Without Pooling: " in capsys.readouterr().out


def test_managers_do_crud(db_config) -> None:
    compat.setup_database(db_config)
    m = compat.NoPoolManager(db_config)
    uid = m.create_user("pbcompat_1", "pbcompat_1@example.com")
    assert m.read_user(uid)[1] == "pbcompat_1"
    m.update_user(uid, "new@example.com")
    assert m.read_user(uid)[2] == "new@example.com"
    m.delete_user(uid)
    assert m.read_user(uid) is None


def test_setup_database_refuses_other_shape(db_config, target: ConnectionTarget) -> None:
    with psycopg.connect(target.with_params(dbname="compat_db").conninfo(),
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int, name text)")
    with pytest.raises(SchemaConflict):
        compat.setup_database(db_config)
