"""Where the database is: one parsed, validated connection target.

Every driver gets its parameters from here, and every place that shows a target
to a person (console, JSON, logs, charts, errors) uses :meth:`ConnectionTarget.masked`,
so the password has one way in and no way out. Every parameter whose name contains
``pass`` (``password``, ``sslpassword``...) is a secret, masked alike.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from poolbench.errors import ConfigError

MASK = "***"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
APPLICATION_NAME = "poolbench"
# The name of poolbench's own sessions besides the strategies' (the admin session, logins):
# fault injectors that terminate the benchmark's backends (application_name 'poolbench')
# leave them alone, and the server cross-check can tell their traffic apart.
ADMIN_APPLICATION_NAME = "poolbench-admin"

# libpq sslmode -> asyncpg's ``ssl`` argument (asyncpg accepts the same words).
_ASYNC_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class ConnectionTarget:
    """libpq keyword parameters of one database, plus where they came from.

    ``source`` names the flag or variable that chose this target, so error
    messages can point at what to fix.
    """

    params: tuple[tuple[str, str], ...]
    source: str
    embedded: bool = field(default=False, compare=False)

    @classmethod
    def from_dsn(cls, dsn: str, *, source: str) -> ConnectionTarget:
        """Parse a URI or ``key=value`` DSN; raise ConfigError naming ``source`` if invalid."""
        try:
            parsed = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            reason = redact(str(exc).strip().splitlines()[0], *_password_guess(dsn))
            raise ConfigError(
                f"{source}: cannot parse the DSN ({reason}); use postgresql://user@host:port/dbname"
            ) from None
        return cls.from_keywords(source=source, **{k: str(v) for k, v in parsed.items()})

    @classmethod
    def from_keywords(cls, *, source: str, **params: str | None) -> ConnectionTarget:
        """Build from libpq keywords (``host``, ``port``, ``user``, ``password``, ``dbname``...)."""
        clean = {k: str(v) for k, v in params.items() if v not in (None, "")}
        if "port" in clean:
            _check_port(clean["port"], source)
            ports = clean["port"].count(",") + 1
            hosts = max(clean.get(k, "").count(",") + 1 for k in ("host", "hostaddr"))
            if ports > 1 and ports != hosts:  # libpq: one port, or one per host
                raise ConfigError(f"{source}: {ports} ports for {hosts} host(s); give one "
                                  "port, or one per host")
        if "sslmode" in clean and clean["sslmode"] not in SSL_MODES:
            raise ConfigError(f"{source}: sslmode {clean['sslmode']!r} is not one of "
                              f"{', '.join(SSL_MODES)}")
        return cls(params=tuple(sorted(clean.items())), source=source)

    def __repr__(self) -> str:
        # Tracebacks with locals, Dask's task logs and debuggers print reprs: never the password.
        return f"ConnectionTarget({self.masked()!r}, source={self.source!r})"

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.params).get(key, default)

    @property
    def password(self) -> str | None:
        return self.get("password")

    def secrets(self) -> tuple[str, ...]:
        """The values of every secret parameter (see :func:`is_secret`), for :func:`redact`."""
        return tuple(v for k, v in self.params if is_secret(k) and v)

    @property
    def dbname(self) -> str:
        return self.get("dbname") or self.get("user") or "postgres"

    def logged_in(self) -> ConnectionTarget:
        """This target naming the user, password, database, host and port a connection to
        it logs in with: its own, or, where it names none, those libpq chooses (``PGUSER``,
        ``PGPASSWORD``, ``~/.pgpass``, ``PGDATABASE``, ``PGHOST``, ``PGPORT``, the default
        Unix socket...), learned by connecting once. Of a list of hosts (``host=a,b``), the
        one libpq reached; of ``hostaddr`` (or ``PGHOSTADDR``), the address it reached. For
        what connects without libpq (the connect probe) or is given a server to connect to
        (PgBouncer). Raises psycopg.Error when it cannot connect."""
        hostaddr = self.get("hostaddr") or os.environ.get("PGHOSTADDR")
        if self.password and not self.lists_hosts and hostaddr == self.get("hostaddr") \
                and all(self.get(key) for key in ("user", "dbname", "host", "port")):
            return self
        with psycopg.connect(self.with_params(application_name=ADMIN_APPLICATION_NAME)
                             .conninfo()) as conn:
            info = conn.info
            found = {"user": info.user, "dbname": info.dbname, "host": info.host,
                     "port": str(info.port)}
            if info.password:  # none (trust, peer): none named
                found["password"] = info.password
            if hostaddr:  # the address libpq reached, of those named (or PGHOSTADDR's)
                found["hostaddr"] = info.hostaddr
            return self.with_params(**found)

    @property
    def lists_hosts(self) -> bool:
        """Whether it names libpq's list of hosts, addresses or ports (``host=a,b``): which
        one serves is libpq's choice at connect time."""
        return any("," in (self.get(key) or "") for key in ("host", "hostaddr", "port"))

    @property
    def over_unix_socket(self) -> bool:
        """Whether its host names a Unix socket's directory (libpq: a host beginning with
        ``/`` or ``@``)."""
        return (self.get("host") or "").startswith(("/", "@"))

    def with_params(self, **changes: str) -> ConnectionTarget:
        merged = dict(self.params) | changes
        return ConnectionTarget(tuple(sorted(merged.items())), self.source, self.embedded)

    def without_params(self, *keys: str) -> ConnectionTarget:
        """This target naming none of ``keys`` (libpq's defaults then choose them)."""
        return ConnectionTarget(tuple((k, v) for k, v in self.params if k not in keys),
                                self.source, self.embedded)

    def requiring_tls(self) -> ConnectionTarget:
        """This target over TLS (``--tls``): ``sslmode=require``, unless it already asks
        for a verifying mode, which is kept."""
        if self.get("sslmode") in ("require", "verify-ca", "verify-full"):
            return self
        return self.with_params(sslmode="require")

    def with_settings(self, **settings: str) -> ConnectionTarget:
        """Add server settings sent at connect time (libpq ``options='-c key=value'``)."""
        extra = " ".join(f"-c {k}={v}" for k, v in settings.items())
        current = self.get("options")
        return self.with_params(options=f"{current} {extra}" if current else extra)

    def server_settings(self) -> dict[str, str]:
        """The ``-c key=value`` settings of libpq's ``options``, as asyncpg wants them."""
        tokens = (self.get("options") or "").split()
        found: dict[str, str] = {}
        for i, token in enumerate(tokens):
            pair = (tokens[i + 1] if token == "-c" and i + 1 < len(tokens)
                    else token[2:] if token.startswith(("-c", "--")) else "")
            if "=" in pair:
                key, value = pair.split("=", 1)
                found[key.replace("-", "_")] = value
        return found

    def conninfo(self) -> str:
        """A libpq conninfo string for psycopg/psycopg2 (contains the password)."""
        params = dict(self.params)
        params.setdefault("application_name", APPLICATION_NAME)
        return make_conninfo("", **params)

    def asyncpg_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``asyncpg.connect`` / ``create_pool``."""
        p = dict(self.params)
        kwargs: dict[str, object] = {"server_settings": {
            **self.server_settings(),
            "application_name": p.get("application_name", APPLICATION_NAME)}}
        for ours, theirs in (("user", "user"), ("password", "password"),
                             ("dbname", "database")):
            if ours in p:
                kwargs[theirs] = p[ours]
        if "host" in p:  # a list (host=a,b) tried in turn, as libpq does
            hosts = p["host"].split(",")
            kwargs["host"] = hosts if len(hosts) > 1 else hosts[0]
        if "target_session_attrs" in p:  # which of the hosts: asyncpg takes libpq's words
            kwargs["target_session_attrs"] = p["target_session_attrs"]
        if "port" in p:  # one port, or one per host (checked when parsed)
            ports = [int(port) for port in p["port"].split(",")]
            kwargs["port"] = ports if len(ports) > 1 else ports[0]
        if p.get("sslmode") in _ASYNC_SSL_MODES:
            kwargs["ssl"] = p["sslmode"]
        if "connect_timeout" in p:
            kwargs["timeout"] = float(p["connect_timeout"])
        return kwargs

    def masked(self, *, show_password: bool = False) -> str:
        """The target as a URI a person can read; the password is ``***`` unless asked."""
        p = dict(self.params)
        user = quote(p.get("user", ""), safe="")
        password = p.get("password")
        if password is not None:
            user += ":" + (quote(password, safe="") if show_password else MASK)
        host = p.get("host", "")
        if ":" in host and not host.startswith("/"):
            host = f"[{host}]"
        netloc = (user + "@" if user else "") + quote(host, safe="/")
        if "port" in p:
            netloc += f":{p['port']}"
        shown = {"user", "password", "host", "port", "dbname"}
        rest = {k: MASK if is_secret(k) else quote(v, safe="") for k, v in p.items()
                if k not in shown}
        query = "&".join(f"{k}={v}" for k, v in sorted(rest.items()))
        uri = f"postgresql://{netloc}/{quote(p.get('dbname', ''), safe='')}" + (
            f"?{query}" if query else "")
        # a secret's value that another parameter repeats is masked there too
        return uri if show_password else redact(uri, *self.secrets())


def is_secret(key: str) -> bool:
    """A connection parameter that is never shown: any whose name contains ``pass``."""
    return "pass" in key.lower()


def redact(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each secret, in every escaped form it may take on its
    way to a person (see :func:`secret_forms`), by ``***``."""
    forms = {form for secret in secrets if secret for form in secret_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):  # longest first: no half-masked tail
        text = text.replace(form, MASK)
    return text


