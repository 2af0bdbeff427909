"""A download body checked against a recorded digest on its way out.

:class:`CheckedBody` hashes the registry's chunks as they pass, holds the
last non-empty one back until the registry's iterator ends, and sends it
only if the whole matches.  How the body ended is decided exactly once,
whichever way it ends, and handed to a callback (the ``data_integrity``
filter marks the record and alerts):

* the registry's iterator is exhausted: the bytes are judged
  (:attr:`Ending.MATCHED` or :attr:`Ending.MISMATCHED`);
* the registry's iterator raises (Glance's image cache does at the end of
  a changed file): judged the same way once the recorded size arrived,
  else :attr:`Ending.BROKEN_OFF`; the registry's error is raised again;
* the server closes the body first (the client went away), started or
  not: :attr:`Ending.ABANDONED`, nothing judged.

A match is reported once its last chunk went out (when the server asks
for more, or closes the body), so the client never waits for it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Callable, Generator, Iterable, Iterator

from oslo_log import log as logging

from instance_aware.integrity.hashing import StreamHasher, fingerprinter
from instance_aware.store.digests import Digest

LOG = logging.getLogger(__name__)


class ImageDataMismatch(Exception):
    """A download's data does not match the recorded digest.

    Raised from the response body after its last bytes were withheld, so
    the server aborts the transfer.
    """


class Ending(enum.Enum):
    """How a checked body ended."""

    #: Every byte arrived and matches the record.
    MATCHED = 'matched'
    #: Every byte the registry had arrived and does not match.
    MISMATCHED = 'mismatched'
    #: The registry raised before the recorded size arrived: no verdict.
    BROKEN_OFF = 'broken off'
    #: Closed by the server before the registry's end: no verdict.
    ABANDONED = 'abandoned'


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a download ended and what its bytes hashed to."""

    ending: Ending
    size: int
    #: The record's ``algo`` digest, when the download was checked by it.
    digest: str | None = None
    #: The BLAKE3 fingerprint, when computed.
    fingerprint: str | None = None
    #: What the registry's iterator raised, if it did.
    error: BaseException | None = None

    @property
    def matched(self) -> bool:
        return self.ending is Ending.MATCHED

    @property
    def judged(self) -> bool:
        """Whether the bytes were compared with the record."""
        return self.ending in (Ending.MATCHED, Ending.MISMATCHED)


class CheckedBody:
    """A download body hashed on the way out, its end sent only if it
    matches ``expected``.

    Checked against the record's BLAKE3 fingerprint when it has one and
    ``fingerprint`` is on (about six times faster than sha512); else
    against its ``algo`` digest, computing the fingerprint alongside when
    ``fingerprint`` is on so that the next download is the fast one.
    ``finished(outcome)`` runs exactly once, however the body ends (see
    the module's description); an error it raises is logged, never
    passed to the server.
    """

    def __init__(self, body: Iterable[bytes], expected: Digest,
                 finished: Callable[[Outcome], None],
                 fingerprint: bool = True) -> None:
        self._body = body
        self._expected = expected
        self._finished = finished
        self._fingerprint = fingerprint
        self._iterator: Generator[bytes, None, None] | None = None
        #: A match whose last chunk is out, reported at the next step.
        self._matched: Outcome | None = None
        self._ended = False
        self._closed = False

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

    def _judge(self, values: tuple[str, ...], size: int,
               error: BaseException | None = None) -> Outcome:
        expected = self._expected
        digest: str | None
        fingerprint: str | None
        if self.by_fingerprint:
            digest, fingerprint = None, values[0]
            matched = fingerprint == expected.fingerprint
        else:
            digest = values[0]
            fingerprint = values[1] if len(values) > 1 else None
            matched = digest == expected.digest
        ending = (Ending.MATCHED if matched and size == expected.size
                  else Ending.MISMATCHED)
        return Outcome(ending, size, digest, fingerprint, error)

    def _after_fault(self, hasher: StreamHasher, size: int,
                     error: BaseException) -> Outcome:
        """The outcome of a body whose registry iterator raised."""
        if size < self._expected.size:
            return Outcome(Ending.BROKEN_OFF, size, error=error)
        try:
            values = hasher.hexdigests()
        except Exception:  # the hashing failed too: nothing to judge
            return Outcome(Ending.BROKEN_OFF, size, error=error)
        return self._judge(values, size, error)

    def _end(self, outcome: Outcome) -> None:
        """Report ``outcome``, the first time only."""
        if self._ended:
            return
        self._ended = True
        try:
            self._finished(outcome)
        except Exception:
            LOG.exception('Image %s: the outcome of its download (%s) '
                          'could not be handled', self._expected.image_id,
                          outcome.ending.value)

    def _checked(self) -> Generator[bytes, None, None]:
        hasher = self._hasher()
        update = hasher.update
        size = 0
        held: bytes | None = None
        try:
            try:
                for chunk in self._body:
                    if not chunk:
                        continue
                    update(chunk)
                    size += len(chunk)
                    if held is not None:
                        yield held
                    held = chunk
            except GeneratorExit:
                raise
            except BaseException as exc:  # raised below: judged, raised
                self._end(self._after_fault(hasher, size, exc))
                raise
            outcome = self._judge(hasher.hexdigests(), size)
            if not outcome.matched:
                self._end(outcome)
                raise ImageDataMismatch(
                    f'data of image {self._expected.image_id} does not '
                    'match its recorded digest; transfer aborted')
            self._matched = outcome
            if held is not None:
                yield held
            # After the last bytes went out: the client does not wait.
            self._end(outcome)
        finally:
            # Cut short: the hashing thread ends without finishing (no-op
            # once the digest was taken).
            hasher.abandon()
            self._end(self._matched
                      or Outcome(Ending.ABANDONED, size))

    def close(self) -> None:
        """End the body (once): a match whose last chunk went out is
        reported, anything else not judged yet is abandoned; the
        registry's body is closed."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._iterator is not None:
                # Runs the generator's ``finally`` if it was started.
                self._iterator.close()
            self._end(Outcome(Ending.ABANDONED, 0))
        finally:
            close = getattr(self._body, 'close', None)
            if close is not None:
                close()
