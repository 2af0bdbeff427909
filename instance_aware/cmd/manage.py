"""``instance-aware-manage``: the operator's commands.

::

    instance-aware-manage [--config-file F ...] [--config-dir D] <command>

``db sync [--revision REV]``
    Create or upgrade the schema of the mapping database; safe to repeat.
``db version``
    The revision the database is at, and the newest one shipped.
``generate-installation-uuid``
    A fresh UUID identifying one Nova installation.  Stock Nova sends
    neither ``X-Nova-Installation-UUID`` nor the ``nova_installation_uuid``
    property: the deployment attaches it to that installation's requests.
``adopt [--dry-run] [--batch-size N] [--trust] [--endpoint URL]``
    Once, after deploying the stack: move the captured keys Glance stored
    for images created before it into the mapping database (then remove
    them from Glance), so filters and the query API find those images.
``digests list [--unverified] [--tampered] [--image ID] [--format F]``
    What the stack recorded of each image's data: where the digest comes
    from (upload, stage, import, none) and what downloads made of it.
``reconcile [--dry-run] [--batch-size N] [--pending-age S] [--endpoint URL]``
    Compare the mapping database with Glance and repair what a crash
    between the two writes, or a deletion that bypassed the stack, left
    behind.  Glance is reached as configured in ``[instance_aware_registry]``.
    Then the key manager operations that failed during requests (consumer
    registration, secret deletion) are retried with the service
    credentials of ``[instance_aware_keys]``.

The database is the one the filters use: ``[instance_aware] connection``
(unset: the SQLite file in ``state_path``).  Without ``--config-file``,
Glance API's own files are read, as ``glance-manage`` does, so the command
needs no flags on a Glance host; with no configuration file at all the
database commands refuse to guess.  ``db sync`` names the database first.

Exit codes: 0 done; 1 the database or the configuration could not be used
(one line on stderr, never a traceback: operators script these commands);
2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import uuid
from collections.abc import Iterator

import alembic.util
import requests
import sqlalchemy as sa
from keystoneauth1 import exceptions as ks_exceptions
from oslo_config import cfg
from sqlalchemy.engine import make_url

from instance_aware import config, database, version
from instance_aware.cmd import adopt as ia_adopt
from instance_aware.cmd import digests as digests_cmd
from instance_aware.cmd import glance
from instance_aware.cmd import reconcile as ia_reconcile
from instance_aware.keys import lifecycle
from instance_aware.keys import opts as key_opts
from instance_aware.store import engine as ia_engine
from instance_aware.store import errors, migration
from instance_aware.store.records import Records

PROG = 'instance-aware-manage'


class CommandError(Exception):
    """A failure reported to the operator as one line (exit code 1)."""


def _reason(exc: BaseException) -> str:
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


def _require_configuration(conf: cfg.ConfigOpts) -> None:
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


def _connection(conf: cfg.ConfigOpts) -> tuple[str, str]:
    """The configured URL, and how to show it (without the password)."""
    _require_configuration(conf)
    url = config.FilterConfig.load(conf).connection
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError as exc:
        # The parser's message repeats the URL, password included.
        raise CommandError('[instance_aware] connection is not an '
                           'SQLAlchemy URL') from exc
    return url, shown


@contextlib.contextmanager
def _database(conf: cfg.ConfigOpts) -> Iterator[sa.Engine]:
    """A private engine on the configured database, disposed after use."""
    url, shown = _connection(conf)
    engine: sa.Engine | None = None
    try:
        with errors.translated():
            engine = ia_engine.create_engine(
                url, connect_timeout=config.FilterConfig.load(
                    conf).db_connect_timeout)
            yield engine
    except (errors.StoreError, sa.exc.SQLAlchemyError, OSError,
            ImportError) as exc:
        raise CommandError(f'database {shown}: {_reason(exc)}') from exc
    finally:
        if engine is not None:
            engine.dispose()


def _store(engine: sa.Engine,
           settings: config.FilterConfig) -> ia_engine.Database:
    """The mapping database with this command's retry options."""
    return ia_engine.Database(engine, database.retry_policy(settings))


