"""svc_shards: each finished shard of an exhaustive sweep, stored in the transaction that stores
its evaluations, so a resumed driver redoes only the shards that were in flight.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create svc_shards."""
    op.create_table(
        "svc_shards",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("covers", sa.JSON(), nullable=False),
        sa.Column("evaluated", sa.BigInteger(), nullable=False),
        sa.Column("feasible", sa.BigInteger(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("front", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["svc_sweeps.id"], name=op.f("fk_svc_shards_sweep_id_svc_sweeps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sweep_id", "shard", name=op.f("pk_svc_shards")),
    )


def downgrade() -> None:
    """Drop svc_shards."""
    op.drop_table("svc_shards")
