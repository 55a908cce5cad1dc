"""Six nullable prediction columns: the served model's out-of-distribution check
(``in_distribution``, ``ood_score``) and, for DICOM uploads, what the header says of the
film (``modality``, ``view_position``, ``manufacturer``, ``bits_stored``; never a patient
identifier). Rows logged before keep null there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    return [
        sa.Column("in_distribution", sa.Boolean, nullable=True),
        sa.Column("ood_score", sa.Float, nullable=True),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("view_position", sa.String(16), nullable=True),
        sa.Column("manufacturer", sa.String(64), nullable=True),
        sa.Column("bits_stored", sa.Integer, nullable=True),
    ]


def upgrade() -> None:
    for column in _columns():
        op.add_column("predictions", column)


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:  # SQLite: copy and move
        for column in reversed(_columns()):
            batch.drop_column(column.name)
