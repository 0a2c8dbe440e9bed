"""links remember the state our last write replaced, and the write in flight

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bridge.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("overwritten_values", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("overwritten_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pending_writes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_column("pending_writes")
        batch.drop_column("overwritten_at")
        batch.drop_column("overwritten_values")
