"""an index of the inbox's waiting events by record, for ingesting them in order

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_inbox_pending_record",
        "inbox",
        ["system", "external_id"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_pending_record", table_name="inbox")
