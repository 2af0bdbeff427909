"""Schema migrations (Alembic), shipped in the package.

``instance-aware-manage db sync`` and the tests call these functions; no
``alembic.ini`` is needed on the host.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime import migration
from alembic.script import ScriptDirectory

MIGRATIONS = os.path.join(os.path.dirname(__file__), 'migrations')


def _config(engine: sa.Engine | None = None) -> Config:
    config = Config()
    config.set_main_option('script_location', MIGRATIONS)
    if engine is not None:
        config.attributes['engine'] = engine
    return config


def upgrade(engine: sa.Engine, revision: str = 'head') -> None:
    """Create or upgrade the schema to ``revision``; idempotent."""
    command.upgrade(_config(engine), revision)


def current(engine: sa.Engine) -> str | None:
    """The revision the database is at, ``None`` for an empty database."""
    with engine.connect() as connection:
        return migration.MigrationContext.configure(
            connection).get_current_revision()


def head() -> str:
    """The newest revision shipped with this package."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision
