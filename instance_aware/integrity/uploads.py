"""Recording the digest of an upload or a stage the registry accepted.

After the registry answers 204, and only if the stack saw the whole body
go in (``Content-Length`` bytes, or the end of a chunked body), algorithm,
digest, fingerprint and size are recorded in ``ia_image_data``.  A short,
aborted or refused upload records nothing.  If the mapping database is
down then, the upload still succeeds (the registry has the data): the
failure is logged and that image's downloads go unchecked.
"""

from __future__ import annotations

from oslo_log import log as logging

from instance_aware.integrity.hashing import HashingReader
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.digests import Digests

LOG = logging.getLogger(__name__)


def record(digests: Digests, image_id: str, source: str, algo: str,
           reader: HashingReader, expected: int | None) -> None:
    """Record what ``reader`` saw as the data of ``image_id`` if it saw
    the whole body (``expected`` bytes, or to its end when ``None``)."""
    complete = (reader.count == expected if expected is not None
                else reader.eof)
    if not complete:
        LOG.warning('The registry accepted data for image %s but the '
                    'stack saw an incomplete body (%d of %s bytes); '
                    'its digest is not recorded', image_id, reader.count,
                    'unknown' if expected is None else expected)
        return
    state = models.STAGED if source == models.STAGE else models.RECORDED
    digest, *more = reader.hexdigests()
    try:
        digests.record(image_id, algo=algo, digest=digest,
                       size=reader.count, source=source, state=state,
                       fingerprint=more[0] if more else None)
    except store_errors.StoreError as exc:
        LOG.error('Mapping database unavailable: the digest of image '
                  '%s was not recorded and its downloads will not be '
                  'checked: %s', image_id, exc)
