"""The mapping database as the console scripts open it.

The database is the one the filters use: ``[instance_aware] connection``
(unset: the SQLite file in ``state_path``).  The commands refuse to guess
it when no configuration file was read, never create an SQLite file only
to look at it, and turn a driver's failure into one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy.engine import make_url

from instance_aware import config, database
from instance_aware.cmd.console import CommandError
from instance_aware.store import engine as ia_engine
from instance_aware.store import errors
from instance_aware.store.records import Records


def reason(exc: BaseException) -> str:
    """The driver's own reason, first line only.

    SQLAlchemy appends the statement and a documentation link, psycopg2
    adds hints on further lines: none of it helps in a one-line error.
    """
    cause = exc
    while isinstance(cause, errors.StoreError) and cause.__cause__:
        cause = cause.__cause__
    if isinstance(cause, sa.exc.DBAPIError) and cause.orig is not None:
        cause = cause.orig
    args = cause.args
    if (len(args) == 2 and isinstance(args[0], int)
            and isinstance(args[1], str)):
        text = f'{args[1]} ({args[0]})'  # PyMySQL: (errno, message)
    else:
        text = str(cause)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def require_configuration(conf: cfg.ConfigOpts) -> None:
    """Refuse to guess the database when no configuration file was read.

    The fallback would be the default SQLite file of a Glance host
    (``/var/lib/glance``), rarely what an operator who forgot
    ``--config-file`` on another machine meant.
    """
    if not conf.config_file and not conf.config_dir:
        raise CommandError(
            'no configuration file found (looked for glance-api.conf in '
            '~/.glance/, ~/, /etc/glance/ and /etc/): pass --config-file '
            'with the [instance_aware] connection of the database')


def connection(conf: cfg.ConfigOpts) -> tuple[str, str]:
    """The configured URL, and how to show it (without the password)."""
    require_configuration(conf)
    url = config.FilterConfig.load(conf).connection
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError as exc:
        # The parser's message repeats the URL, password included.
        raise CommandError('[instance_aware] connection is not an '
                           'SQLAlchemy URL') from exc
    return url, shown


@contextlib.contextmanager
def opened(conf: cfg.ConfigOpts) -> Iterator[sa.Engine]:
    """A private engine on the configured database, disposed after use."""
    url, shown = connection(conf)
    engine: sa.Engine | None = None
    try:
        with errors.translated():
            engine = ia_engine.create_engine(
                url, connect_timeout=config.FilterConfig.load(
                    conf).db_connect_timeout)
            yield engine
    except (errors.StoreError, sa.exc.SQLAlchemyError, OSError,
            ImportError) as exc:
        raise CommandError(f'database {shown}: {reason(exc)}') from exc
    finally:
        if engine is not None:
            engine.dispose()


def store(engine: sa.Engine,
          settings: config.FilterConfig) -> ia_engine.Database:
    """The mapping database with this command's retry options."""
    return ia_engine.Database(
        engine, database.retry_policy(settings))


def records(engine: sa.Engine, settings: config.FilterConfig) -> Records:
    """The captured properties of this deployment, as the filters see
    them."""
    return Records(store(engine, settings), settings.registry_id)


def sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names an SQLite file that does not exist yet.

    ``db version`` must not create the file (and its directory) that
    connecting to it would.
    """
    parsed = make_url(url)
    database = parsed.database
    return (parsed.get_backend_name() == 'sqlite'
            and database not in (None, '', ':memory:')
            and not os.path.exists(str(database)))


def sources(conf: cfg.ConfigOpts) -> str:
    """The configuration files read, for the operator to check."""
    files = [*conf.config_file]
    if conf.config_dir:
        files.append(f'{conf.config_dir}/*.conf')
    return ', '.join(files)
