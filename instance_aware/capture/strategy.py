"""How a list filtered on captured keys fetches its images (``list_strategy``).

The stack knows which images match; the registry must still show them, as
the caller may see them.  Two ways:

* ``registry``: one list request restricted to ``id=in:<matches>``.  Glance
  answers it with a UNION over every image the project can see, each arm
  restricted to the ids: one indexed query when the database's planner
  knows that an id is more selective than ``os_hidden = 0``.
  PostgreSQL and MySQL know it from their statistics.  SQLite knows it
  only after ``ANALYZE`` (``sqlite_stat1``); without it, its planner walks
  the ``os_hidden`` index, every row of the table (about a second at a
  million images).
* ``shows``: one show per match, a primary-key lookup whatever the
  planner: constant cost per image, but several requests.

``auto`` takes ``registry`` when the stack runs inside Glance (oslo.db's
``[database] connection`` is set) on a database server, or on SQLite with
statistics for Glance's ``images`` table; ``shows`` otherwise (SQLite
without statistics, or a registry elsewhere whose database is unknown).
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3

from oslo_config import cfg
from oslo_db import options as db_options
from oslo_log import log as logging
from sqlalchemy import engine as sa_engine
from sqlalchemy import exc as sa_exc

LOG = logging.getLogger(__name__)

GROUP_DATABASE = 'database'
SHOWS = 'shows'
AUTO = 'auto'


def registry_database(conf: cfg.ConfigOpts) -> str | None:
    """The registry's ``[database] connection`` when the stack runs in it.

    Glance registers oslo.db's options only when it first opens its
    database, maybe after our first request: they are registered here
    (the same option objects, so Glance's own registration agrees).
    """
    try:
        conf.register_opts(db_options.database_opts, GROUP_DATABASE)
        connection = conf[GROUP_DATABASE].connection
    except (cfg.Error, AttributeError):
        return None
    return str(connection) if connection else None


def sqlite_has_statistics(connection: str) -> bool:
    """Whether the SQLite database of ``connection`` holds planner
    statistics (``ANALYZE``) for Glance's ``images`` table.

    Read-only and once per process; anything unreadable counts as no
    statistics (the safe answer: shows cost the same either way).
    """
    try:
        database = sa_engine.make_url(connection).database
    except sa_exc.ArgumentError:
        return False
    if not database or database == ':memory:':
        return False
    try:
        # A URI, so the file is opened read-only and never created
        # (percent-encoded: a path may hold ``#`` or ``%``).
        uri = pathlib.Path(database).resolve().as_uri() + '?mode=ro'
        with contextlib.closing(sqlite3.connect(uri, uri=True,
                                                timeout=1)) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                "AND name = 'sqlite_stat1'").fetchone()
            if found is None:
                return False
            return conn.execute(
                "SELECT 1 FROM sqlite_stat1 WHERE tbl = 'images' "
                'LIMIT 1').fetchone() is not None
    except sqlite3.Error as exc:
        LOG.warning('Could not read the statistics of the registry '
                    'database %s (%s): filtered lists fetch images one '
                    'show at a time', database, exc)
        return False


def fetch_by_shows(strategy: str, conf: cfg.ConfigOpts) -> bool:
    """Whether filtered lists fetch their images one show at a time."""
    if strategy != AUTO:
        return strategy == SHOWS
    connection = registry_database(conf)
    if connection is None:
        return True  # a registry elsewhere: shows are safe on any database
    if not connection.startswith('sqlite'):
        return False
    shows = not sqlite_has_statistics(connection)
    if shows:
        LOG.info('The registry database is SQLite without statistics: '
                 'filtered lists fetch images one show at a time (run '
                 'ANALYZE on it and restart for one list request instead)')
    return shows
