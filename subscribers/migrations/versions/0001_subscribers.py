"""Subscribers, their addresses, the change log, own lists and shared allowances.

Revision ID: s0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s0001"
down_revision = None
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.Column("allow_domains", sa.Text(), nullable=False),
        sa.Column("block_domains", sa.Text(), nullable=False),
        sa.Column("lists_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "subscriber_addresses",
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.String(100),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("session", sa.String(200), nullable=True),
    )
    op.create_index(
        "ix_subscriber_addresses_subscriber_id", "subscriber_addresses", ["subscriber_id"]
    )
    op.create_table(
        "subscriber_changes",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("subscriber_id", sa.String(100), nullable=True),
        sa.Column("policy", sa.String(100), nullable=True),
        sa.Column("lists_id", sa.Integer(), nullable=True),
    )
    op.create_table(
        "subscriber_lists",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.String(100), nullable=False),
        sa.Column("allow_domains", sa.Text(), nullable=False),
        sa.Column("block_domains", sa.Text(), nullable=False),
    )
    op.create_table(
        "subscriber_allowances",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("client", sa.String(200), primary_key=True),
        sa.Column("category", sa.String(100), primary_key=True),
        sa.Column("minute", sa.Integer(), primary_key=True),
    )


def downgrade() -> None:
    for table in (
        "subscriber_allowances",
        "subscriber_lists",
        "subscriber_changes",
        "subscriber_addresses",
        "subscribers",
    ):
        op.drop_table(table)
