"""No secret leaves poolbench: every connection parameter named *pass* (password,
sslpassword...) is masked in every artefact a run or a sweep writes and in every
message, whatever the source of the password and however it is escaped on the way.

The passwords hold the characters that escaping changes (' \\ % @ : / space é) around a
random token that no escaping changes: the token found anywhere is a leak, in any form."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import pytest
from conftest import clean_env, run_cli
from psycopg import sql
from psycopg.conninfo import make_conninfo

from poolbench.config import read_env_file
from poolbench.db.target import ConnectionTarget, redact

TOKEN = secrets.token_hex(8)
SSL_TOKEN = secrets.token_hex(8)
PASSWORD = f"it's a \\ % @ : / é-{TOKEN}"
SSL_PASSWORD = f"key's \\ %41 @:/ é-{SSL_TOKEN}"  # %41: a URL escape inside the value
ROLE = "pb_secret"
TINY = ("--strategies", "psycopg:pool", "-n", "20", "-w", "2", "--trials", "1",
        "--warmup", "0")

# Loaded by every poolbench process of a test (PYTHONPATH): writes the text of every
# chart's artists before it is saved, so the PNGs' words can be read.
CHART_TEXTS = '''
import os

import matplotlib.figure
import matplotlib.text

_save = matplotlib.figure.Figure.savefig


def _savefig(self, *args, **kwargs):
    with open(os.environ["PB_CHART_TEXTS"], "a", encoding="utf-8") as out:
        out.writelines(t.get_text() + "\\n" for t in self.findobj(matplotlib.text.Text))
    return _save(self, *args, **kwargs)


matplotlib.figure.Figure.savefig = _savefig
'''


def escaped_forms(secret: str) -> dict[str, str]:
    """The secret as the formats around poolbench write it, each made by the format's own
    code (the token alone catches any other)."""
    row = io.StringIO()
    csv.writer(row).writerow([secret])
    return {"raw": secret, "token": secret.rsplit("-", 1)[1],
            "repr": repr(secret)[1:-1], "ascii": ascii(secret)[1:-1],
            "bytes repr": repr(secret.encode())[2:-1],
            "libpq": make_conninfo(password=secret)[len("password='"):-1],
            "URL": quote(secret, safe=""), "URL path": quote(secret),
            "URL form": quote_plus(secret), "JSON": json.dumps(secret)[1:-1],
            "JSON utf-8": json.dumps(secret, ensure_ascii=False)[1:-1],
            "HTML": html.escape(secret), "CSV": row.getvalue().strip(),
            "shell": shlex.quote(secret)}


def leaks(text: str) -> list[str]:
    return [f"{which} {name}" for which, secret in (("password", PASSWORD),
                                                    ("sslpassword", SSL_PASSWORD))
            for name, form in escaped_forms(secret).items() if form in text]


def test_redact_hides_each_escaped_form() -> None:
    """Known answer: a message holding the password in any of its escaped forms (Python's
    repr of a driver's arguments, a libpq conninfo, a URL...) comes out masked."""
    for name, form in escaped_forms(PASSWORD).items():
        if name == "token":
            continue
        message = f"cannot connect with {{'user': 'x', 'password': {form}}}"
        shown = redact(message, PASSWORD)
        assert TOKEN not in shown and "***" in shown, (name, shown)
    wrapped = f"{dict(password=PASSWORD)!r} {make_conninfo(password=PASSWORD, user='u')}"
    assert TOKEN not in redact(wrapped, PASSWORD)


def test_every_parameter_named_pass_is_masked() -> None:
    target = ConnectionTarget.from_dsn(
        make_conninfo(host="db", user="u", password=PASSWORD, sslpassword=SSL_PASSWORD,
                      sslmode="prefer"), source="--dsn")
    assert set(target.secrets()) == {PASSWORD, SSL_PASSWORD}
    for shown in (target.masked(), repr(target), str(target)):
        assert leaks(shown) == [], shown
        assert "sslpassword=***" in shown and "sslmode=prefer" in shown


@pytest.fixture(scope="module")
def role(target: ConnectionTarget) -> Iterator[ConnectionTarget]:
    """A role whose password holds every character escaping changes."""
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(PASSWORD)))
    try:
        yield target.with_params(user=ROLE, password=PASSWORD)
    finally:
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(
                sql.Identifier(ROLE)))


def uri(role: ConnectionTarget) -> str:
    return (f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@{role.get('host')}:"
            f"{role.get('port')}/poolbench?sslpassword={quote(SSL_PASSWORD, safe='')}")


def dotenv_quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def with_source(source: str, role: ConnectionTarget, tmp_path: Path) -> tuple[list[str],
                                                                           dict[str, str]]:
    """Arguments and environment that give poolbench the role's password through ``source``."""
    host, port = role.get("host") or "", role.get("port") or ""
    seed = {"DB_NAME": "poolbench", "USER_NAME": ROLE, "PASSWORD": PASSWORD, "HOST": host,
            "PORT": port}
    if source == "--dsn URI":
        return ["--dsn", uri(role)], {}
    if source == "--dsn key=value":
        return ["--dsn", make_conninfo(role.conninfo(), sslpassword=SSL_PASSWORD)], {}
    if source == "DATABASE_URL":
        return [], {"DATABASE_URL": uri(role)}
    if source == "seed variables":
        return [], seed
    if source == "PGPASSWORD":
        return [], {"PGHOST": host, "PGPORT": port, "PGUSER": ROLE, "PGPASSWORD": PASSWORD,
                    "PGDATABASE": "poolbench"}
    assert source == ".env"
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={dotenv_quoted(v)}\n" for k, v in seed.items()))
    assert read_env_file(env_file, explicit=True)["PASSWORD"] == PASSWORD
    return [], {}


