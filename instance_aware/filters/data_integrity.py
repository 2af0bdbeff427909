"""Filter ``data_integrity``: downloads checked against what was uploaded.

Image data is hashed as it streams through, never buffered: uploads
(``PUT /v2/images/{id}/file``) and stages (``PUT .../stage``) through a
reader wrapping ``wsgi.input``, full downloads (``GET .../file``) through
an iterator wrapping the registry's response; the chunks are never
copied.  Past the first few MiB of a body the hashing runs in a thread
of its own beside the transfer (:class:`StreamHasher`), so that it costs
the transfer little where a core is free.  The algorithm is Glance's
``os_hash_algo``: ``[DEFAULT] hashing_algorithm`` when Glance's options
are registered in the process, else this filter's paste key
``hashing_algorithm``, else sha512 (Glance's default).  In the same pass
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
* different, and plugins may rewrite data (Glance's ``[image_import_opts]
  image_import_plugins``; unknown until the process ran an import, then
  ``image_conversion_enabled`` decides): the registry's digest, computed
  when the import stored the data, is recorded instead (source
  ``import``), so later changes to the stored file are still caught;
* different while no plugin rewrites data: the staged file changed before
  the import stored it.  Alert; the download is checked against the
  staged digest (and fails).

Checking.  A full download (200, no ``Range`` nor Glance's legacy request
``Content-Range``) of an image with a record is hashed on the way out:
with BLAKE3 when the record has a fingerprint, else with the record's
algorithm (an ``import`` digest, a record from before fingerprints), and
then the fingerprint of the verified bytes is kept for the next ones.
The last non-empty chunk is held back until the registry's iterator is
exhausted.  On a mismatch that chunk is never sent, an ``ALERT`` is
logged at error level with the image id, the record is marked
``tampered`` and :class:`ImageDataMismatch` is raised.  The registry's
``Content-Length`` is already on the wire, so the client gets a short
body: a WSGI server closes the connection when the body iterator raises
after the headers went out (gunicorn logs "Error handling request" with
the traceback), and HTTP clients report an incomplete read, never
silently wrong bytes.  If not a byte was sent yet (a one-chunk image),
gunicorn answers 500 instead.  Every later download is checked again and
fails again; one that matches (the operator restored the file) is served
and the record is ``recorded`` again, ``tampered_at`` kept as history.
A matching download stamps ``verified_at``.  If the mapping database is
down the download is served unchecked, with a warning: images stay
available without it.  Range requests, ``HEAD``, other statuses and
images without a record (data uploaded around the stack, ``web-download``
imports, locations added by API) pass untouched, as do responses whose
status is unknown when the registry returns (webob applications, Glance
included, call ``start_response`` first).

Place in the stack: innermost, next to the registry, so the bytes hashed
are exactly the bytes the registry received and sent, whatever the outer
filters do; Glance's ``cache`` filter sits inside it in the pipeline, so
images served from Glance's image cache are checked too.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import blake3
from oslo_config import cfg
from oslo_log import log as logging

from instance_aware import reading
from instance_aware.filters import base
from instance_aware.request import Request
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.digests import Digest, Digests

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

LOG = logging.getLogger(__name__)

#: Glance's default ``hashing_algorithm``.
DEFAULT_ALGORITHM = 'sha512'
#: Paste key naming the algorithm when Glance's options are not loaded.
ALGORITHM_KEY = 'hashing_algorithm'
#: Glance import plugins known to store the staged bytes unchanged.
_KEEPING_PLUGINS = frozenset({'no_op', 'inject_image_metadata'})

_MIB = 1024 * 1024
#: Bytes of a body hashed in the request's own thread; past them the
#: hashing moves to a thread of its own (:class:`StreamHasher`).
THREAD_THRESHOLD = 4 * _MIB
#: Bytes handed to the hashing thread at a time (the body's own chunks,
#: never copied).
BATCH_SIZE = _MIB // 2
#: Batches waiting for the hashing thread: what a transfer holds in
#: memory beyond the server's own buffers is at most about
#: ``(QUEUE_DEPTH + 2) * BATCH_SIZE``.
QUEUE_DEPTH = 1


class ImageDataMismatch(Exception):
    """A download's data does not match the recorded digest.

    Raised from the response body after its last bytes were withheld, so
    the server aborts the transfer.
    """


class _Hash(Protocol):
    def update(self, data: bytes, /) -> object: ...

    def hexdigest(self) -> str: ...


class StreamHasher:
    """A ``hashlib`` object fed from a stream, hashing alongside it.

    The first :data:`THREAD_THRESHOLD` bytes are hashed inline.  Past
    them the chunks are collected in batches of :data:`BATCH_SIZE` bytes
    and hashed in order by a thread of this hasher's own while the
    request's thread goes on moving data: ``hashlib`` releases the GIL
    while it hashes a large buffer, so with a spare core the hashing
    overlaps the transfer instead of adding its whole time to it (sha512
    runs at about 1 GiB/s, slower than a local network or disk).  The
    bounded queue (:data:`QUEUE_DEPTH`) holds the transfer back when
    hashing is the slower side, so memory stays constant.

    The chunks are kept by reference, not copied: they must not change
    once handed over (``bytes`` never do; anything else is copied).
    :meth:`hexdigest` waits for the thread and ends it; :meth:`abandon`
    ends it without waiting (the transfer was cut short), after which the
    digest means nothing.  An :meth:`update` after either hashes inline.
    """

    def __init__(self, hasher: _Hash, *more: _Hash) -> None:
        self._hashers = (hasher, *more)
        self._inline = 0
        self._batch: list[bytes] = []
        self._batched = 0
        self._queue: queue.Queue[list[bytes] | None] | None = None
        self._thread: threading.Thread | None = None
        self._abandoned = False
        self._error: BaseException | None = None

    def update(self, data: bytes) -> None:
        if self._queue is None:
            for hasher in self._hashers:
                hasher.update(data)
            self._inline += len(data)
            if self._inline >= THREAD_THRESHOLD and self._thread is None:
                self._start()
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= BATCH_SIZE:
            self._queue.put(self._batch)
            self._batch = []
            self._batched = 0

    def _start(self) -> None:
        self._queue = queue.Queue(QUEUE_DEPTH)
        self._thread = threading.Thread(
            target=self._run, args=(self._queue,),
            name='instance-aware-hash', daemon=True)
        self._thread.start()

    def _run(self, batches: queue.Queue[list[bytes] | None]) -> None:
        updates = [hasher.update for hasher in self._hashers]
        while (batch := batches.get()) is not None:
            if self._abandoned or self._error is not None:
                continue  # drained, so that the producer never blocks
            try:
                for data in batch:
                    for update in updates:  # each chunk while in cache
                        update(data)
            except BaseException as exc:  # raised again by hexdigest()
                self._error = exc

    def _stop(self, flush: bool) -> threading.Thread | None:
        """Send the last batch (if ``flush``) and the end to the thread."""
        batches, self._queue = self._queue, None
        thread = self._thread
        if batches is not None:
            if flush and self._batch:
                batches.put(self._batch)
            self._batch = []
            self._batched = 0
            batches.put(None)
        return thread

    def hexdigests(self) -> tuple[str, ...]:
        """Each hasher's digest of everything given so far, in order
        (waits for the thread)."""
        thread = self._stop(flush=True)
        if thread is not None:
            thread.join()
        if self._abandoned:
            raise RuntimeError('the hashing was abandoned')
        if self._error is not None:
            raise self._error
        return tuple(hasher.hexdigest() for hasher in self._hashers)

    def hexdigest(self) -> str:
        """The first hasher's digest (see :meth:`hexdigests`)."""
        return self.hexdigests()[0]

    def abandon(self) -> None:
        """End the thread without waiting for it; the digest is lost."""
        if self._queue is not None:
            self._abandoned = True
            self._stop(flush=False)


