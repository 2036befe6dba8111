"""Initial svc_* tables: sweeps, evaluations, fronts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Only `svc_*` tables belong here: Optuna's tables share the database and are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create svc_sweeps, svc_evaluations, svc_fronts."""
    op.create_table(
        "svc_sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec_yaml", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("submitter", sa.String(length=200), nullable=True),
        sa.Column("code_version", sa.String(length=200), nullable=True),
        sa.Column("price_table", sa.JSON(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("optuna_study_name", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'finished', 'failed', 'interrupted')",
            name=op.f("ck_svc_sweeps_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_svc_sweeps")),
        sa.UniqueConstraint("name", name=op.f("uq_svc_sweeps_name")),
    )
    op.create_table(
        "svc_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("config_key", sa.String(length=512), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("feasible", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("objectives", sa.JSON(), nullable=True),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("evaluator", sa.String(length=64), nullable=True),
        sa.Column("measured", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["svc_sweeps.id"],
            name=op.f("fk_svc_evaluations_sweep_id_svc_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_svc_evaluations")),
        sa.UniqueConstraint("sweep_id", "config_key", name=op.f("uq_svc_evaluations_sweep_id_config_key")),
    )
    op.create_index(op.f("ix_svc_evaluations_sweep_id"), "svc_evaluations", ["sweep_id"], unique=False)
    op.create_table(
        "svc_fronts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("hypervolume", sa.Float(), nullable=True),
        sa.Column("reference_point", sa.JSON(), nullable=True),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('exhaustive', 'guided', 'partial', 'final')", name=op.f("ck_svc_fronts_kind")),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["svc_sweeps.id"],
            name=op.f("fk_svc_fronts_sweep_id_svc_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_svc_fronts")),
    )
    op.create_index(op.f("ix_svc_fronts_sweep_id"), "svc_fronts", ["sweep_id"], unique=False)


def downgrade() -> None:
    """Drop the svc_* tables."""
    op.drop_index(op.f("ix_svc_fronts_sweep_id"), table_name="svc_fronts")
    op.drop_table("svc_fronts")
    op.drop_index(op.f("ix_svc_evaluations_sweep_id"), table_name="svc_evaluations")
    op.drop_table("svc_evaluations")
    op.drop_table("svc_sweeps")
