"""Alembic's environment for the subscribers: run with the connection `subscribers.store`
hands over, like the report queue's (reports/migrations/env.py). Its own version table lets
both share one PostgreSQL database."""

from __future__ import annotations

from alembic import context

from subscribers.models import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="subscribers_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
