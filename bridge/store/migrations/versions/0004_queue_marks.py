"""how far each queue has been read, so the sweeper can tell lost messages from waiting ones

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bridge.store.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_marks",
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("sent_at", bridge.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("taken_mark", bridge.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("taken_at", bridge.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("settled_mark", bridge.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("queue"),
    )


def downgrade() -> None:
    op.drop_table("queue_marks")
