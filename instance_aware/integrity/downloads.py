"""Which downloads are checked, and what the end of a checked one means
for the image's record.

A full download is hashed on the way out: a 200 answer to ``GET
.../file``, or a 206 whose ``Content-Range`` (the registry's own statement
of what it sends, parsed by webob) covers the whole image (``bytes=0-``,
``bytes=-<size>``, ``bytes=0-<size or more>``).  Partial ranges pass
unchecked: their bytes cannot be compared with a digest of the whole.
Glance refuses requests for several ranges (400).

The check uses BLAKE3 when the record has a fingerprint, else the
record's algorithm (an ``import`` digest, a record from before
fingerprints), and then the fingerprint of the verified bytes is kept for
the next ones.  A mismatch logs an ``ALERT`` at error level with the image
id and marks the record ``tampered``; every later download is checked
again and fails again; one that matches (the operator restored the file)
is served and the record is ``recorded`` again, ``tampered_at`` kept as
history.  A matching download stamps ``verified_at``.
"""

from __future__ import annotations

import webob.byterange
from oslo_log import log as logging

from instance_aware.integrity.checked_body import Ending, Outcome
from instance_aware.store import errors as store_errors
from instance_aware.store.digests import Digest, Digests

LOG = logging.getLogger(__name__)


def whole_image(code: int | None, content_range: str | None) -> bool:
    """Whether a download answer carries the whole image: a 200, or a 206
    whose ``Content-Range`` (parsed by webob) runs from the first byte to
    the last of a known length."""
    if code == 200:
        return True
    if code != 206 or content_range is None:
        return False
    parsed = webob.byterange.ContentRange.parse(content_range)
    return (parsed is not None and parsed.length is not None
            and parsed.start == 0 and parsed.stop == parsed.length)


def settle(digests: Digests, expected: Digest, outcome: Outcome) -> None:
    """Log and store how a full download ended (once per download)."""
    image_id = expected.image_id
    if outcome.ending is Ending.ABANDONED:
        LOG.debug('Image %s: download closed after %d bytes, before its '
                  'end; not judged', image_id, outcome.size)
        return
    if outcome.ending is Ending.BROKEN_OFF:
        LOG.warning('Image %s: the registry broke off its download after '
                    '%d of %d bytes (%s); the transfer failed, its data '
                    'was not judged', image_id, outcome.size,
                    expected.size, outcome.error)
        return
    matched = outcome.matched
    if not matched:
        if outcome.digest is None:
            kind, recorded, got = ('blake3', expected.fingerprint,
                                   outcome.fingerprint)
        else:
            kind, recorded, got = (expected.algo, expected.digest,
                                   outcome.digest)
        LOG.error('ALERT: data of image %s does not match the digest '
                  'recorded at %s (%s %s, %d bytes); the download gave '
                  '%s over %d bytes.  Transfer cut short, image marked '
                  'tampered.', image_id, expected.recorded_at, kind,
                  recorded, expected.size, got, outcome.size)
    try:
        if matched:
            # A fingerprint first computed over verified bytes is kept.
            learned = (outcome.fingerprint
                       if expected.fingerprint is None else None)
            digests.mark_verified(image_id, expected.digest,
                                  fingerprint=learned)
        else:
            digests.mark_tampered(image_id, expected.digest)
    except store_errors.StoreError as exc:
        LOG.warning('Mapping database unavailable: the check of image '
                    '%s (%s) is not stored: %s', image_id,
                    'match' if matched else 'MISMATCH', exc)
