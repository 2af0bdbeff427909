"""Filter ``data_integrity``: downloads checked against what was uploaded.

Image data is hashed as it streams through, never buffered: uploads
(``PUT /v2/images/{id}/file``) and stages (``PUT .../stage``) through a
reader wrapping ``wsgi.input``, full downloads (``GET .../file``) through
an iterator wrapping the registry's response; the chunks are never
copied.  Past the first few MiB of a body the hashing runs in a thread
of its own beside the transfer (:class:`StreamHasher`), so that it costs
the transfer little where a core is free.  The algorithm is Glance's
``os_hash_algo``: ``[DEFAULT] hashing_algorithm`` when Glance's options
are registered in the process, else this filter's option
``hashing_algorithm`` (sha512, Glance's default).  In the same pass
a BLAKE3 fingerprint of the bytes is computed (option
``fingerprint_image_data``, on by default): downloads are checked against
it, because sha512 (about 0.8 GiB/s a core) is slower than a download
from a local store, and BLAKE3 (about 6 GiB/s) is not, with the same
strength against a tampered file.  Option ``verify_image_data`` turns
everything off.

Recording.  After the registry answers 204, and only if the stack saw the
whole body go in (``Content-Length`` bytes, or the end of a chunked body),
algorithm, digest, fingerprint and size are recorded in
``ia_image_data``.  A short, aborted or refused upload records nothing.
If the mapping database is down then, the upload still succeeds (the
registry has the data): the failure is logged and that image's downloads
go unchecked.

Stage.  ``PUT /stage`` records the digest of the staged bytes as
``staged``.  glance-direct stores them as they are unless an import
plugin (``image_conversion``, ``image_decompression``) rewrites them, so
the first full download compares the staged digest with the registry's
``os_hash_value`` (one image GET, once):

* equal: the record becomes ``recorded`` and is used as it is;
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

Checking.  A full download is hashed on the way out: a 200 answer to
``GET .../file``, or a 206 whose ``Content-Range`` (the registry's own
statement of what it sends, parsed by webob) covers the whole image
(``bytes=0-``, ``bytes=-<size>``, ``bytes=0-<size or more>``).  Partial
ranges pass unchecked: their bytes cannot be compared with a digest of
the whole.  Glance refuses requests for several ranges (400).  The check
uses BLAKE3 when the record has a fingerprint, else the record's
algorithm (an ``import`` digest, a record from before fingerprints), and
then the fingerprint of the verified bytes is kept for the next ones.
The last non-empty chunk is held back until the registry's iterator
ends.  On a mismatch that chunk is never sent, an ``ALERT`` is logged at
error level with the image id, the record is marked ``tampered`` and
:class:`ImageDataMismatch` is raised.  The registry's ``Content-Length``
is already on the wire, so the client gets a short body: a WSGI server
closes the connection when the body iterator raises after the headers
went out (gunicorn logs "Error handling request" with the traceback), and
HTTP clients report an incomplete read, never silently wrong bytes.  If
not a byte was sent yet (a one-chunk image), gunicorn answers 500
instead.  Every later download is checked again and fails again; one that
matches (the operator restored the file) is served and the record is
``recorded`` again, ``tampered_at`` kept as history.  A matching download
stamps ``verified_at``.

How a body ends (:class:`Ending`) is decided exactly once, however it
ends: the registry's iterator is exhausted (judged), it raises
(Glance's image cache raises "Checksum verification failed" at the end of
a changed file: judged like an exhausted one once the recorded size
arrived, the registry's error is raised again; before that size the
transfer is *broken off*, logged, not marked: a failure to read is no
evidence of tampering), or the server closes the body before its end (the
client went away: *abandoned*, nothing judged).

If the mapping database is down the download is served unchecked, with a
warning: images stay available without it.  ``HEAD``, other statuses and
images without a record (data uploaded around the stack, locations added
by API) pass untouched, as do responses whose status is unknown when the
registry returns (webob applications, Glance included, call
``start_response`` first).

Place in the stack: innermost, next to the registry, so the bytes hashed
are exactly the bytes the registry received and sent, whatever the outer
filters do; Glance's ``cache`` filter sits inside it in the pipeline, so
images served from Glance's image cache are checked too.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import webob.byterange
from oslo_config import cfg
from oslo_log import log as logging

from instance_aware.filters import base
from instance_aware.http import reading
from instance_aware.http.request import Request
from instance_aware.integrity import import_plugins
from instance_aware.integrity.checked_body import (
    CheckedBody,
    Ending,
    ImageDataMismatch,
    Outcome,
)
from instance_aware.integrity.hashing import (
    BATCH_SIZE,
    THREAD_THRESHOLD,
    HashingReader,
    StreamHasher,
    fingerprinter,
)
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.digests import Digest, Digests

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

LOG = logging.getLogger(__name__)

#: Glance's default ``hashing_algorithm``.
DEFAULT_ALGORITHM = 'sha512'

__all__ = ['BATCH_SIZE', 'THREAD_THRESHOLD', 'CheckedBody',
           'DataIntegrityFilter', 'Ending', 'HashingReader',
           'ImageDataMismatch', 'Outcome', 'StreamHasher', 'fingerprinter',
           'whole_image']


class _Status:
    """``start_response`` that remembers the status and headers it passed
    on."""

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.code: int | None = None
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Any = None) -> Callable[[bytes], object]:
        try:
            self.code = int(status.split(None, 1)[0])
        except (ValueError, IndexError):
            self.code = None
        self.headers = headers
        return self._start_response(status, headers, exc_info)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


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


def _content_length(environ: WSGIEnvironment) -> int | None:
    if 'chunked' in environ.get('HTTP_TRANSFER_ENCODING', '').lower():
        return None
    try:
        return int(environ['CONTENT_LENGTH'])
    except (KeyError, TypeError, ValueError):
        return None


class DataIntegrityFilter(base.Filter):
    """Record the digest of uploaded data; check full downloads."""

    ROUTES: ClassVar[frozenset[str | None]] = frozenset(
        {'image_file', 'image_stage', 'image_import'})
    #: Image data is streamed through its WSGI call (never webob).
    DIRECT = False

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        refused = reading.refuse(environ, start_response)
        if refused is not None:
            return refused
        found = reading.of(environ)
        method, route = found.method, found.route
        if method not in ('GET', 'PUT', 'POST'):
            return self.application(environ, start_response)
        image_id = route.image_id
        if (route.name not in self.ROUTES or image_id is None
                or not self.config.verify_image_data):
            return self.application(environ, start_response)
        if method == 'POST':
            if route.name == 'image_import':
                return self._import(environ, start_response, image_id)
            return self.application(environ, start_response)
        if method == 'PUT':
            source = models.UPLOAD if route.name == 'image_file' else (
                models.STAGE)
            return self._upload(environ, start_response, image_id, source)
        if route.name == 'image_file':
            return self._download(environ, start_response, image_id)
        return self.application(environ, start_response)

    # -- configuration -----------------------------------------------------

    @functools.cached_property
    def digests(self) -> Digests:
        """The digests of this registry's images."""
        return Digests(self.database, self.config.registry_id)

    @property
    def algorithm(self) -> str:
        """Glance's ``hashing_algorithm``, else ours (default sha512)."""
        try:
            name = self.oslo_conf.hashing_algorithm
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            name = None
        return str(name or self.config.hashing_algorithm or DEFAULT_ALGORITHM)

    def _rewriting_plugins(self) -> list[str]:
        """Import plugins that the configuration says may rewrite data."""
        return import_plugins.rewriting(
            self.oslo_conf, self.config.image_conversion_enabled)

    # -- uploads -----------------------------------------------------------

    def _upload(self, environ: WSGIEnvironment,
                start_response: StartResponse, image_id: str,
                source: str) -> Iterable[bytes]:
        algo = self.algorithm
        try:
            hasher = hashlib.new(algo)
        except ValueError:
            LOG.error('Unknown hashing algorithm %r: data of image %s is '
                      'not recorded', algo, image_id)
            return self.application(environ, start_response)
        more = ((fingerprinter(),) if self.config.fingerprint_image_data
                else ())
        reader = HashingReader(environ['wsgi.input'], hasher, *more)
        environ['wsgi.input'] = reader
        status = _Status(start_response)
        try:
            body = self.application(environ, status)
            if status.code == 204:
                self._record(environ, image_id, source, algo, reader)
        finally:
            reader.abandon()  # no-op once the digest was taken
        return body

    def _record(self, environ: WSGIEnvironment, image_id: str, source: str,
                algo: str, reader: HashingReader) -> None:
        expected = _content_length(environ)
        complete = (reader.count == expected if expected is not None
                    else reader.eof)
        if not complete:
            LOG.warning('The registry accepted data for image %s but the '
                        'stack saw an incomplete body (%d of %s bytes); '
                        'its digest is not recorded', image_id,
                        reader.count,
                        'unknown' if expected is None else expected)
            return
        state = models.STAGED if source == models.STAGE else models.RECORDED
        digest, *more = reader.hexdigests()
        try:
            self.digests.record(image_id, algo=algo, digest=digest,
                                size=reader.count, source=source,
                                state=state,
                                fingerprint=more[0] if more else None)
        except store_errors.StoreError as exc:
            LOG.error('Mapping database unavailable: the digest of image '
                      '%s was not recorded and its downloads will not be '
                      'checked: %s', image_id, exc)

    # -- imports -----------------------------------------------------------

    def _import(self, environ: WSGIEnvironment,
                start_response: StartResponse,
                image_id: str) -> Iterable[bytes]:
        """Note an accepted import of an image without a record: the
        registry fetches its bytes itself (web-download, glance-download),
        so its digest is adopted at the first full download."""
        status = _Status(start_response)
        body = self.application(environ, status)
        if status.code == 202:
            try:
                self.digests.expect_import(image_id)
            except store_errors.StoreError as exc:
                LOG.warning('Mapping database unavailable: the import of '
                            'image %s is not noted and its downloads will '
                            'not be checked: %s', image_id, exc)
        return body

    # -- downloads ---------------------------------------------------------

    def _download(self, environ: WSGIEnvironment,
                  start_response: StartResponse,
                  image_id: str) -> Iterable[bytes]:
        status = _Status(start_response)
        body = self.application(environ, status)
        if not whole_image(status.code, status.header('Content-Range')):
            return body  # partial, refused, or status not known yet
        try:
            expected = self._expected(environ, image_id)
        except store_errors.StoreError as exc:
            LOG.warning('Mapping database unavailable: image %s is served '
                        'without checking its data: %s', image_id, exc)
            return body
        except BaseException:
            close = getattr(body, 'close', None)
            if close is not None:
                close()
            raise
        if expected is None:
            return body
        return CheckedBody(body, expected,
                           functools.partial(self._checked, expected),
                           fingerprint=self.config.fingerprint_image_data)

    def _expected(self, environ: WSGIEnvironment,
                  image_id: str) -> Digest | None:
        record = self.digests.get(image_id)
        if record is None or record.state not in (models.STAGED,
                                                  models.PENDING):
            return record
        # Data the registry stored since: its digest settles the record.
        shown = self._registry_digest(environ, image_id)
        if shown is None:
            LOG.warning('Image %s: the registry shows no digest yet; '
                        'served without checking its data', image_id)
            return None
        if record.state == models.STAGED:
            return self._settle_stage(record, shown)
        return self._adopt_import(record, shown)

    def _registry_digest(self, environ: WSGIEnvironment,
                         image_id: str) -> tuple[str, str, int] | None:
        """The registry's ``(os_hash_algo, os_hash_value, size)``."""
        req = Request({k: v for k, v in environ.items()
                       if k != 'HTTP_ACCEPT'})
        response = self.show_image(req, image_id)
        if response.status_int != 200:
            return None
        try:
            shown = response.json_body
            algo, value, size = (shown['os_hash_algo'],
                                 shown['os_hash_value'], shown['size'])
        except (ValueError, TypeError, KeyError):
            return None
        if not (isinstance(algo, str) and isinstance(value, str)
                and isinstance(size, int)):
            return None
        return algo, value, size

    def _adopt_import(self, record: Digest,
                      shown: tuple[str, str, int]) -> Digest | None:
        """The registry's digest of data the stack did not see."""
        image_id = record.image_id
        algo, value, size = shown
        LOG.info("Image %s: imported by the registry itself; its downloads "
                 "are checked against the registry's %s digest computed "
                 'at import', image_id, algo)
        return self.digests.record(image_id, algo=algo, digest=value,
                                   size=size, source=models.IMPORT)

    def _settle_stage(self, record: Digest,
                      shown: tuple[str, str, int]) -> Digest | None:
        """What a staged digest means now that the import stored data."""
        image_id = record.image_id
        algo, value, size = shown
        if (algo, value) == (record.algo, record.digest):
            self.digests.confirm(image_id, record.digest)
            return dataclasses.replace(record, state=models.RECORDED)
        rewriting = self._rewriting_plugins()
        if not rewriting:
            if algo != record.algo:
                # Not comparable here: the download compares the stored
                # bytes with the staged digest itself.
                self.digests.confirm(image_id, record.digest)
                return dataclasses.replace(record, state=models.RECORDED)
            LOG.error('ALERT: the staged data of image %s changed before '
                      'the import stored it (staged %s %s, stored %s); no '
                      'import plugin configured here rewrites data.  Image '
                      'marked tampered; its downloads fail.', image_id,
                      algo, record.digest, value)
            try:
                self.digests.mark_tampered(image_id, record.digest)
            except store_errors.StoreError as exc:
                LOG.warning('Mapping database unavailable: image %s is not '
                            'marked tampered: %s', image_id, exc)
            return dataclasses.replace(record, state=models.TAMPERED)
        LOG.info('Image %s: the import stored other data than was staged '
                 '(import plugins %s rewrite it); its downloads are checked '
                 "against the registry's %s digest computed at import",
                 image_id, ', '.join(rewriting), algo)
        return self.digests.record(image_id, algo=algo, digest=value,
                                   size=size, source=models.IMPORT)

    def _checked(self, expected: Digest, outcome: Outcome) -> None:
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
                self.digests.mark_verified(image_id, expected.digest,
                                           fingerprint=learned)
            else:
                self.digests.mark_tampered(image_id, expected.digest)
        except store_errors.StoreError as exc:
            LOG.warning('Mapping database unavailable: the check of image '
                        '%s (%s) is not stored: %s', image_id,
                        'match' if matched else 'MISMATCH', exc)
