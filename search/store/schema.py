"""The `svc_*` tables as SQLAlchemy models, their statuses and kinds, and the filters that keep
Alembic's autogenerate away from Optuna's tables."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_MAX_NAME = 200
_MAX_KEY = 512


SWEEP_STATUSES = ("pending", "running", "finished", "failed", "interrupted", "cancelled")
FRONT_KINDS = ("exhaustive", "guided", "partial", "final", "analytic", "simulated")
CALIBRATION_KINDS = ("probe", "measurements")
TABLE_PREFIX = "svc_"
VERSION_TABLE = "svc_alembic_version"


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
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # why it failed


class Lease(Base):
    """Who drives a sweep: a fencing token bumped by every acquisition (a write fenced with an
    older token is refused) and the holder's heartbeat (a `running` sweep whose heartbeat is
    stale has no live driver). The row outlives its holders, so tokens only ever grow."""

    __tablename__ = "svc_leases"

    sweep_name: Mapped[str] = mapped_column(sa.String(_MAX_NAME), primary_key=True)
    token: Mapped[int] = mapped_column(sa.BigInteger)
    holder: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)  # None: released
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Shard(Base):
    """A finished shard of an exhaustive sweep: its counts and Pareto front, stored with its
    evaluations in one transaction. `shard` -1 is the baseline a sweep checkpointed before
    shards were stored one by one: `covers` lists the shards it stands for."""

    __tablename__ = "svc_shards"

    sweep_id: Mapped[int] = mapped_column(sa.ForeignKey("svc_sweeps.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    covers: Mapped[Any] = mapped_column(sa.JSON)
    evaluated: Mapped[int] = mapped_column(sa.BigInteger)
    feasible: Mapped[int] = mapped_column(sa.BigInteger)
    reasons: Mapped[Any] = mapped_column(sa.JSON)
    front: Mapped[Any] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


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
LEASES: sa.Table = Lease.__table__  # type: ignore[assignment]
SHARDS: sa.Table = Shard.__table__  # type: ignore[assignment]


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
