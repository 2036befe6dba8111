"""The service's own tables (`svc_*`), next to Optuna's RDB tables in the same database.

One `Store` per process. SQLite (`sqlite:///path.db`, WAL mode) by default, PostgreSQL
(`postgresql+psycopg://...`) for clusters. The schema is created and upgraded by the Alembic
migrations shipped in `search/migrations/`, with their own version table `svc_alembic_version`,
so Optuna's tables and its `alembic_version` are never touched.

Every method is one transaction; input is validated before anything is written; every value
returned is plain JSON-able Python (datetimes as ISO 8601 UTC strings).

New migration (autogenerate only ever looks at `svc_*` tables)::

    from alembic import command
    from search.storage import alembic_config
    command.revision(alembic_config("sqlite:////tmp/x.db"), message="...", autogenerate=True)
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import sqlite3
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool, StaticPool

__all__ = [
    "FRONT_KINDS",
    "SUPPORTED_SCHEMES",
    "SWEEP_STATUSES",
    "Store",
    "SweepBusyError",
    "SweepNotFoundError",
    "alembic_config",
    "default_storage_url",
]

SWEEP_STATUSES = ("pending", "running", "finished", "failed", "interrupted", "cancelled")
FRONT_KINDS = ("exhaustive", "guided", "partial", "final")
CALIBRATION_KINDS = ("probe", "measurements")
SUPPORTED_SCHEMES = ("sqlite:///path/to/file.db", "postgresql+psycopg://user:password@host:port/database")
TABLE_PREFIX = "svc_"
VERSION_TABLE = "svc_alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# pg_advisory_xact_lock key serializing migrations of concurrently starting processes.
_MIGRATION_LOCK_KEY = zlib.crc32(b"servesweep.svc_migrations")
_MAX_NAME = 200
_MAX_KEY = 512
_IN_CHUNK = 500

_SWEEP_UPDATABLE = {
    "status",
    "summary",
    "optuna_study_name",
    "started_at",
    "finished_at",
    "submitter",
    "code_version",
    "price_table",
}


class SweepBusyError(ValueError):
    """Another process holds the sweep's lease (it is running the sweep)."""


class SweepNotFoundError(LookupError):
    """No sweep of that name in the store."""