class HashingReader:
    """A ``wsgi.input`` that hashes and counts what is read through it.

    Every read method of the WSGI input stream is wrapped; the bytes are
    handed on as they are (no copy) and hashed by a :class:`StreamHasher`.
    ``eof`` is set once a read returned nothing or read to the end: the
    end of a chunked body was reached.  :meth:`hexdigest` gives the digest
    once the body is read; :meth:`abandon` drops it otherwise.
    """

    def __init__(self, raw: Any, hasher: _Hash, *more: _Hash) -> None:
        # An input that is only iterable (Glance accepts one) is read
        # through a file interface.
        self._raw = raw if hasattr(raw, 'read') else (
            reading.IterableInput(raw))
        self._hasher = StreamHasher(hasher, *more)
        self.count = 0
        self.eof = False

    def _seen(self, data: bytes, size: int | None) -> bytes:
        if data:
            self._hasher.update(data)
            self.count += len(data)
        elif size != 0:
            self.eof = True
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            # Reads to the end of the body, by definition.
            data = self._seen(self._raw.read(), None)
            self.eof = True
            return data
        return self._seen(self._raw.read(size), size)

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._seen(self._raw.readline(), None)
        return self._seen(self._raw.readline(size), size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        close = getattr(self._raw, 'close', None)
        if close is not None:
            close()

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    def hexdigests(self) -> tuple[str, ...]:
        return self._hasher.hexdigests()

    def abandon(self) -> None:
        """Stop hashing (no digest will be asked for)."""
        self._hasher.abandon()


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a full download's bytes hashed to, against the record."""

    matched: bool
    size: int
    #: The record's ``algo`` digest, when the download was checked by it.
    digest: str | None
    #: The BLAKE3 fingerprint, when computed.
    fingerprint: str | None


def fingerprinter() -> _Hash:
    """A new BLAKE3 hasher (one thread: the cores serve the transfer)."""
    return blake3.blake3()


class CheckedBody:
    """A download body hashed on the way out, its end sent only if it
    matches ``expected``.

    Checked against the record's BLAKE3 fingerprint when it has one and
    ``fingerprint`` is on (about six times faster than sha512); else
    against its ``algo`` digest, computing the fingerprint alongside when
    ``fingerprint`` is on so that the next download is the fast one.
    ``finished(outcome)`` runs once the registry's iterator is exhausted:
    on a mismatch instead of sending the last non-empty chunk, on a match
    after sending it.
    """

    def __init__(self, body: Iterable[bytes], expected: Digest,
                 finished: Callable[[Outcome], None],
                 fingerprint: bool = True) -> None:
        self._body = body
        self._expected = expected
        self._finished = finished
        self._fingerprint = fingerprint
        self._iterator: Iterator[bytes] | None = None

    @property
    def by_fingerprint(self) -> bool:
        """Whether the check compares fingerprints."""
        return self._fingerprint and self._expected.fingerprint is not None

    def __iter__(self) -> Iterator[bytes]:
        if self._iterator is None:
            self._iterator = self._checked()
        return self._iterator

    def _hasher(self) -> StreamHasher:
        if self.by_fingerprint:
            return StreamHasher(fingerprinter())
        more = (fingerprinter(),) if self._fingerprint else ()
        return StreamHasher(hashlib.new(self._expected.algo), *more)

    def _outcome(self, values: tuple[str, ...], size: int) -> Outcome:
        expected = self._expected
        if self.by_fingerprint:
            return Outcome(matched=(values[0] == expected.fingerprint
                                    and size == expected.size),
                           size=size, digest=None, fingerprint=values[0])
        return Outcome(matched=(values[0] == expected.digest
                                and size == expected.size),
                       size=size, digest=values[0],
                       fingerprint=values[1] if len(values) > 1 else None)

    def _checked(self) -> Iterator[bytes]:
        hasher = self._hasher()
        update = hasher.update
        size = 0
        held: bytes | None = None
        try:
            for chunk in self._body:
                if not chunk:
                    continue
                update(chunk)
                size += len(chunk)
                if held is not None:
                    yield held
                held = chunk
            values = hasher.hexdigests()
        finally:
            # Cut short (the client went away, the registry failed): the
            # hashing thread ends without finishing.  No-op otherwise.
            hasher.abandon()
        outcome = self._outcome(values, size)
        if not outcome.matched:
            self._finished(outcome)
            raise ImageDataMismatch(
                f'data of image {self._expected.image_id} does not match '
                'its recorded digest; transfer aborted')
        if held is not None:
            yield held
        # After the last bytes went out: the client does not wait for it.
        self._finished(outcome)

    def close(self) -> None:
        try:
            if self._iterator is not None:
                self._iterator.close()  # type: ignore[attr-defined]
        finally:
            close = getattr(self._body, 'close', None)
            if close is not None:
                close()


class _Status:
    """``start_response`` that remembers the status it passed on."""

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.code: int | None = None

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Any = None) -> Callable[[bytes], object]:
        try:
            self.code = int(status.split(None, 1)[0])
        except (ValueError, IndexError):
            self.code = None
        return self._start_response(status, headers, exc_info)


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
        {'image_file', 'image_stage'})
    #: Image data is streamed through its WSGI call (never webob).
    DIRECT = False

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        refused = reading.refuse(environ, start_response)
        if refused is not None:
            return refused
        found = reading.of(environ)
        method, route = found.method, found.route
        if method not in ('GET', 'PUT'):
            return self.application(environ, start_response)
        image_id = route.image_id
        if (route.name not in self.ROUTES or image_id is None
                or not self.config.verify_image_data):
            return self.application(environ, start_response)
        if method == 'PUT':
            source = models.UPLOAD if route.name == 'image_file' else (
                models.STAGE)
            return self._upload(environ, start_response, image_id, source)
        if route.name == 'image_file' and not (
                'HTTP_RANGE' in environ or 'HTTP_CONTENT_RANGE' in environ):
            return self._download(environ, start_response, image_id)
        return self.application(environ, start_response)

    # -- configuration -----------------------------------------------------

    @functools.cached_property
    def digests(self) -> Digests:
        """The digests of this registry's images."""
        return Digests(self.database, self.config.registry_id)

    @property
    def algorithm(self) -> str:
        """Glance's ``hashing_algorithm``, else ours, else sha512."""
        try:
            name = self.oslo_conf.hashing_algorithm
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            name = None
        return str(name or self.conf.get(ALGORITHM_KEY) or DEFAULT_ALGORITHM)

    def _import_may_rewrite(self) -> bool | None:
        """Whether glance-direct may store other bytes than were staged.

        ``None`` when unknown: Glance registers its import options only
        when a process runs its first import.
        """
        try:
            plugins = self.oslo_conf.image_import_opts.image_import_plugins
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            return True if self.config.image_conversion_enabled else None
        return bool(set(plugins or ()) - _KEEPING_PLUGINS)

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

    # -- downloads ---------------------------------------------------------

    def _download(self, environ: WSGIEnvironment,
                  start_response: StartResponse,
                  image_id: str) -> Iterable[bytes]:
        status = _Status(start_response)
        body = self.application(environ, status)
        if status.code != 200:
            return body
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
        if record is not None and record.state == models.STAGED:
            return self._settle_stage(environ, record)
        return record

    def _registry_digest(self, environ: WSGIEnvironment,
                         image_id: str) -> tuple[str, str, int] | None:
        """The registry's ``(os_hash_algo, os_hash_value, size)``."""
        req = Request({k: v for k, v in environ.items()
                       if k != 'HTTP_ACCEPT'})
        response = self.subrequest(req, 'GET', f'/v2/images/{image_id}')
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

    def _settle_stage(self, environ: WSGIEnvironment,
                      record: Digest) -> Digest | None:
        """What a staged digest means now that the import stored data."""
        image_id = record.image_id
        shown = self._registry_digest(environ, image_id)
        if shown is None:
            LOG.warning('Image %s: the registry shows no digest yet; '
                        'served without checking its data', image_id)
            return None
        algo, value, size = shown
        rewrites = self._import_may_rewrite()
        if (algo, value) == (record.algo, record.digest) or (
                algo != record.algo and rewrites is False):
            self.digests.confirm(image_id, record.digest)
            return dataclasses.replace(record, state=models.RECORDED)
        if algo == record.algo and rewrites is False:
            LOG.error('ALERT: the staged data of image %s changed before '
                      'the import stored it (staged %s %s, stored %s); no '
                      'import plugin rewrites data here', image_id, algo,
                      record.digest, value)
            return record
        LOG.info('Image %s: the import stored other data than was staged '
                 '(import plugins may rewrite it); downloads are checked '
                 "against the registry's %s digest computed at import",
                 image_id, algo)
        return self.digests.record(image_id, algo=algo, digest=value,
                                   size=size, source=models.IMPORT)

    def _checked(self, expected: Digest, outcome: Outcome) -> None:
        """Log and store the outcome of a full download."""
        image_id = expected.image_id
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

