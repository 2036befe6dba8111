"""svc_sweeps.status may be 'cancelled' (a sweep stopped through the HTTP API; its trials stay).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00

PostgreSQL drops and re-creates the CHECK constraint. SQLite cannot alter a constraint, and
Alembic's batch mode would copy and DROP the table — with foreign keys on (they always are
here, and the pragma cannot change inside the migration's transaction) dropping svc_sweeps
cascades to every stored evaluation and front. So on SQLite the table's CREATE statement is
edited in place, the procedure SQLite documents for loosening a CHECK constraint
(https://www.sqlite.org/lang_altertable.html#otheralter): every stored row satisfies the new
condition, and the file format does not change.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_svc_sweeps_status"
_OLD = "status IN ('pending', 'running', 'finished', 'failed', 'interrupted')"
_NEW = "status IN ('pending', 'running', 'finished', 'failed', 'interrupted', 'cancelled')"


def _sqlite_replace_check(old: str, new: str) -> None:
    conn = op.get_bind()
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'svc_sweeps'"
    ).scalar_one()
    if old not in sql:
        raise RuntimeError(f"svc_sweeps has an unexpected status constraint; expected CHECK ({old}) in: {sql}")
    version = int(conn.exec_driver_sql("PRAGMA schema_version").scalar_one())
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    conn.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'svc_sweeps'", (sql.replace(old, new),)
    )
    conn.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")  # connections reload the schema
    conn.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = conn.exec_driver_sql("PRAGMA integrity_check").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"integrity check after editing svc_sweeps failed: {problems}")


def _replace_check(old: str, new: str) -> None:
    if op.get_context().dialect.name == "sqlite":
        _sqlite_replace_check(old, new)
        return
    op.drop_constraint(op.f(_NAME), "svc_sweeps", type_="check")
    op.create_check_constraint(op.f(_NAME), "svc_sweeps", new)


def upgrade() -> None:
    """Allow status 'cancelled'."""
    _replace_check(_OLD, _NEW)


def downgrade() -> None:
    """Back to five statuses; cancelled sweeps become 'interrupted' (resumable either way)."""
    op.execute("UPDATE svc_sweeps SET status = 'interrupted' WHERE status = 'cancelled'")
    _replace_check(_NEW, _OLD)
