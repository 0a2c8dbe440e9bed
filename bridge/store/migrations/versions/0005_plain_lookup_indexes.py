"""indexes for the per-event, per-delivery and sweeper lookups that a generic plan can use

psycopg prepares a statement on its sixth run; Postgres may then plan it once for any
parameters, and such a plan cannot use a partial index (`state = 'pending'`) when the
state is a parameter. The inbox's "earlier waiting events of this record" and the
deliveries' "one already waiting for this customer and target" fell back to indexes on
the system or the target alone (found by the 100,000-customer backfill benchmark).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_inbox_record", "inbox", ["system", "external_id", "id"])
    op.drop_index("ix_inbox_pending_record", table_name="inbox")
    # The composite's first column serves the customer_id foreign key as the old one did.
    op.create_index("ix_deliveries_customer_target_state", "deliveries", ["customer_id", "target", "state"])
    op.drop_index("ix_deliveries_customer_id", table_name="deliveries")
    # The sweeper's rules, each an index range rather than one OR over every waiting row.
    op.create_index("ix_deliveries_target_state_sent", "deliveries", ["target", "state", "enqueued_at"])
    op.drop_index("ix_deliveries_target_state", table_name="deliveries")
    op.create_index(
        "ix_inbox_retrying",
        "inbox",
        ["enqueued_at"],
        sqlite_where=sa.text("error IS NOT NULL"),
        postgresql_where=sa.text("error IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_retrying", table_name="inbox")
    op.create_index("ix_deliveries_target_state", "deliveries", ["target", "state"])
    op.drop_index("ix_deliveries_target_state_sent", table_name="deliveries")
    op.create_index("ix_deliveries_customer_id", "deliveries", ["customer_id"])
    op.drop_index("ix_deliveries_customer_target_state", table_name="deliveries")
    op.create_index(
        "ix_inbox_pending_record",
        "inbox",
        ["system", "external_id"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_index("ix_inbox_record", table_name="inbox")
