"""Alembic's environment for the report queue: run with the connection `reports.store`
hands over (config.attributes["connection"]), never from an alembic.ini, so the same
migrations serve SQLite and PostgreSQL and need no file beside the database."""

from __future__ import annotations

from alembic import context

from reports.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
