"""Daily allowance minutes are counted per subscriber id (`subscriber_id`, as long as an
id), so a subscriber's devices share one allowance on every node and address.

Revision ID: s0002
Revises: s0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0002"
down_revision = "s0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The table was created empty by s0001 and never written: no rows to carry over.
    with op.batch_alter_table("subscriber_allowances") as batch:
        batch.alter_column(
            "client",
            new_column_name="subscriber_id",
            existing_type=sa.String(200),
            type_=sa.String(100),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriber_allowances") as batch:
        batch.alter_column(
            "subscriber_id",
            new_column_name="client",
            existing_type=sa.String(100),
            type_=sa.String(200),
            existing_nullable=False,
        )
