"""Bodies across the proxy, within a deadline and a number of slots.

* The client's body goes upstream as it is read (:class:`RequestBody`).
* The upstream's body comes back as it arrives (:class:`ResponseBody`):
  each read returns what the upstream has sent so far, up to
  :data:`RESPONSE_CHUNK_SIZE`, instead of waiting for a full buffer, so
  the first bytes of a slow upstream go out at once, and a fault is seen
  by the client as soon as it happens.
* A :class:`Deadline` bounds the whole exchange (``transfer_timeout``),
  where the socket's read timeout bounds each wait only: an upstream that
  sends a byte a second never trips the latter.
* :class:`Slots` bound the exchanges one worker process runs at once
  (``max_concurrent_transfers``), so that a slow upstream cannot take
  every thread of the worker.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import urllib3
import urllib3.exceptions
from oslo_log import log as logging

from instance_aware.http import reading
from instance_aware.http.request import declared_length

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

LOG = logging.getLogger(__name__)

#: Bytes of a request body read and sent upstream at a time: Glance
#: reads 64 KiB at a time, and gunicorn copies what is left of a larger
#: chunk on every read of a chunked body.
CHUNK_SIZE = 64 * 1024
#: Most bytes of a response read from the upstream at a time (a read
#: returns what has arrived, often less).
RESPONSE_CHUNK_SIZE = 256 * 1024

#: What a failing exchange with the upstream raises.
UPSTREAM_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class TransferTimeout(Exception):
    """The exchange with the upstream outlived ``transfer_timeout``."""


class Deadline:
    """The end of an exchange's allowed time; ``seconds`` 0: none."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds if seconds > 0 else None

    def remaining(self) -> float | None:
        """Seconds left (at most 0), ``None`` without a deadline."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def check(self) -> None:
        """Raise :class:`TransferTimeout` once the time is over."""
        if self.expired:
            raise TransferTimeout(f'the exchange took more than '
                                  f'{self.seconds:g} seconds')


class Slot:
    """One exchange's place among :class:`Slots`; released once."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._semaphore.release()


class Slots:
    """At most ``size`` exchanges with the upstream at once (per worker
    process: the proxy is built after the fork)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = threading.BoundedSemaphore(size)

    def take(self) -> Slot | None:
        """A slot, or ``None`` at once when all are taken."""
        if not self._semaphore.acquire(blocking=False):
            return None
        return Slot(self._semaphore)


class RequestBody:
    """The client's body as an iterable of chunks, read as it is sent.

    Remembers a failure to read, so that an aborted upload is told apart
    from an upstream failure (urllib3 reports both as a broken request);
    stops with :class:`TransferTimeout` past the deadline.
    """

    def __init__(self, stream: Any, length: int | None,
                 deadline: Deadline) -> None:
        self.stream = stream
        self.remaining = length
        self.deadline = deadline
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[bytes]:
        while self.remaining is None or self.remaining > 0:
            self.deadline.check()
            chunk = self._read()
            if not chunk:
                return
            yield chunk

    def _read(self) -> bytes:
        size = CHUNK_SIZE if self.remaining is None else min(
            CHUNK_SIZE, self.remaining)
        try:
            chunk: bytes = self.stream.read(size)
            if not chunk and self.remaining:
                raise OSError(f'request body ended {self.remaining} '
                              'bytes early')
        except Exception as exc:
            self.error = exc
            raise
        if self.remaining is not None:
            self.remaining -= len(chunk)
        return chunk


def request_body(environ: WSGIEnvironment, deadline: Deadline
                 ) -> RequestBody | None:
    """The client's body to stream upstream, ``None`` when it has none."""
    stream = environ.get('wsgi.input')
    if stream is None:
        return None
    if 'chunked' in str(environ.get('HTTP_TRANSFER_ENCODING', '')).lower(
            ) or environ.get(reading.UNFRAMED):
        # Sent chunked: its length is unknown.
        return RequestBody(stream, None, deadline)
    length = declared_length(environ)
    if not length:
        return None
    return RequestBody(stream, length, deadline)


class ResponseBody:
    """The upstream response as the WSGI body: streamed, then released.

    :meth:`start` reads the first bytes before the status goes out, so a
    fault up to then is still an error response.  A fault later raises
    ``fault(exc)`` from the iterator: a filter that reads the body whole
    (every JSON document) answers with that error instead; a WSGI server
    that has sent the status drops the connection (the client sees a
    short body, or a chunked body without its end).

    A response read to its end gives its connection back to the pool;
    one closed earlier (the client went away, a fault) closes its
    connection.  Closing releases the exchange's :class:`Slot`.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, where: str,
                 deadline: Deadline, read_timeout: float,
                 slot: Slot | None = None,
                 fault: Callable[[Exception], Exception] | None = None
                 ) -> None:
        self.response = response
        self.where = where
        self.deadline = deadline
        self.read_timeout = read_timeout
        self.slot = slot
        self.fault = fault
        self.sent = 0
        self._first: bytes | None = None
        self._complete = False
        self._closed = False
        if slot is not None:
            # A body nobody closed still gives its slot back once it is
            # collected: the WSGI server always closes, but a middleware
            # that drops a response unread may not.
            weakref.finalize(self, slot.release)

    def start(self) -> None:
        """Wait for the first bytes (or the end of an empty body)."""
        self._first = self.read()

    def read(self) -> bytes:
        """What the upstream sent next, up to :data:`RESPONSE_CHUNK_SIZE`
        bytes; ``b''`` at the end of the body."""
        self.deadline.check()
        remaining = self.deadline.remaining()
        # The deadline comes first: the last wait is cut to what is left.
        limited = remaining is not None and remaining < self.read_timeout
        if limited:
            self._limit_wait(remaining or 0.0)
        try:
            chunk = self.response.read1(RESPONSE_CHUNK_SIZE,
                                        decode_content=False)
        except urllib3.exceptions.ReadTimeoutError as exc:
            if limited or self.deadline.expired:
                raise TransferTimeout(
                    f'the exchange took more than '
                    f'{self.deadline.seconds:g} seconds') from exc
            raise
        if not chunk:
            self._complete = True
        return chunk

    def _limit_wait(self, seconds: float) -> None:
        connection = getattr(self.response, 'connection', None)
        sock = getattr(connection, 'sock', None)
        if sock is not None:
            sock.settimeout(max(seconds, 0.001))

    def read_all(self) -> bytes:
        """The whole (small) body."""
        try:
            return b''.join(self)
        finally:
            self.close()

    def __iter__(self) -> Iterator[bytes]:
        try:
            chunk = self._first if self._first is not None else self.read()
            self._first = None
            while chunk:
                self.sent += len(chunk)
                yield chunk
                chunk = self.read()
        except (*UPSTREAM_ERRORS, TransferTimeout) as exc:
            # The status is out: only cutting the connection tells the
            # client that the body is incomplete.
            LOG.error('Upstream response to %s broke off after %d bytes: '
                      '%s', self.where, self.sent, exc)
            if self.fault is None:
                raise
            # An error response (webob): a filter that reads the body
            # whole answers with it; a server that started the response
            # drops the connection.
            raise self.fault(exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # Unread bytes left (length unknown, or not 0 as after HEAD,
            # 204, 304): the connection cannot carry another request.
            if not self._complete and self.response.length_remaining != 0:
                self.response.close()
            self.response.release_conn()
        finally:
            if self.slot is not None:
                self.slot.release()
