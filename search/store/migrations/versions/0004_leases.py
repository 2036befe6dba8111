"""svc_leases (a sweep's fencing token and its driver's heartbeat) and svc_sweeps.error (why a
sweep failed).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:40:00

Both only add: a table, and a nullable column (a plain ALTER TABLE ADD COLUMN on SQLite, no
table rebuild).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create svc_leases; add svc_sweeps.error."""
    op.create_table(
        "svc_leases",
        sa.Column("sweep_name", sa.String(length=200), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sweep_name", name=op.f("pk_svc_leases")),
    )
    op.add_column("svc_sweeps", sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop svc_leases and svc_sweeps.error."""
    op.drop_column("svc_sweeps", "error")  # ALTER TABLE DROP COLUMN (SQLite >= 3.35): no rebuild
    op.drop_table("svc_leases")
