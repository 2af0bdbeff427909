"""``instance-aware-manage digests list``: what the stack can vouch for.

One line per image with a record in ``ia_image_data``: where its digest
comes from and what downloads made of it.  Sources:

``upload``
    computed by the stack over ``PUT /file``;
``stage``
    computed by the stack over ``PUT /stage``, then compared with the
    digest Glance computed when glance-direct stored the data;
``import``
    Glance's own digest, adopted: an import plugin configured to rewrite
    data changed what was staged, or Glance fetched the bytes itself
    (web-download, glance-download).  The stack never saw the bytes that
    digest was computed over;
``none``
    (an image named on the command line without a record) data the stack
    never saw: its downloads are not checked.

States: ``pending`` (an import the stack saw accepted; Glance's digest is
adopted at the first full download), ``staged`` (not compared with the
import yet), ``recorded``, ``tampered``.  ``VERIFIED`` is the last full
download that matched, ``TAMPERED`` the last one that did not.
"""

from __future__ import annotations

import datetime
import json

from oslo_config import cfg

from instance_aware import config
from instance_aware.cmd import db
from instance_aware.store import engine as ia_engine
from instance_aware.store import models
from instance_aware.store.digests import Digest, Digests

#: The help of ``digests list``: this docstring without its title.
DESCRIPTION = __doc__.split('\n\n', 1)[1] if __doc__ else None

#: What the stack computed or verified, per source.
SOURCES = {
    models.UPLOAD: 'computed by the stack at upload',
    models.STAGE: 'computed by the stack at stage, compared with the import',
    models.IMPORT: "adopted from the registry's import",
    'none': 'not seen by the stack: downloads not checked',
}

_COLUMNS = ('IMAGE', 'SOURCE', 'STATE', 'ALGO', 'SIZE', 'RECORDED',
            'VERIFIED', 'TAMPERED')


def _when(value: datetime.datetime | None) -> str | None:
    """ISO 8601 in UTC (the store keeps UTC)."""
    return None if value is None else value.strftime('%Y-%m-%dT%H:%M:%SZ')


def _row(record: Digest) -> dict[str, object]:
    return {
        'image_id': record.image_id, 'source': record.source,
        'state': record.state, 'algo': record.algo or None,
        'size': record.size if record.state != models.PENDING else None,
        'recorded_at': _when(record.recorded_at),
        'verified_at': _when(record.verified_at),
        'tampered_at': _when(record.tampered_at),
        'fingerprint': record.fingerprint is not None,
        'meaning': SOURCES[record.source],
    }


def _none(image_id: str) -> dict[str, object]:
    return {'image_id': image_id, 'source': 'none', 'state': None,
            'algo': None, 'size': None, 'recorded_at': None,
            'verified_at': None, 'tampered_at': None, 'fingerprint': False,
            'meaning': SOURCES['none']}


def _table(rows: list[dict[str, object]]) -> str:
    keys = ('image_id', 'source', 'state', 'algo', 'size', 'recorded_at',
            'verified_at', 'tampered_at')
    cells = [list(_COLUMNS)] + [
        ['-' if row[key] is None else str(row[key]) for key in keys]
        for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(keys))]
    return '\n'.join('  '.join(cell.ljust(width) for cell, width
                               in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


def list_digests(conf: cfg.ConfigOpts) -> int:
    """Print the records asked for; 0 always (an empty list is fine)."""
    args = conf.command
    settings = config.FilterConfig.load(conf)
    with db.opened(conf) as engine:
        digests = Digests(ia_engine.Database(engine),
                          settings.registry_id)
        records = digests.listing(unverified=args.unverified,
                                  tampered=args.tampered,
                                  image_ids=args.image)
    rows = [_row(record) for record in records]
    if args.image and not (args.unverified or args.tampered):
        found = {record.image_id for record in records}
        rows += [_none(image_id) for image_id in args.image
                 if image_id not in found]
    if args.format == 'json':
        print(json.dumps(rows, indent=2))
    elif rows:
        print(_table(rows))
    return 0


__all__ = ['DESCRIPTION', 'SOURCES', 'list_digests']
