"""svc_fronts.kind may be 'analytic' or 'simulated': the fronts of a multi-fidelity sweep's stages
(`sampler: auto`), kept beside its final front.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 00:00:00

As in 0003: PostgreSQL drops and re-creates the CHECK constraint; SQLite's CREATE statement is
edited in place (loosening a CHECK constraint, https://www.sqlite.org/lang_altertable.html#otheralter),
because a batch-mode copy would drop the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_svc_fronts_kind"
_OLD = "kind IN ('exhaustive', 'guided', 'partial', 'final')"
_NEW = "kind IN ('exhaustive', 'guided', 'partial', 'final', 'analytic', 'simulated')"


def _sqlite_replace_check(old: str, new: str) -> None:
    conn = op.get_bind()
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'svc_fronts'"
    ).scalar_one()
    if old not in sql:
        raise RuntimeError(f"svc_fronts has an unexpected kind constraint; expected CHECK ({old}) in: {sql}")
    version = int(conn.exec_driver_sql("PRAGMA schema_version").scalar_one())
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    conn.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'svc_fronts'", (sql.replace(old, new),)
    )
    conn.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")  # connections reload the schema
    conn.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = conn.exec_driver_sql("PRAGMA integrity_check").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"integrity check after editing svc_fronts failed: {problems}")


def _replace_check(old: str, new: str) -> None:
    if op.get_context().dialect.name == "sqlite":
        _sqlite_replace_check(old, new)
        return
    op.drop_constraint(op.f(_NAME), "svc_fronts", type_="check")
    op.create_check_constraint(op.f(_NAME), "svc_fronts", new)


def upgrade() -> None:
    """Allow kinds 'analytic' and 'simulated'."""
    _replace_check(_OLD, _NEW)


def downgrade() -> None:
    """Back to four kinds; the stage fronts are dropped (the final front stays)."""
    op.execute("DELETE FROM svc_fronts WHERE kind IN ('analytic', 'simulated')")
    _replace_check(_NEW, _OLD)
