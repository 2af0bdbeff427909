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

Each command family has its module (``schema``, ``glance_commands``,
``key_retries``, ``digests``); this one holds the argparse wiring.

Exit codes: 0 done; 1 the database or the configuration could not be used
(one line on stderr, never a traceback: operators script these commands);
2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from oslo_config import cfg

from instance_aware import config, version
from instance_aware.cmd import (
    console,
    digests,
    glance,
    glance_commands,
    schema,
)
from instance_aware.cmd.console import CommandError
from instance_aware.keys import opts as key_opts

PROG = console.MANAGE


def generate_installation_uuid(conf: cfg.ConfigOpts) -> int:
    """Print a fresh UUID4 (stdout) and what it is for (stderr)."""
    print(uuid.uuid4())
    print('The identity of one Nova installation: its snapshots carry it '
          'as the nova_installation_uuid image property or the '
          'X-Nova-Installation-UUID header. Stock Nova sends neither: the '
          'deployment adds it.', file=sys.stderr)
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
    sync.set_defaults(run=schema.sync)
    revision = actions.add_parser(
        'version', help='print the current and the newest revision')
    revision.set_defaults(run=schema.version)

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
    repair.set_defaults(run=glance_commands.reconcile)

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
    moving.set_defaults(run=glance_commands.adopt)

    recorded = subparsers.add_parser(
        'digests', help='what the stack recorded and verified of image data')
    actions = recorded.add_subparsers(dest='action', required=True,
                                      title='Actions')
    listing = actions.add_parser(
        'list', help='each image record: digest source and state',
        description=digests.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    listing.add_argument('--unverified', action='store_true',
                         help='only records no full download verified '
                              'since they were recorded')
    listing.add_argument('--tampered', action='store_true',
                         help='only records marked tampered')
    listing.add_argument('--image', action='append', default=[],
                         metavar='IMAGE_ID',
                         help='only this image (repeatable); an image '
                              'without a record is listed as source none')
    listing.add_argument('--format', choices=('table', 'json'),
                         default='table',
                         help='output format (default: %(default)s)')
    listing.set_defaults(run=digests.list_digests)


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
             default_config_files=console.default_config_files())
    except SystemExit as exc:  # argparse: --help, or bad usage (2)
        return console.exit_code(exc)
    except cfg.Error as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 2
    try:
        code: int = conf.command.run(conf)
    except (CommandError, cfg.Error) as exc:
        print(f'{PROG}: error: {exc}', file=sys.stderr)
        return 1
    return code