def secret_forms(secret: str) -> set[str]:
    """``secret`` as written raw and as each format around poolbench escapes it: URL
    (%-encoded, either case, ``+`` for space), Python ``repr``/``ascii`` (str and
    UTF-8 bytes), JSON, libpq
    conninfo (``\\'``), PgBouncer's and CSV's doubled quotes, HTML, shell."""
    forms = {secret, secret.replace("\\", "\\\\").replace("'", "\\'"),
             secret.replace("'", "''"), secret.replace('"', '""'),
             html.escape(secret), html.escape(secret, quote=False), shlex.quote(secret)}
    for url in (quote(secret, safe=""), quote(secret), quote(secret, safe="/:@"),
                quote_plus(secret), quote_plus(secret, safe="/:@")):
        forms |= {url, re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), url)}
    for python in (repr(secret)[1:-1], ascii(secret)[1:-1], repr(secret.encode())[2:-1]):
        forms |= {python, python.replace("'", "\\'"), python.replace('"', '\\"')}
    forms |= {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {form for form in forms if form}


def reason(exc: BaseException, target: ConnectionTarget) -> str:
    """An error in one line, for a "not measured: why": its first line (or its type), every
    secret of ``target`` masked."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return redact(line, *target.secrets())


def _password_guess(dsn: str) -> tuple[str, ...]:
    """Best-effort secrets of a DSN that libpq could not parse, so errors can hide them:
    the URI's userinfo password and every ``*pass*=value`` of a query or conninfo."""
    found: list[str] = []
    if "://" in dsn:
        netloc = dsn.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
            found.append(netloc.rsplit("@", 1)[0].split(":", 1)[1])
    for match in re.finditer(r"([A-Za-z_]*pass[A-Za-z_]*)\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s&]*)",
                             dsn, flags=re.IGNORECASE):
        value = match[2]
        found.append(value)
        if value.startswith("'"):
            found.append(re.sub(r"\\(.)", r"\1", value.strip("'")))
    return tuple(v for value in found for v in {value, unquote(value)} if v)


def _check_port(port: str, source: str) -> None:
    """One port, or libpq's list of one per host (``port=5432,5433``)."""
    if not all(p.isdigit() and 1 <= int(p) <= 65535 for p in port.split(",")):
        raise ConfigError(f"{source}: port {port!r} is not a number from 1 to 65535 (or a "
                          "list of them, one per host); fix the port")
