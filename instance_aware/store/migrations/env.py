"""Alembic environment: runs on the engine given by the caller."""

from __future__ import annotations

from alembic import context

from instance_aware.store import models

config = context.config
engine = config.attributes['engine']

with engine.begin() as connection:
    context.configure(connection=connection,
                      target_metadata=models.Base.metadata,
                      render_as_batch=connection.dialect.name == 'sqlite')
    context.run_migrations()
