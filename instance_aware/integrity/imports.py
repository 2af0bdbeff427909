"""What a ``staged`` or ``pending`` record means once the registry stored
the data: the first full download settles it against the registry's
``os_hash_value`` (one image GET, once).

Stage.  ``PUT /stage`` records the digest of the staged bytes as
``staged``.  glance-direct stores them as they are unless an import
plugin (``image_conversion``, ``image_decompression``) rewrites them:

* equal digests: the record becomes ``recorded`` and is used as it is;
* different, and the configuration positively says an import plugin
  rewrites data (:mod:`.import_plugins`: Glance's ``[image_import_opts]
  image_import_plugins``, read from the service's files whether or not
  this process ran an import, or ``image_conversion_enabled``): the
  registry's digest, computed when the import stored the data, is adopted
  (source ``import``), so later changes to the stored file are caught;
* different otherwise (no rewriting plugin, or none that can be read):
  the staged file changed before the import stored it.  Alert, the record
  is marked ``tampered`` and the download is checked against the staged
  digest (and fails).

Imports the stack cannot see.  Glance fetches the bytes of a
``web-download`` or ``glance-download`` import itself: its 202 to ``POST
.../import`` for an image without a record leaves a ``pending`` one, and
the first full download adopts the digest Glance computed while storing
the data (source ``import``) and is checked against it.  A record the
image has is kept (glance-direct's staged digest; copy-image copies data
whose record covers every store).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import webob
from oslo_log import log as logging

from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.digests import Digest, Digests

LOG = logging.getLogger(__name__)


class Shown(NamedTuple):
    """The registry's digest of the data it stored."""

    algo: str
    value: str
    size: int


def shown(response: webob.Response) -> Shown | None:
    """The ``os_hash_algo``, ``os_hash_value`` and ``size`` of an image
    show, or ``None`` when the registry shows none (yet)."""
    if response.status_int != 200:
        return None
    try:
        document = response.json_body
        algo, value, size = (document['os_hash_algo'],
                             document['os_hash_value'], document['size'])
    except (ValueError, TypeError, KeyError):
        return None
    if not (isinstance(algo, str) and isinstance(value, str)
            and isinstance(size, int)):
        return None
    return Shown(algo, value, size)


def note(digests: Digests, image_id: str) -> None:
    """Note an accepted import of an image without a record: the registry
    fetches its bytes itself (web-download, glance-download)."""
    try:
        digests.expect_import(image_id)
    except store_errors.StoreError as exc:
        LOG.warning('Mapping database unavailable: the import of '
                    'image %s is not noted and its downloads will '
                    'not be checked: %s', image_id, exc)


def adopt(digests: Digests, record: Digest, found: Shown) -> Digest | None:
    """The registry's digest of data the stack did not see."""
    image_id = record.image_id
    LOG.info("Image %s: imported by the registry itself; its downloads "
             "are checked against the registry's %s digest computed "
             'at import', image_id, found.algo)
    return digests.record(image_id, algo=found.algo, digest=found.value,
                          size=found.size, source=models.IMPORT)


def settle_stage(digests: Digests, record: Digest, found: Shown,
                 rewriting: Callable[[], list[str]]) -> Digest | None:
    """What a staged digest means now that the import stored data;
    ``rewriting`` names the import plugins that may rewrite it."""
    image_id = record.image_id
    algo, value, size = found
    if (algo, value) == (record.algo, record.digest):
        digests.confirm(image_id, record.digest)
        return dataclasses.replace(record, state=models.RECORDED)
    plugins = rewriting()
    if not plugins:
        if algo != record.algo:
            # Not comparable here: the download compares the stored
            # bytes with the staged digest itself.
            digests.confirm(image_id, record.digest)
            return dataclasses.replace(record, state=models.RECORDED)
        LOG.error('ALERT: the staged data of image %s changed before '
                  'the import stored it (staged %s %s, stored %s); no '
                  'import plugin configured here rewrites data.  Image '
                  'marked tampered; its downloads fail.', image_id,
                  algo, record.digest, value)
        try:
            digests.mark_tampered(image_id, record.digest)
        except store_errors.StoreError as exc:
            LOG.warning('Mapping database unavailable: image %s is not '
                        'marked tampered: %s', image_id, exc)
        return dataclasses.replace(record, state=models.TAMPERED)
    LOG.info('Image %s: the import stored other data than was staged '
             '(import plugins %s rewrite it); its downloads are checked '
             "against the registry's %s digest computed at import",
             image_id, ', '.join(plugins), algo)
    return digests.record(image_id, algo=algo, digest=value,
                          size=size, source=models.IMPORT)
