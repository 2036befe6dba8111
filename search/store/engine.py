"""The service's own tables (`svc_*`), next to Optuna's RDB tables in the same database.

One `Store` per process. SQLite (`sqlite:///path.db`, WAL mode) by default, PostgreSQL
(`postgresql+psycopg://...`) for clusters. The schema is created and upgraded by the Alembic
migrations shipped in `search/store/migrations/`, with their own version table `svc_alembic_version`,
so Optuna's tables and its `alembic_version` are never touched.

Every method is one transaction; input is validated before anything is written; every value
returned is plain JSON-able Python (datetimes as ISO 8601 UTC strings).

New migration (autogenerate only ever looks at `svc_*` tables)::

    from alembic import command
    from search.storage import alembic_config
    command.revision(alembic_config("sqlite:////tmp/x.db"), message="...", autogenerate=True)
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import time
import zlib
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from search.store.schema import VERSION_TABLE

SUPPORTED_SCHEMES = ("sqlite:///path/to/file.db", "postgresql+psycopg://user:password@host:port/database")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# pg_advisory_xact_lock key serializing migrations of concurrently starting processes.
_MIGRATION_LOCK_KEY = zlib.crc32(b"servesweep.svc_migrations")


class StoreUnavailableError(RuntimeError):
    """The database cannot be opened: unreachable, missing, or not allowed to be created here.
    The message is one line naming the host, port and database (or the SQLite file)."""


def default_storage_url() -> str:
    """`$SERVESWEEP_STORAGE`, else a SQLite file `servesweep.db` in the working directory."""
    env = os.environ.get("SERVESWEEP_STORAGE", "").strip()
    if env:
        return env
    return f"sqlite:///{Path.cwd() / 'servesweep.db'}"


# --------------------------------------------------------------------------------------------
# URLs, engine, migrations
# --------------------------------------------------------------------------------------------


def parse_url(url: str) -> URL:
    """The parsed URL if it is SQLite or PostgreSQL through psycopg 3; else ValueError."""
    bad = f"unsupported storage URL {url!r}: use one of {', '.join(SUPPORTED_SCHEMES)}"
    if not isinstance(url, str) or not url.strip():
        raise ValueError(bad)
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"{bad} ({exc})") from None
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed
    if parsed.drivername == "postgresql+psycopg":
        if not parsed.database:
            raise ValueError(f"{bad} (no database name)")
        return parsed
    raise ValueError(bad)


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL, None for in-memory SQLite and for PostgreSQL."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def check_creatable(url: URL, *, create: bool = True, mkdir: bool = True) -> None:
    """StoreUnavailableError unless the SQLite file of `url` exists or may be made: `create`
    False refuses a missing file (a read-only use), `mkdir` False refuses to invent its missing
    directory. PostgreSQL and in-memory SQLite always pass (the server owns its databases)."""
    path = _sqlite_file(url)
    if path is None or path.exists():
        return
    if not create:
        raise StoreUnavailableError(f"no database at {path} (check --storage or $SERVESWEEP_STORAGE)")
    if not path.parent.is_dir() and not mkdir:
        raise StoreUnavailableError(
            f"cannot create the database {path}: directory {path.parent} does not exist (create it or pass --mkdir)"
        )


def unavailable(url: URL, exc: BaseException) -> StoreUnavailableError:
    """A one-line StoreUnavailableError for a driver error opening `url`: which database on
    which host and port (or which SQLite file), and the driver's first line of reason."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    reason = lines[0] if lines else type(orig).__name__
    # psycopg: 'connection failed: connection to server at "h" (h), port p failed: FATAL:  why'
    reason = re.sub(r"^(connection failed: )?connection to server at [^,]+, port \d+ failed: ", "", reason)
    reason = re.sub(r"^FATAL:\s+", "", reason)
    path = _sqlite_file(url)
    if url.get_backend_name() == "sqlite":
        return StoreUnavailableError(f"cannot open the SQLite database {path or ':memory:'}: {reason}")
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    return StoreUnavailableError(f"cannot open database {url.database!r} on {where} ({url.drivername}): {reason}")


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent). The switch needs an exclusive lock and SQLite does
    not always call the busy handler for it, so retry while another process holds the file."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# Against an unresponsive PostgreSQL (a paused proxy, a partition) a driver must fail with a
# message, not stall until TCP gives up (~2 h): libpq's connect timeout, TCP keepalives and a
# TCP user timeout (unacknowledged writes), and a server-side statement timeout. Each may be
# overridden by the URL's own query parameters (`?connect_timeout=...`, `?options=...`).
PG_CONNECT_TIMEOUT_S = 10
PG_KEEPALIVES_IDLE_S = 30
PG_KEEPALIVES_INTERVAL_S = 10
PG_KEEPALIVES_COUNT = 3
PG_TCP_USER_TIMEOUT_MS = 60_000
PG_STATEMENT_TIMEOUT_MS = 300_000


def pg_connect_args(url: URL | str) -> dict[str, Any]:
    """psycopg connect arguments for the timeouts above, less those the URL sets itself."""
    query = make_url(url).query if isinstance(url, str) else url.query
    args: dict[str, Any] = {
        "connect_timeout": PG_CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": PG_KEEPALIVES_IDLE_S,
        "keepalives_interval": PG_KEEPALIVES_INTERVAL_S,
        "keepalives_count": PG_KEEPALIVES_COUNT,
        "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS,
        "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
    }
    return {k: v for k, v in args.items() if k not in query}


def make_engine(url: URL) -> Engine:
    """Engine for a parsed URL; SQLite gets WAL, busy_timeout, foreign keys and its directory;
    PostgreSQL pre-pings pooled connections and gets the timeouts of `pg_connect_args`."""
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True, connect_args=pg_connect_args(url))
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        engine = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite (it would not BEGIN before DDL) and
        # emit our own BEGIN in the "begin" event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if not in_memory:
                _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (BEGIN IMMEDIATE) so busy_timeout applies,
        # instead of failing with SQLITE_BUSY when upgrading a read transaction.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def alembic_config(url: str | URL, connection: Connection | None = None) -> Any:
    """An `alembic.config.Config` for the shipped migrations (no alembic.ini needed).

    `connection`, when given, is used by env.py instead of opening its own.
    """
    from alembic.config import Config

    # Alembic's default stdout is bound when alembic.config is first imported; pass the
    # current one, or messages go to whatever stream was current then (maybe closed since).
    cfg = Config(stdout=sys.stdout)
    cfg.set_main_option("script_location", str(files("search.store") / "migrations"))
    rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade_to_head(engine: Engine, url: URL) -> None:
    from alembic import command

    with ExitStack() as stack:
        script_dir = stack.enter_context(as_file(files("search.store") / "migrations"))
        if engine.dialect.name == "sqlite":
            conn = stack.enter_context(engine.connect().execution_options(sqlite_begin="IMMEDIATE"))
            stack.enter_context(conn.begin())
        else:
            conn = stack.enter_context(engine.connect())
            stack.enter_context(conn.begin())
            # Released at commit: the second process waits, then finds the schema at head.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        cfg = alembic_config(url, connection=conn)
        cfg.set_main_option("script_location", str(script_dir))
        command.upgrade(cfg, "head")