def default_storage_url() -> str:
    """`$SERVESWEEP_STORAGE`, else a SQLite file `servesweep.db` in the working directory."""
    env = os.environ.get("SERVESWEEP_STORAGE", "").strip()
    if env:
        return env
    return f"sqlite:///{Path.cwd() / 'servesweep.db'}"


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetime; SQLite's naive values are read back as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Sweep(Base):
    __tablename__ = "svc_sweeps"
    __table_args__ = (sa.CheckConstraint(f"status IN {SWEEP_STATUSES!r}", name="status"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(_MAX_NAME), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    spec_yaml: Mapped[str] = mapped_column(sa.Text)
    spec: Mapped[Any] = mapped_column(sa.JSON)
    submitter: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    code_version: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    price_table: Mapped[Any | None] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    summary: Mapped[Any | None] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    optuna_study_name: Mapped[str | None] = mapped_column(sa.String(_MAX_NAME), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Evaluation(Base):
    __tablename__ = "svc_evaluations"
    __table_args__ = (sa.UniqueConstraint("sweep_id", "config_key"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(sa.ForeignKey("svc_sweeps.id", ondelete="CASCADE"), index=True)
    config_key: Mapped[str] = mapped_column(sa.String(_MAX_KEY))
    config: Mapped[Any] = mapped_column(sa.JSON)
    feasible: Mapped[bool] = mapped_column(sa.Boolean)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    metrics: Mapped[Any | None] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    objectives: Mapped[Any | None] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    trial_number: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    evaluator: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    measured: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Front(Base):
    __tablename__ = "svc_fronts"
    __table_args__ = (sa.CheckConstraint(f"kind IN {FRONT_KINDS!r}", name="kind"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(sa.ForeignKey("svc_sweeps.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(sa.String(16))
    hypervolume: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    reference_point: Mapped[Any | None] = mapped_column(sa.JSON(none_as_null=True), nullable=True)
    points: Mapped[Any] = mapped_column(sa.JSON)


class Calibration(Base):
    """An efficiency calibration record (objectives.efficiency layout) and where it came from."""

    __tablename__ = "svc_calibrations"
    __table_args__ = (sa.CheckConstraint(f"kind IN {CALIBRATION_KINDS!r}", name="kind"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(_MAX_NAME), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    gpu: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    device: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    record: Mapped[Any] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


SWEEPS: sa.Table = Sweep.__table__  # type: ignore[assignment]
CALIBRATIONS: sa.Table = Calibration.__table__  # type: ignore[assignment]
EVALUATIONS: sa.Table = Evaluation.__table__  # type: ignore[assignment]
FRONTS: sa.Table = Front.__table__  # type: ignore[assignment]


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Alembic filter: reflect only `svc_*` tables (never Optuna's, never a version table)."""
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic filter: autogenerate only compares and emits `svc_*` tables."""
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    table = getattr(obj, "table", None)
    if table is not None:
        return table.name.startswith(TABLE_PREFIX)
    return True


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


def make_engine(url: URL) -> Engine:
    """Engine for a parsed URL; SQLite gets WAL, busy_timeout, foreign keys and its directory."""
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True)
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
    cfg.set_main_option("script_location", str(files("search") / "migrations"))
    rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade_to_head(engine: Engine, url: URL) -> None:
    from alembic import command

    with ExitStack() as stack:
        script_dir = stack.enter_context(as_file(files("search") / "migrations"))
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


# --------------------------------------------------------------------------------------------
# Validation and conversion
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON value: numpy scalars/arrays unwrapped, tuples to lists, NaN/inf to None."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool):
                raise ValueError(f"{where}: key {k!r} is not a string")
            out[str(k)] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist(), where)
    if isinstance(value, datetime):
        return _iso(_aware(value, where))
    raise ValueError(f"{where}: {type(value).__name__} value {value!r} is not JSON-serializable")


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"sweep name must be a non-empty string, got {name!r}")
    if len(name) > _MAX_NAME:
        raise ValueError(f"sweep name {name[:40]!r}... is longer than {_MAX_NAME} characters")
    return name


def _opt_str(value: Any, field: str, max_len: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string or None, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{field} is longer than {max_len} characters")
    return value


def _aware(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{field}: {value!r} is not an ISO 8601 datetime") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(f"{field}: naive datetime {value.isoformat()}; pass a timezone-aware one")
    return value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _finite_float(value: Any, field: str) -> float:
    if isinstance(value, bool) or (not isinstance(value, int | float) and not hasattr(value, "__float__")):
        raise ValueError(f"{field} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{field} must be finite, got {out}")
    return out


def _float_list(value: Any, field: str) -> list[float | None] | None:
    """A list of finite numbers; an element may be None where the model has no value (an
    infeasible configuration has no latency), but never NaN or infinity."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise ValueError(f"{field} must be a list of numbers or None, got {type(value).__name__}")
    return [None if v is None else _finite_float(v, f"{field}[{i}]") for i, v in enumerate(value)]


_EVALUATION_FIELDS = {
    "config_key",
    "config",
    "feasible",
    "reason",
    "metrics",
    "objectives",
    "trial_number",
    "evaluator",
    "measured",
}


def _evaluation_row(row: Mapping[str, Any], i: int, sweep_id: int, now: datetime) -> dict[str, Any]:
    where = f"evaluation row {i}"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(row).__name__}")
    unknown = set(row) - _EVALUATION_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_EVALUATION_FIELDS)}")
    key = row.get("config_key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: config_key must be a non-empty string, got {key!r}")
    if len(key) > _MAX_KEY:
        raise ValueError(f"{where}: config_key is longer than {_MAX_KEY} characters")
    if not isinstance(row.get("config"), Mapping):
        raise ValueError(f"{where} ({key}): config must be a dict")
    feasible = row.get("feasible")
    if hasattr(feasible, "item"):
        feasible = feasible.item()
    if not isinstance(feasible, bool):
        raise ValueError(f"{where} ({key}): feasible must be a bool, got {feasible!r}")
    trial = row.get("trial_number")
    if trial is not None:
        if hasattr(trial, "item"):
            trial = trial.item()
        if isinstance(trial, bool) or not isinstance(trial, int):
            raise ValueError(f"{where} ({key}): trial_number must be an int or None, got {trial!r}")
    measured = row.get("measured", False)
    if hasattr(measured, "item"):
        measured = measured.item()
    if not isinstance(measured, bool):
        raise ValueError(f"{where} ({key}): measured must be a bool, got {measured!r}")
    return {
        "sweep_id": sweep_id,
        "config_key": key,
        "config": _jsonable(row["config"], f"{where}.config"),
        "feasible": feasible,
        "reason": _opt_str(row.get("reason"), f"{where}.reason"),
        "metrics": _jsonable(row.get("metrics"), f"{where}.metrics"),
        "objectives": _float_list(row.get("objectives"), f"{where}.objectives"),
        "trial_number": trial,
        "evaluator": _opt_str(row.get("evaluator"), f"{where}.evaluator", 64),
        "measured": measured,
        "created_at": now,
    }


def _sweep_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "status": r.status,
        "spec_yaml": r.spec_yaml,
        "spec": r.spec,
        "submitter": r.submitter,
        "code_version": r.code_version,
        "price_table": r.price_table,
        "summary": r.summary,
        "optuna_study_name": r.optuna_study_name,
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "updated_at": _iso(r.updated_at),
    }


def _evaluation_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "config_key": r.config_key,
        "config": r.config,
        "feasible": bool(r.feasible),
        "reason": r.reason,
        "metrics": r.metrics,
        "objectives": r.objectives,
        "trial_number": r.trial_number,
        "evaluator": r.evaluator,
        "measured": bool(r.measured),
        "created_at": _iso(r.created_at),
    }


def _calibration_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "gpu": r.gpu,
        "device": r.device,
        "record": r.record,
        "created_at": _iso(r.created_at),
    }


def _front_dict(r: Any, sweep: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "sweep": sweep,
        "kind": r.kind,
        "created_at": _iso(r.created_at),
        "hypervolume": r.hypervolume,
        "reference_point": r.reference_point,
        "points": r.points,
    }


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------


class Store:
    """The service's tables in one database; migrates the schema to head on construction."""

    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        self.url: str = parsed.render_as_string(hide_password=False)
        self.dialect: str = parsed.get_backend_name()
        self.engine: Engine = make_engine(parsed)
        try:
            _upgrade_to_head(self.engine, parsed)
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Store({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @contextmanager
    def sweep_lease(self, name: str) -> Iterator[None]:
        """The right to drive sweep `name`, exclusive across processes and hosts while held;
        SweepBusyError at once when another holder has it. PostgreSQL: a session advisory lock
        on a connection of its own; SQLite: flock on `<database>.locks/<name>.lock`. Either is
        released when the holder exits or dies (its connection or file closes), so a crashed
        driver never blocks a resume. An in-memory SQLite database has one process: no lock."""
        busy = SweepBusyError(f"sweep {name!r} is being run by another process on {self!r}")
        if self.dialect == "postgresql":
            key = zlib.crc32(f"servesweep.sweep:{name}".encode())
            engine = sa.create_engine(make_url(self.url), poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    if not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                        raise busy
                    conn.commit()
                    try:
                        yield
                    finally:
                        conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                        conn.commit()
            finally:
                engine.dispose()
            return
        database = make_url(self.url).database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            yield
            return
        folder = Path(f"{Path(database).expanduser()}.locks")
        folder.mkdir(exist_ok=True)
        with open(folder / f"{hashlib.sha256(_name(name).encode()).hexdigest()[:32]}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise busy from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def _insert(self, table: sa.Table) -> Any:
        module = sqlite_dialect if self.dialect == "sqlite" else pg_dialect
        return module.insert(table)

    @staticmethod
    def _sweep_id(conn: Connection, name: str) -> int:
        sweep_id = conn.execute(sa.select(SWEEPS.c.id).where(SWEEPS.c.name == name)).scalar()
        if sweep_id is None:
            raise SweepNotFoundError(f"no sweep named {name!r}")
        return int(sweep_id)

    # -- sweeps -------------------------------------------------------------------------------

    def create_sweep(
        self,
        name: str,
        spec_yaml: str,
        spec: Mapping[str, Any],
        submitter: str | None = None,
        code_version: str | None = None,
        price_table: Any = None,
    ) -> dict[str, Any]:
        """Record a new sweep (status 'pending'); ValueError if the name is taken."""
        name = _name(name)
        if not isinstance(spec_yaml, str):
            raise ValueError(f"spec_yaml must be a string, got {type(spec_yaml).__name__}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"spec must be a dict, got {type(spec).__name__}")
        now = _utcnow()
        values = {
            "name": name,
            "status": "pending",
            "spec_yaml": spec_yaml,
            "spec": _jsonable(spec, "spec"),
            "submitter": _opt_str(submitter, "submitter", 200),
            "code_version": _opt_str(code_version, "code_version", 200),
            "price_table": _jsonable(price_table, "price_table"),
            "created_at": now,
            "updated_at": now,
        }
        taken = ValueError(f"a sweep named {name!r} already exists")
        try:
            with self._write() as conn:
                if conn.execute(sa.select(SWEEPS.c.id).where(SWEEPS.c.name == name)).first() is not None:
                    raise taken
                conn.execute(SWEEPS.insert().values(**values))
                row = conn.execute(sa.select(SWEEPS).where(SWEEPS.c.name == name)).one()
        except IntegrityError:  # lost a race with another process creating the same name
            raise taken from None
        return _sweep_dict(row)

    def get_sweep(self, name: str) -> dict[str, Any] | None:
        """The sweep as a dict, or None."""
        with self._read() as conn:
            row = conn.execute(sa.select(SWEEPS).where(SWEEPS.c.name == name)).first()
        return None if row is None else _sweep_dict(row)

    def list_sweeps(self) -> list[dict[str, Any]]:
        """All sweeps, newest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(SWEEPS).order_by(SWEEPS.c.created_at.desc(), SWEEPS.c.id.desc())).all()
        return [_sweep_dict(r) for r in rows]

    def update_sweep(self, name: str, /, **fields: Any) -> dict[str, Any]:
        """Set some of status, summary, optuna_study_name, started_at, finished_at, submitter,
        code_version, price_table; returns the updated sweep."""
        unknown = set(fields) - _SWEEP_UPDATABLE
        if unknown:
            raise ValueError(f"cannot update sweep field(s) {sorted(unknown)}; allowed: {sorted(_SWEEP_UPDATABLE)}")
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "status":
                if value not in SWEEP_STATUSES:
                    raise ValueError(f"status must be one of {list(SWEEP_STATUSES)}, got {value!r}")
                values[key] = value
            elif key in ("started_at", "finished_at"):
                values[key] = None if value is None else _aware(value, key)
            elif key in ("summary", "price_table"):
                values[key] = _jsonable(value, key)
            else:
                values[key] = _opt_str(value, key, _MAX_NAME)
        values["updated_at"] = _utcnow()
        with self._write() as conn:
            sweep_id = self._sweep_id(conn, name)
            conn.execute(SWEEPS.update().where(SWEEPS.c.id == sweep_id).values(**values))
            row = conn.execute(sa.select(SWEEPS).where(SWEEPS.c.id == sweep_id)).one()
        return _sweep_dict(row)

    def delete_sweep(self, name: str) -> bool:
        """Delete the sweep with its evaluations and fronts; False if there was none."""
        with self._write() as conn:
            sweep_id = conn.execute(sa.select(SWEEPS.c.id).where(SWEEPS.c.name == name)).scalar()
            if sweep_id is None:
                return False
            conn.execute(EVALUATIONS.delete().where(EVALUATIONS.c.sweep_id == sweep_id))
            conn.execute(FRONTS.delete().where(FRONTS.c.sweep_id == sweep_id))
            conn.execute(SWEEPS.delete().where(SWEEPS.c.id == sweep_id))
        return True

    # -- evaluations --------------------------------------------------------------------------

    def add_evaluations(self, name: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert evaluations in one transaction; rows whose config_key is already stored for
        this sweep are skipped. Returns the number of rows inserted.

        Row keys: config_key (str), config (dict), feasible (bool), and optional reason,
        metrics (dict; NaN/inf stored as null), objectives (list of finite floats or None),
        trial_number, evaluator, measured (bool, default False).
        """
        rows = list(rows)
        if not rows:
            return 0
        now = _utcnow()
        with self._write() as conn:
            sweep_id = self._sweep_id(conn, name)
            values: dict[str, dict[str, Any]] = {}
            for i, row in enumerate(rows):  # validate everything before writing anything
                value = _evaluation_row(row, i, sweep_id, now)
                values.setdefault(value["config_key"], value)
            stmt = (
                self._insert(EVALUATIONS)
                .on_conflict_do_nothing(index_elements=["sweep_id", "config_key"])
                .returning(EVALUATIONS.c.id)
            )
            result = conn.execute(stmt, list(values.values()))
            return len(result.all())

    def evaluated_keys(self, name: str) -> set[str]:
        """config_key of every stored evaluation of the sweep."""
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            return set(
                conn.execute(sa.select(EVALUATIONS.c.config_key).where(EVALUATIONS.c.sweep_id == sweep_id)).scalars()
            )

    def get_evaluations(
        self, name: str, keys: Iterable[str] | None = None, feasible_only: bool = False
    ) -> list[dict[str, Any]]:
        """Stored evaluations of the sweep in insertion order, optionally only `keys` / feasible."""
        wanted = None if keys is None else sorted(set(keys))
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            base = sa.select(EVALUATIONS).where(EVALUATIONS.c.sweep_id == sweep_id)
            if feasible_only:
                base = base.where(EVALUATIONS.c.feasible.is_(True))
            if wanted is None:
                rows = conn.execute(base.order_by(EVALUATIONS.c.id)).all()
            else:
                rows = []
                for start in range(0, len(wanted), _IN_CHUNK):
                    chunk = wanted[start : start + _IN_CHUNK]
                    rows.extend(conn.execute(base.where(EVALUATIONS.c.config_key.in_(chunk))).all())
                rows.sort(key=lambda r: r.id)
        return [_evaluation_dict(r) for r in rows]

    def count_evaluations(self, name: str) -> dict[str, int]:
        """{'total': n, 'feasible': m, 'measured': k} for the sweep (measured: by a probe)."""
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            total, feasible, measured = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((EVALUATIONS.c.feasible.is_(True), 1), else_=0)), 0),
                    sa.func.coalesce(sa.func.sum(sa.case((EVALUATIONS.c.measured.is_(True), 1), else_=0)), 0),
                ).where(EVALUATIONS.c.sweep_id == sweep_id)
            ).one()
        return {"total": int(total), "feasible": int(feasible), "measured": int(measured)}

    # -- fronts -------------------------------------------------------------------------------

    def save_front(
        self,
        name: str,
        kind: str,
        points: Iterable[Mapping[str, Any]],
        hypervolume: float | None = None,
        reference_point: Iterable[float] | None = None,
    ) -> dict[str, Any]:
        """Store a Pareto front snapshot ('exhaustive', 'guided', 'partial' (a checkpoint) or 'final'); returns it."""
        if kind not in FRONT_KINDS:
            raise ValueError(f"front kind must be one of {list(FRONT_KINDS)}, got {kind!r}")
        points = list(points)
        for i, p in enumerate(points):
            if not isinstance(p, Mapping):
                raise ValueError(f"front point {i} must be a dict, got {type(p).__name__}")
        values = {
            "kind": kind,
            "points": _jsonable(points, "points"),
            "hypervolume": None if hypervolume is None else _finite_float(hypervolume, "hypervolume"),
            "reference_point": _float_list(
                None if reference_point is None else list(reference_point), "reference_point"
            ),
            "created_at": _utcnow(),
        }
        with self._write() as conn:
            values["sweep_id"] = self._sweep_id(conn, name)
            front_id = conn.execute(FRONTS.insert().values(**values).returning(FRONTS.c.id)).scalar_one()
            row = conn.execute(sa.select(FRONTS).where(FRONTS.c.id == front_id)).one()
        return _front_dict(row, name)

    def save_calibration(
        self, name: str, kind: str, record: Mapping[str, Any], gpu: str | None = None, device: str | None = None
    ) -> dict[str, Any]:
        """Store a calibration record under a new name; ValueError if the name is taken."""
        name = _name(name)
        if kind not in CALIBRATION_KINDS:
            raise ValueError(f"calibration kind must be one of {list(CALIBRATION_KINDS)}, got {kind!r}")
        if not isinstance(record, Mapping):
            raise ValueError(f"calibration record must be a mapping, got {type(record).__name__}")
        values = {
            "name": name,
            "kind": kind,
            "gpu": _opt_str(gpu, "gpu", 64),
            "device": _opt_str(device, "device", 16),
            "record": _jsonable(dict(record), "record"),
            "created_at": _utcnow(),
        }
        with self._write() as conn:
            taken = conn.execute(sa.select(CALIBRATIONS.c.id).where(CALIBRATIONS.c.name == name)).first()
            if taken is not None:
                raise ValueError(f"a calibration named {name!r} already exists")
            cal_id = conn.execute(CALIBRATIONS.insert().values(**values).returning(CALIBRATIONS.c.id)).scalar_one()
            row = conn.execute(sa.select(CALIBRATIONS).where(CALIBRATIONS.c.id == cal_id)).one()
        return _calibration_dict(row)

    def get_calibration(self, name: str) -> dict[str, Any] | None:
        """The calibration named `name`, or None."""
        with self._read() as conn:
            row = conn.execute(sa.select(CALIBRATIONS).where(CALIBRATIONS.c.name == name)).first()
        return None if row is None else _calibration_dict(row)

    def latest_calibration(
        self, gpu: str | None = None, for_gpus: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The newest calibration (of `gpu` when given; with `for_gpus`, the newest that applies
        to one of them: a record of that GPU or one without a GPU, i.e. fitted to
        measurements), or None."""
        stmt = sa.select(CALIBRATIONS)
        if gpu is not None:
            stmt = stmt.where(CALIBRATIONS.c.gpu == gpu)
        if for_gpus is not None:
            stmt = stmt.where(sa.or_(CALIBRATIONS.c.gpu.is_(None), CALIBRATIONS.c.gpu.in_(list(for_gpus))))
        with self._read() as conn:
            row = conn.execute(stmt.order_by(CALIBRATIONS.c.id.desc()).limit(1)).first()
        return None if row is None else _calibration_dict(row)

    def list_calibrations(self) -> list[dict[str, Any]]:
        """Every calibration, newest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(CALIBRATIONS).order_by(CALIBRATIONS.c.id.desc())).all()
        return [_calibration_dict(r) for r in rows]

    def latest_front(self, name: str, kind: str | None = None) -> dict[str, Any] | None:
        """The most recently saved front of the sweep (of `kind` if given), or None."""
        if kind is not None and kind not in FRONT_KINDS:
            raise ValueError(f"front kind must be one of {list(FRONT_KINDS)}, got {kind!r}")
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            stmt = sa.select(FRONTS).where(FRONTS.c.sweep_id == sweep_id)
            if kind is not None:
                stmt = stmt.where(FRONTS.c.kind == kind)
            row = conn.execute(stmt.order_by(FRONTS.c.id.desc()).limit(1)).first()
        return None if row is None else _front_dict(row, name)
