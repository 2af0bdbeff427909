"""``instance-aware-manage db sync`` and ``db version``: the schema.

Both name the database they chose, and from which files, before touching
it: an operator must see at once when the wrong configuration was read.
"""

from __future__ import annotations

import sys

import alembic.util
from oslo_config import cfg
from sqlalchemy.engine import make_url

from instance_aware.cmd import db
from instance_aware.cmd.console import MANAGE, CommandError
from instance_aware.store import migration


def sync(conf: cfg.ConfigOpts) -> int:
    """Create or upgrade the schema to ``--revision`` (default: head).

    The database is named on the first line, and a new SQLite file (the
    default when ``connection`` is unset) is announced: the operator sees
    which database the command chose from which files.
    """
    url, shown = db.connection(conf)
    new_file = db.sqlite_file_missing(url)
    print(f'Database: {shown} (configuration: {db.sources(conf)})')
    if new_file:
        print(f'Creating the SQLite database file {make_url(url).database}'
              ' ([instance_aware] connection names a file that does not '
              'exist yet).')
    with db.opened(conf) as engine:
        before = migration.current(engine)
        try:
            migration.upgrade(engine, conf.command.revision)
        except alembic.util.CommandError as exc:
            raise CommandError(str(exc)) from exc
        after = migration.current(engine)
    if before == after:
        print(f'Database schema already at revision {after}.')
    else:
        print(f'Database schema upgraded from revision {before} to '
              f'revision {after}.')
    return 0


def current(conf: cfg.ConfigOpts) -> str | None:
    """The revision the database is at (``None``: no schema yet), without
    creating an SQLite file that does not exist."""
    url, _shown = db.connection(conf)
    if db.sqlite_file_missing(url):
        return None
    with db.opened(conf) as engine:
        return migration.current(engine)


def version(conf: cfg.ConfigOpts) -> int:
    """Print the current revision (``None``: no schema yet) and the head."""
    now = current(conf)
    head = migration.head()
    print(f'Current revision: {now}')
    print(f'Head revision: {head}')
    if now is None:
        print(f"The database has no schema yet: run '{MANAGE} db sync'.",
              file=sys.stderr)
    elif now != head:
        print(f"The schema is behind: run '{MANAGE} db sync'.",
              file=sys.stderr)
    return 0
