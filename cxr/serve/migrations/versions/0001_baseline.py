"""Baseline: the prediction log as it was before migrations (``metadata.create_all``).

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Frozen here (the image statistics' column names included), so that later changes to the
module's tables never change what this revision creates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STAT_COLUMNS = ["mean_intensity", "std_intensity", "entropy", "sharpness", "dark_fraction"]


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("model_tag", sa.String(200), nullable=False),
        sa.Column("covid_probability", sa.Float, nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        *[sa.Column(name, sa.Float, nullable=False) for name in STAT_COLUMNS],
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_table(
        "rejections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
    )
    op.create_index("ix_rejections_created_at", "rejections", ["created_at"])


def downgrade() -> None:
    op.drop_table("rejections")
    op.drop_table("predictions")
