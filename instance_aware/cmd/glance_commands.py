"""``instance-aware-manage reconcile`` and ``adopt``: the commands that
read Glance.

Each opens a :class:`~instance_aware.cmd.glance.GlanceClient` as
``[instance_aware_registry]`` (or ``--endpoint``) says and the mapping
database, runs the tool of the same name, and prints its summary.  A
Glance that fails mid-command is one line saying what was left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import requests
from keystoneauth1 import exceptions as ks_exceptions
from oslo_config import cfg

from instance_aware import config
from instance_aware.cmd import adopt as adopt_tool
from instance_aware.cmd import db, key_retries
from instance_aware.cmd import reconcile as reconcile_tool
from instance_aware.cmd.console import CommandError
from instance_aware.cmd.glance import GlanceClient


def glance_client(conf: cfg.ConfigOpts) -> GlanceClient:
    """Glance as ``[instance_aware_registry]`` (or ``--endpoint``) says,
    or a one-line error."""
    try:
        return GlanceClient.from_conf(conf, conf.command.endpoint)
    except (ValueError, ks_exceptions.ClientException) as exc:
        raise CommandError(f'registry: {exc}') from exc


@contextlib.contextmanager
def glance_errors(client: GlanceClient,
                  consequence: str = '') -> Iterator[None]:
    """A Glance that fails mid-command is one line, with what it left."""
    try:
        yield
    except (ks_exceptions.ClientException,
            requests.RequestException) as exc:
        raise CommandError(
            f'registry {client.endpoint}: {exc}{consequence}') from exc


def reconcile(conf: cfg.ConfigOpts) -> int:
    """Repair the store against Glance; print a summary.

    Exit code 1 when key operations failed again or could not be retried
    while some wait: cron must notice what still needs a hand.
    """
    options = conf.command
    db.require_configuration(conf)
    client = glance_client(conf)
    settings = config.FilterConfig.load(conf)
    with db.opened(conf) as engine:
        records = db.records(engine, settings)
        with glance_errors(client, '; nothing after the last completed '
                                   'batch was changed'):
            summary = reconcile_tool.reconcile(
                records, client, dry_run=options.dry_run,
                batch_size=options.batch_size,
                pending_age=options.pending_age)
        keys = None if options.dry_run else key_retries.retry(
            conf, records.db, settings.registry_id)
    if options.dry_run:
        print('Dry run: nothing was changed.')
    for line in summary.lines(options.dry_run):
        print(line)
    if keys is None:
        return 0
    print(keys.line)
    if keys.problem:
        raise CommandError(keys.problem)
    return 0


def adopt(conf: cfg.ConfigOpts) -> int:
    """Move keys Glance stored before the stack into the mapping store."""
    options = conf.command
    db.require_configuration(conf)
    client = glance_client(conf)
    with glance_errors(client):
        stacked = client.behind_stack()
    if stacked:
        raise CommandError(
            f'{client.endpoint} answers through the instance-aware stack, '
            'which hides what Glance itself stores: point --endpoint at a '
            'glance-api without the filter (an internal one, or before '
            'the filter is enabled)')
    settings = config.FilterConfig.load(conf)
    wanted = adopt_tool.concerns(settings.instance_keys,
                                 list(settings.encryption_formats))
    with db.opened(conf) as engine:
        records = db.records(engine, settings)
        with glance_errors(client, '; images adopted so far stay '
                                   'adopted, run the command again'):
            summary = adopt_tool.adopt(
                records, client.images(options.batch_size),
                client.remove_properties, wanted,
                dry_run=options.dry_run, trust=options.trust)
    if options.dry_run:
        print('Dry run: nothing was changed.')
    for line in summary.lines(options.dry_run):
        print(line)
    return 0
