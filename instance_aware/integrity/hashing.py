"""Hashing image data as it streams, beside the transfer.

:class:`StreamHasher` feeds ``hashlib``-like objects, inline for the
first :data:`THREAD_THRESHOLD` bytes of a body and then in a thread of its
own; :class:`HashingReader` wraps ``wsgi.input`` for uploads.  Used by the
``data_integrity`` filter (:mod:`.data_integrity`) and its checked
download bodies (:mod:`.checked_body`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import blake3

from instance_aware.http import reading

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


class Hash(Protocol):
    """What :mod:`hashlib` and :mod:`blake3` hashers have in common."""

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

    def __init__(self, hasher: Hash, *more: Hash) -> None:
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

    def __init__(self, raw: Any, hasher: Hash, *more: Hash) -> None:
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


def fingerprinter() -> Hash:
    """A new BLAKE3 hasher (one thread: the cores serve the transfer)."""
    return blake3.blake3()