def python_path(first: Path) -> str:
    return os.pathsep.join(filter(None, (str(first), os.environ.get("PYTHONPATH"))))


def observed_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CHART_TEXTS)
    return clean_env(PYTHONPATH=python_path(hook), PB_CHART_TEXTS=str(tmp_path / "chart-texts"),
                     **extra)


def assert_nothing_leaked(output: str, out_dir: Path, tmp_path: Path) -> list[str]:
    """Console, every file written (text, and PNG bytes: metadata), every chart's words."""
    assert leaks(output) == [], output
    written = sorted(p for p in out_dir.rglob("*") if p.is_file())
    for path in written:
        data = path.read_bytes()
        found = leaks(data.decode("utf-8", errors="replace")) + [
            f"bytes of {form!r}" for form in (TOKEN, SSL_TOKEN) if form.encode() in data]
        assert found == [], (path.name, found)
    texts = (tmp_path / "chart-texts").read_text(encoding="utf-8")
    assert texts.strip(), "no chart was drawn"
    assert leaks(texts) == []
    return [p.name for p in written]


@pytest.mark.parametrize("source", ["--dsn URI", "--dsn key=value", "DATABASE_URL",
                                    "seed variables", "PGPASSWORD", ".env"])
def test_no_secret_in_anything_a_run_writes(source: str, role: ConnectionTarget,
                                            tmp_path: Path, table: str) -> None:
    args, env = with_source(source, role, tmp_path)
    if source == "PGPASSWORD":  # worker processes, and their messages, too
        args += ["--processes", "2"]
    result = run_cli("run", *args, *TINY, "--table", table, "--out", "out", cwd=tmp_path,
                     env=observed_env(tmp_path, **env))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "out" / "results.json").read_text())["config"]
    assert config["target"].startswith(f"postgresql://{ROLE}:***@")  # the role's password
    written = assert_nothing_leaked(result.stdout + result.stderr, tmp_path / "out", tmp_path)
    assert {"results.json", "results.csv", "results.md", "report.html"} <= set(written)
    assert any(name.endswith(".png") for name in written), written


def test_no_secret_in_anything_a_sweep_writes(role: ConnectionTarget, tmp_path: Path,
                                              table: str) -> None:
    result = run_cli("sweep", "--dsn", uri(role), "--pool-sizes", "1,2", "-w", "2",
                     "--duration", "0.5", "--trials", "2", "--warmup", "0",
                     "--strategies", "psycopg:pool",
                     "--table", table, "--out", "out", cwd=tmp_path,
                     env=observed_env(tmp_path))
    assert result.returncode == 0, result.stderr
    written = assert_nothing_leaked(result.stdout + result.stderr, tmp_path / "out", tmp_path)
    assert "sweep.json" in written


def test_an_error_that_echoes_the_password_is_masked() -> None:
    """Some drivers' errors echo their arguments (Python's repr escapes the backslash and
    the quote): the message and the traceback main() prints are masked all the same."""
    import traceback

    from poolbench.cli import Secrets

    target = ConnectionTarget.from_dsn(make_conninfo(host="db", user=ROLE, password=PASSWORD,
                                                     sslpassword=SSL_PASSWORD), source="--dsn")
    kept = Secrets()
    kept.add(target)
    kwargs = {"user": ROLE, "password": PASSWORD, "sslpassword": SSL_PASSWORD}
    try:
        raise RuntimeError(f"cannot pool with {kwargs}")
    except RuntimeError as exc:
        message, trace = kept.redact(str(exc)), kept.redact(traceback.format_exc())
    for text in (message, trace):
        assert re.search(r"'password': ('\*\*\*'|\"\*\*\*\")", text), text
        assert leaks(text) == [], text


def test_a_dsn_libpq_cannot_parse_is_not_echoed(tmp_path: Path) -> None:
    """libpq quotes the offending part of a URI it cannot parse: here, the password."""
    bad = f"postgresql://{ROLE}:{quote(PASSWORD, safe='').replace('%20', ' ')}@h/db"
    result = run_cli("run", "--dsn", bad, cwd=tmp_path)
    assert result.returncode == 2 and "cannot parse the DSN" in result.stderr, result.stderr
    assert leaks(result.stdout + result.stderr) == [], result.stderr


def test_a_password_repeated_in_another_parameter_is_masked_there_too() -> None:
    """The DSN shown (console, results.json's config.target) masks the password's value
    wherever it appears, not only in the password field."""
    from poolbench.db.target import ConnectionTarget

    target = ConnectionTarget.from_dsn("host=h user=u password=s3cr3t-pw dbname=d "
                                       "application_name=s3cr3t-pw", source="--dsn")
    assert "s3cr3t-pw" not in target.masked()
    assert "s3cr3t-pw" in target.masked(show_password=True)