def _sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names an SQLite file that does not exist yet.

    ``db version`` must not create the file (and its directory) that
    connecting to it would.
    """
    parsed = make_url(url)
    database = parsed.database
    return (parsed.get_backend_name() == 'sqlite'
            and database not in (None, '', ':memory:')
            and not os.path.exists(str(database)))


def _sources(conf: cfg.ConfigOpts) -> str:
    """The configuration files read, for the operator to check."""
    files = [*conf.config_file]
    if conf.config_dir:
        files.append(f'{conf.config_dir}/*.conf')
    return ', '.join(files)


def db_sync(conf: cfg.ConfigOpts) -> int:
    """Create or upgrade the schema to ``--revision`` (default: head).

    The database is named on the first line, and a new SQLite file (the
    default when ``connection`` is unset) is announced: the operator sees
    which database the command chose from which files.
    """
    url, shown = _connection(conf)
    new_file = _sqlite_file_missing(url)
    print(f'Database: {shown} (configuration: {_sources(conf)})')
    if new_file:
        print(f'Creating the SQLite database file {make_url(url).database}'
              ' ([instance_aware] connection names a file that does not '
              'exist yet).')
    with _database(conf) as engine:
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


def db_version(conf: cfg.ConfigOpts) -> int:
    """Print the current revision (``None``: no schema yet) and the head."""
    url, _shown = _connection(conf)
    current: str | None = None
    if not _sqlite_file_missing(url):
        with _database(conf) as engine:
            current = migration.current(engine)
    head = migration.head()
    print(f'Current revision: {current}')
    print(f'Head revision: {head}')
    if current is None:
        print(f"The database has no schema yet: run '{PROG} db sync'.",
              file=sys.stderr)
    elif current != head:
        print(f"The schema is behind: run '{PROG} db sync'.",
              file=sys.stderr)
    return 0


def generate_installation_uuid(conf: cfg.ConfigOpts) -> int:
    """Print a fresh UUID4 (stdout) and what it is for (stderr)."""
    print(uuid.uuid4())
    print('The identity of one Nova installation: its snapshots carry it '
          'as the nova_installation_uuid image property or the '
          'X-Nova-Installation-UUID header. Stock Nova sends neither: the '
          'deployment adds it.', file=sys.stderr)
    return 0


def _registry_client(conf: cfg.ConfigOpts) -> glance.RegistryClient:
    """The registry as ``[instance_aware_registry]`` (or ``--endpoint``)
    says, or a one-line error."""
    try:
        return glance.RegistryClient.from_conf(conf,
                                                 conf.command.endpoint)
    except (ValueError, ks_exceptions.ClientException) as exc:
        raise CommandError(f'registry: {exc}') from exc


@contextlib.contextmanager
def _registry_errors(client: glance.RegistryClient,
                     consequence: str = '') -> Iterator[None]:
    """A registry that fails mid-command is one line, with what it left."""
    try:
        yield
    except (ks_exceptions.ClientException,
            requests.RequestException) as exc:
        raise CommandError(
            f'registry {client.endpoint}: {exc}{consequence}') from exc


def reconcile(conf: cfg.ConfigOpts) -> int:
    """Repair the store against the registry; print a summary.

    Exit code 1 when key operations failed again or could not be retried
    while some wait: cron must notice what still needs a hand.
    """
    options = conf.command
    _require_configuration(conf)
    client = _registry_client(conf)
    settings = config.FilterConfig.load(conf)
    with _database(conf) as engine:
        records = Records(_store(engine, settings), settings.registry_id)
        with _registry_errors(client, '; nothing after the last completed '
                                      'batch was changed'):
            summary = ia_reconcile.reconcile(
                records, client, dry_run=options.dry_run,
                batch_size=options.batch_size,
                pending_age=options.pending_age)
        keys = None if options.dry_run else _retry_keys(
            conf, records.db, settings.registry_id)
    if options.dry_run:
        print('Dry run: nothing was changed.')
    for line in summary.lines(options.dry_run):
        print(line)
    if keys is None:
        return 0
    print(keys.line)
    if keys.problem:
        print(f'{PROG}: error: {keys.problem}', file=sys.stderr)
        return 1
    return 0


@dataclasses.dataclass(frozen=True)
class _KeyRetries:
    """The key part of ``reconcile``: its summary line, and what failed
    (``None``: nothing)."""

    line: str
    problem: str | None = None


def _retry_keys(conf: cfg.ConfigOpts, db: ia_engine.Database,
                registry_id: str) -> _KeyRetries | None:
    """Finish the key operations a request could not (``failed`` rows).

    ``None`` when the key lifecycle is off.  Without service credentials
    (a configuration that never set ``[instance_aware_keys]``) the part is
    skipped with a line saying why and how many operations wait.
    """
    if not key_opts.KeyOptions.load(conf).enabled:
        return None
    try:
        keys = lifecycle.KeyLifecycle(conf, db, registry_id)
        contexts = lifecycle.service_contexts(conf)
    except cfg.Error as exc:
        waiting = lifecycle.count_failed(db, registry_id)
        line = (f'Key operations not retried: [{key_opts.GROUP}] is not '
                f'configured ({exc}); {waiting} failed key operations '
                'waiting.  Set its service credentials, or enabled = false '
                'where no key manager is deployed.')
        problem = (f'{waiting} failed key operations could not be retried'
                   if waiting else None)
        return _KeyRetries(line, problem)
    result = keys.retry_failed(contexts)
    line = (f'{result.retried} failed key operations retried: '
            f'{result.succeeded} succeeded, {result.failed} failed again, '
            f'{result.skipped} waiting for their image')
    problem = (f'{result.failed} key operations failed again (see the '
               'log)' if result.failed else None)
    return _KeyRetries(line, problem)


def adopt(conf: cfg.ConfigOpts) -> int:
    """Move keys Glance stored before the stack into the mapping store."""
    options = conf.command
    _require_configuration(conf)
    client = _registry_client(conf)
    with _registry_errors(client):
        stacked = client.behind_stack()
    if stacked:
        raise CommandError(
            f'{client.endpoint} answers through the instance-aware stack, '
            'which hides what Glance itself stores: point --endpoint at a '
            'glance-api without the filter (an internal one, or before '
            'the filter is enabled)')
    settings = config.FilterConfig.load(conf)
    wanted = ia_adopt.concerns(settings.instance_keys,
                               list(settings.encryption_formats))
    with _database(conf) as engine:
        records = Records(_store(engine, settings), settings.registry_id)
        with _registry_errors(client, '; images adopted so far stay '
                                      'adopted, run the command again'):
            summary = ia_adopt.adopt(
                records, client.images(options.batch_size),
                client.remove_properties, wanted,
                dry_run=options.dry_run, trust=options.trust)
    if options.dry_run:
        print('Dry run: nothing was changed.')
    for line in summary.lines(options.dry_run):
        print(line)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not positive')
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{value} is negative')
    return value


def add_command_parsers(
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Sub-commands, for :class:`oslo_config.cfg.SubCommandOpt`."""
    db = subparsers.add_parser('db', help='mapping database schema')
    actions = db.add_subparsers(dest='action', required=True,
                                title='Actions')
    sync = actions.add_parser(
        'sync', help='create or upgrade the schema (safe to repeat)')
    sync.add_argument('--revision', default='head',
                      help='revision to upgrade to (default: %(default)s)')
    sync.set_defaults(run=db_sync)
    version = actions.add_parser(
        'version', help='print the current and the newest revision')
    version.set_defaults(run=db_version)
    installation = subparsers.add_parser(
        'generate-installation-uuid',
        help='print a new UUID identifying a Nova installation')
    installation.set_defaults(run=generate_installation_uuid)
    repair = subparsers.add_parser(
        'reconcile', help='repair the mapping database against Glance')
    repair.add_argument('--dry-run', action='store_true',
                        help='report what would change, change nothing')
    repair.add_argument('--batch-size', type=_positive, default=100,
                        help='images asked of Glance per request '
                             '(default: %(default)s)')
    repair.add_argument('--pending-age', type=_not_negative, default=600,
                        help='seconds after which a pending record counts '
                             'as abandoned (default: %(default)s)')
    repair.add_argument('--endpoint', default=None,
                        help='image API URL, overriding '
                             '[instance_aware_registry] endpoint')
    repair.set_defaults(run=reconcile)
    moving = subparsers.add_parser(
        'adopt', help='move keys Glance stored before the stack into the '
                      'mapping database')
    moving.add_argument('--dry-run', action='store_true',
                        help='report what would move, change nothing')
    moving.add_argument('--batch-size', type=_positive, default=100,
                        help='images per registry page '
                             '(default: %(default)s)')
    moving.add_argument('--trust', action='store_true',
                        help='record adopted relations as trusted (only if '
                             'you know Nova set every one of them)')
    moving.add_argument('--endpoint', default=None,
                        help='image API URL, overriding '
                             '[instance_aware_registry] endpoint')
    moving.set_defaults(run=adopt)
    digests_cmd.add_parser(subparsers, _database)


def _default_config_files() -> list[str]:
    """Glance API's config files, then ours: the options live in the API's."""
    found = cfg.find_config_files(project='glance', prog='glance-api')
    own = cfg.find_config_files(project='glance', prog=PROG)
    return found + [path for path in own if path not in found]


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code is returned, never raised.

    A fresh :class:`~oslo_config.cfg.ConfigOpts` per call, not the global
    ``cfg.CONF``: the command may run several times in one process (tests).
    """
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    glance.register_opts(conf)
    key_opts.register_opts(conf)
    conf.register_cli_opt(cfg.SubCommandOpt(
        'command', title='Commands', handler=add_command_parsers))
    try:
        conf(argv, project='glance', prog=PROG,
             version=version.version_string(),
             default_config_files=_default_config_files())
    except SystemExit as exc:  # argparse: --help, or bad usage (2)
        return _exit_code(exc)
    except cfg.Error as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 2
    try:
        code: int = conf.command.run(conf)
    except (CommandError, cfg.Error) as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 1
    return code
