"""svc_calibrations: efficiency calibrations fitted from probes or end-to-end measurements.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create svc_calibrations."""
    op.create_table(
        "svc_calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("gpu", sa.String(length=64), nullable=True),
        sa.Column("device", sa.String(length=16), nullable=True),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('probe', 'measurements')", name=op.f("ck_svc_calibrations_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_svc_calibrations")),
        sa.UniqueConstraint("name", name=op.f("uq_svc_calibrations_name")),
    )


def downgrade() -> None:
    """Drop svc_calibrations."""
    op.drop_table("svc_calibrations")
