"""The data integrity filter against a fake registry.

Uploads are hashed as the registry reads them (whichever way it reads),
recorded only when complete and accepted; full downloads are checked on
the way out and cut short when they do not match; everything else passes
untouched, in constant memory whatever the size.

Every test runs twice: with bodies hashed inline (as small ones are) and
in the hashing thread (as large ones are; see ``hashing``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pathlib
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import blake3
import pytest
import webob
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oslo_config import cfg

from instance_aware.filters import data_integrity, stack
from instance_aware.integrity import checked_body, import_plugins
from instance_aware.integrity import hashing as hashing_module
from instance_aware.store import engine as ia_engine
from instance_aware.store import models
from instance_aware.store.digests import Digest, Digests
from tests.dbbackends import migrated_sqlite

IMAGE = '8d3a5e0c-4a0b-4c84-9a53-2b1f0c7d9e11'
FILE = f'/v2/images/{IMAGE}/file'
STAGE = f'/v2/images/{IMAGE}/stage'
KIB = 1024
MIB = 1024 * KIB
CHUNK = 64 * KIB


def _chunks(total: int, chunk: int = CHUNK, seed: int = 0) -> Iterator[bytes]:
    """``total`` bytes as fresh ``bytes`` objects (nothing shared)."""
    block = hashlib.sha512(str(seed).encode()).digest() * (chunk // 64 + 1)
    sent = 0
    index = 0
    while sent < total:
        size = min(chunk, total - sent)
        yield bytes([index % 251]) + block[1:size]
        sent += size
        index += 1


def _digest(chunks: Iterable[bytes], algo: str = 'sha512') -> str:
    hasher = hashlib.new(algo)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


class StreamInput:
    """A ``wsgi.input`` fed by a generator, holding one chunk at most.

    ``fail_after`` raises ``OSError`` (a client that went away) once that
    many bytes were read.
    """

    def __init__(self, chunks: Iterable[bytes],
                 fail_after: int | None = None) -> None:
        self._chunks = iter(chunks)
        self._rest = b''
        self._read = 0
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, fewer only at the end (as gunicorn's input)."""
        if self._fail_after is not None and self._read >= self._fail_after:
            raise OSError('client disconnected')
        pieces = []
        wanted = size if size >= 0 else float('inf')
        got = 0
        while got < wanted:
            if not self._rest:
                self._rest = next(self._chunks, b'')
                if not self._rest:
                    break
            take = min(len(self._rest), wanted - got)
            if take == len(self._rest):
                piece, self._rest = self._rest, b''
            else:
                piece = self._rest[:int(take)]
                self._rest = self._rest[int(take):]
            pieces.append(piece)
            got += len(piece)
        data = pieces[0] if len(pieces) == 1 else b''.join(pieces)
        self._read += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.read(size)
        if b'\n' in data:
            line, _, rest = data.partition(b'\n')
            self._rest = rest + self._rest
            self._read -= len(rest)
            return line + b'\n'
        return data


class Registry:
    """A fake registry: stores uploads (as a digest), serves downloads.

    ``reads`` picks how an upload body is read: ``body_file`` (webob's,
    as Glance does), ``raw`` (``wsgi.input.read``), ``lines`` (iterating
    the input) or ``all`` (one ``read()``).
    """

    def __init__(self) -> None:
        self.reads = 'body_file'
        self.put_status = '204 No Content'
        self.read_at_most: int | None = None
        self.received: str | None = None
        self.received_size = 0
        self.download: Callable[[], Iterable[bytes]] = lambda: [b'data']
        self.download_status = '200 OK'
        self.content_range: str | None = None
        self.import_status = '202 Accepted'
        self.shown: dict[str, Any] = {}
        self.bodies: list[Body] = []
        self.calls: list[str] = []

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ['REQUEST_METHOD'], environ['PATH_INFO']
        self.calls.append(f'{method} {path}')
        if method == 'PUT':
            self._upload(environ)
            start_response(self.put_status, [('Content-Length', '0')])
            return []
        if method == 'POST':
            start_response(self.import_status, [('Content-Length', '0')])
            return []
        if path.endswith('/file'):
            body = Body(self.download())
            self.bodies.append(body)
            headers = [('Content-Type', 'application/octet-stream')]
            if self.content_range is not None:
                headers.append(('Content-Range', self.content_range))
            start_response(self.download_status, headers)
            return body
        data = json.dumps(self.shown).encode()
        start_response('200 OK', [('Content-Type', 'application/json'),
                                  ('Content-Length', str(len(data)))])
        return [data]

    def _upload(self, environ: dict[str, Any]) -> None:
        hasher = hashlib.sha512()
        size = 0
        stream = environ['wsgi.input']
        if self.reads == 'body_file':
            request = webob.Request(environ)
            request.is_body_readable = True
            stream = request.body_file
        if self.reads == 'lines':
            pieces: Iterable[bytes] = stream
        elif self.reads == 'all':
            pieces = [stream.read()]
        else:
            pieces = iter(lambda: stream.read(CHUNK), b'')
        for piece in pieces:
            hasher.update(piece)
            size += len(piece)
            if self.read_at_most is not None and size >= self.read_at_most:
                break
        self.received, self.received_size = hasher.hexdigest(), size


class Body:
    """The registry's download iterable; remembers being closed."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True, params=['inline', 'threaded'])
def hashing(request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> str:
    """Hash inline (bodies below the threshold), or in the hashing thread
    from the first chunk on, in batches of a few chunks."""
    if request.param == 'threaded':
        monkeypatch.setattr(hashing_module, 'THREAD_THRESHOLD', 0)
        monkeypatch.setattr(hashing_module, 'BATCH_SIZE', 150)
    mode: str = request.param
    return mode


def _hash_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name == 'instance-aware-hash']


def _hash_threads_end(timeout: float = 5.0) -> bool:
    """Whether every hashing thread ends within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while _hash_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _hash_threads()


@pytest.fixture
def db_url(tmp_path: pathlib.Path) -> str:
    return migrated_sqlite(tmp_path)


@pytest.fixture
def digests(db_url: str) -> Iterator[Digests]:
    engine = ia_engine.create_engine(db_url)
    yield Digests(ia_engine.Database(engine), 'default')
    engine.dispose()


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    c([], project='glance')
    return c


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def make_filter(db_url: str, registry: Registry, conf: cfg.ConfigOpts
                ) -> Callable[..., data_integrity.DataIntegrityFilter]:
    def make(**paste: str) -> data_integrity.DataIntegrityFilter:
        return data_integrity.DataIntegrityFilter(
            registry, {'connection': db_url, **paste}, conf)
    return make


@pytest.fixture
def stack_filter(make_filter: Callable[..., Any]
                 ) -> data_integrity.DataIntegrityFilter:
    result: data_integrity.DataIntegrityFilter = make_filter()
    return result


def _environ(method: str, path: str, body: Iterable[bytes] = (),
             length: int | None = None,
             headers: dict[str, str] | None = None,
             **input_kwargs: Any) -> dict[str, Any]:
    """A WSGI environ; ``length`` None means a chunked body."""
    environ: dict[str, Any] = webob.Request.blank(
        path, method=method, headers=headers or {}).environ
    environ.pop('CONTENT_LENGTH', None)
    environ['wsgi.input'] = StreamInput(body, **input_kwargs)
    if method == 'PUT':
        environ['CONTENT_TYPE'] = 'application/octet-stream'
        if length is None:
            environ['HTTP_TRANSFER_ENCODING'] = 'chunked'
            environ['wsgi.input_terminated'] = True
        else:
            environ['CONTENT_LENGTH'] = str(length)
    return environ


class Started:
    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Any = None) -> Callable[[bytes], None]:
        self.status, self.headers = status, headers
        return lambda data: None


def _call(app: Any, environ: dict[str, Any]) -> tuple[Started, Any]:
    started = Started()
    return started, app(environ, started)


def _drain(body: Iterable[bytes]) -> tuple[str, int]:
    """Consume ``body`` as a server does; its digest and size."""
    hasher = hashlib.sha512()
    size = 0
    try:
        for chunk in body:
            hasher.update(chunk)
            size += len(chunk)
    finally:
        close = getattr(body, 'close', None)
        if close is not None:
            close()
    return hasher.hexdigest(), size


def _upload(app: Any, data: bytes | None = None, *, chunked: bool = False,
            path: str = FILE) -> Started:
    payload = b'image data \n' * 5000 if data is None else data
    pieces = [payload[i:i + 7000] for i in range(0, len(payload), 7000)]
    started, body = _call(app, _environ(
        'PUT', path, pieces, None if chunked else len(payload)))
    _drain(body)
    return started


# -- uploads ---------------------------------------------------------------

@pytest.mark.parametrize('chunked', [
    pytest.param(False, id='content-length'),
    pytest.param(True, id='chunked')])
@pytest.mark.parametrize('reads', ['body_file', 'raw', 'lines', 'all'])
def test_upload_records_the_digest_of_what_the_registry_read(
        stack_filter: Any, registry: Registry, digests: Digests,
        chunked: bool, reads: str) -> None:
    registry.reads = reads
    data = b'line of an image\n' * 40_000 + b'no newline at the end'
    started = _upload(stack_filter, data, chunked=chunked)
    assert started.status == '204 No Content'
    assert registry.received == hashlib.sha512(data).hexdigest()
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.algo, record.digest, record.size) == (
        'sha512', hashlib.sha512(data).hexdigest(), len(data))
    assert (record.source, record.state) == (models.UPLOAD,
                                             models.RECORDED)
    assert record.verified_at is None and record.tampered_at is None


def test_empty_upload_is_recorded(stack_filter: Any,
                                  digests: Digests) -> None:
    _upload(stack_filter, b'')
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.digest, record.size) == (hashlib.sha512().hexdigest(), 0)


def test_stage_records_a_staged_digest(stack_filter: Any,
                                       digests: Digests) -> None:
    data = b'staged bytes' * 1000
    _upload(stack_filter, data, chunked=True, path=STAGE)
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.source, record.state, record.digest, record.size) == (
        models.STAGE, models.STAGED, hashlib.sha512(data).hexdigest(),
        len(data))


@pytest.mark.parametrize(('setup', 'chunked'), [
    pytest.param({'read_at_most': 30_000}, True, id='chunked-end-not-read'),
    pytest.param({'put_status': '413 Request Entity Too Large'}, False,
                 id='refused-413'),
    pytest.param({'put_status': '409 Conflict'}, True, id='refused-409'),
    pytest.param({'put_status': '200 OK'}, False, id='not-204'),
])
def test_uploads_not_complete_or_not_accepted_are_not_recorded(
        stack_filter: Any, registry: Registry, digests: Digests,
        setup: dict[str, Any], chunked: bool) -> None:
    registry.reads = 'raw'
    for key, value in setup.items():
        setattr(registry, key, value)
    _upload(stack_filter, chunked=chunked)
    assert digests.get(IMAGE) is None


def test_short_content_length_body_is_not_recorded(
        stack_filter: Any, registry: Registry, digests: Digests,
        caplog: pytest.LogCaptureFixture) -> None:
    """The client sent less than announced; a lax registry says 204."""
    registry.reads = 'raw'
    started, body = _call(stack_filter, _environ(
        'PUT', FILE, [b'x' * 60], length=100))
    _drain(body)
    assert started.status == '204 No Content'
    assert registry.received_size == 60
    assert digests.get(IMAGE) is None
    assert 'incomplete body (60 of 100 bytes)' in caplog.text


def test_aborted_upload_is_not_recorded(stack_filter: Any,
                                        registry: Registry,
                                        digests: Digests) -> None:
    registry.reads = 'raw'
    environ = _environ('PUT', FILE, _chunks(MIB), None, fail_after=CHUNK * 3)
    with pytest.raises(OSError, match='client disconnected'):
        stack_filter(environ, Started())
    assert digests.get(IMAGE) is None


def test_new_upload_replaces_the_record(stack_filter: Any,
                                        digests: Digests) -> None:
    _upload(stack_filter, b'first')
    digests.mark_tampered(IMAGE, hashlib.sha512(b'first').hexdigest())
    _upload(stack_filter, b'second', chunked=True)
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.digest, record.size, record.state, record.tampered_at) == (
        hashlib.sha512(b'second').hexdigest(), 6, models.RECORDED, None)


# -- downloads -------------------------------------------------------------

def _record(digests: Digests, chunks: Iterable[bytes], **kwargs: Any) -> None:
    data = list(chunks)
    digests.record(IMAGE, algo='sha512', digest=_digest(data),
                   size=sum(map(len, data)), source=models.UPLOAD, **kwargs)


def test_matching_download_is_served_whole_and_stamped(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    _record(digests, _chunks(MIB))
    registry.download = lambda: _chunks(MIB)
    started, body = _call(stack_filter, _environ('GET', FILE))
    assert started.status == '200 OK'
    assert _drain(body) == (_digest(_chunks(MIB)), MIB)
    assert registry.bodies[0].closed
    record = digests.get(IMAGE)
    assert record is not None
    assert record.verified_at is not None
    assert (record.state, record.tampered_at) == (models.RECORDED, None)


@pytest.mark.parametrize('tail', [
    pytest.param([], id='plain'),
    pytest.param([b'', b''], id='empty-chunks-at-the-end')])
def test_mismatch_withholds_the_last_chunk_and_raises(
        stack_filter: Any, registry: Registry, digests: Digests,
        caplog: pytest.LogCaptureFixture, tail: list[bytes]) -> None:
    _record(digests, [b'a' * 100, b'b' * 100, b'c' * 100])
    registry.download = lambda: [b'a' * 100, b'b' * 100, b'X' * 100, *tail]
    for attempt in range(2):
        _started, body = _call(stack_filter, _environ('GET', FILE))
        received = []
        with caplog.at_level(logging.ERROR), pytest.raises(
                checked_body.ImageDataMismatch, match=IMAGE):
            for chunk in body:
                received.append(chunk)
        body.close()
        assert received == [b'a' * 100, b'b' * 100]
        assert registry.bodies[attempt].closed
        alerts = [r for r in caplog.records if r.levelno == logging.ERROR
                  and r.getMessage().startswith('ALERT')]
        assert len(alerts) == attempt + 1
        assert IMAGE in alerts[-1].getMessage()
        record = digests.get(IMAGE)
        assert record is not None
        assert (record.state, record.verified_at) == (models.TAMPERED, None)
        assert record.tampered_at is not None


def test_a_registry_that_rewrites_the_path_is_still_checked(
        db_url: str, registry: Registry, conf: cfg.ConfigOpts,
        digests: Digests) -> None:
    """Glance's router moves ``/v2`` from ``PATH_INFO`` to
    ``SCRIPT_NAME`` in the environ it is given."""
    def routed(environ: dict[str, Any], start_response: Any) -> Any:
        environ['SCRIPT_NAME'] += '/v2'
        environ['PATH_INFO'] = environ['PATH_INFO'][len('/v2'):]
        return registry(environ, start_response)

    app = data_integrity.DataIntegrityFilter(routed, {'connection': db_url},
                                             conf)
    _record(digests, [b'original'])
    registry.download = lambda: [b'tampered']
    _started, body = _call(app, _environ('GET', FILE))
    with pytest.raises(checked_body.ImageDataMismatch):
        list(body)
    record = digests.get(IMAGE)
    assert record is not None and record.state == models.TAMPERED


@pytest.mark.parametrize('served', [
    pytest.param([b'all in one chunk'], id='one-chunk'),
    pytest.param([], id='nothing'),
    pytest.param([b'right', b' length'], id='same-size-other-bytes'),
])
def test_mismatch_sends_nothing_it_cannot_vouch_for(
        stack_filter: Any, registry: Registry, digests: Digests,
        served: list[bytes]) -> None:
    _record(digests, [b'right', b' lengtH'])
    registry.download = lambda: served
    _started, body = _call(stack_filter, _environ('GET', FILE))
    received = []
    with pytest.raises(checked_body.ImageDataMismatch):
        received.extend(body)
    assert b''.join(received) == b''.join(served[:-1])


def test_client_gone_mid_download_marks_nothing(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    _record(digests, [b'z' * 10] * 5)
    registry.download = lambda: [b'z' * 10] * 4 + [b'tampered!!']
    _started, body = _call(stack_filter, _environ('GET', FILE))
    iterator = iter(body)
    assert next(iterator) == b'z' * 10
    body.close()
    assert registry.bodies[0].closed
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.state, record.verified_at, record.tampered_at) == (
        models.RECORDED, None, None)


@pytest.mark.parametrize(('method', 'headers', 'recorded', 'status'), [
    pytest.param('GET', {'Range': 'bytes=0-9'}, True, '206 Partial Content',
                 id='range'),
    pytest.param('GET', {'Content-Range': 'bytes 0-9/300'}, True,
                 '206 Partial Content', id='legacy-content-range'),
    pytest.param('HEAD', {}, True, '200 OK', id='head'),
    pytest.param('GET', {}, False, '200 OK', id='no-record'),
    pytest.param('GET', {}, True, '204 No Content', id='no-data'),
    pytest.param('GET', {}, True, '403 Forbidden', id='refused'),
])
def test_downloads_passed_untouched(
        stack_filter: Any, registry: Registry, digests: Digests,
        method: str, headers: dict[str, str], recorded: bool,
        status: str) -> None:
    if recorded:
        _record(digests, [b'original'])
    registry.download = lambda: [b'tampered']
    registry.download_status = status
    started, body = _call(stack_filter, _environ(method, FILE,
                                                 headers=headers))
    assert body is registry.bodies[0]
    assert started.status == status
    assert list(body) == [b'tampered']


def test_option_off_passes_everything_untouched(
        make_filter: Callable[..., Any], registry: Registry,
        digests: Digests) -> None:
    app = make_filter(verify_image_data='false')
    _upload(app, b'data')
    assert digests.get(IMAGE) is None
    _record(digests, [b'original'])
    registry.download = lambda: [b'tampered']
    _started, body = _call(app, _environ('GET', FILE))
    assert body is registry.bodies[0]


def test_other_routes_pass_untouched(stack_filter: Any,
                                     registry: Registry) -> None:
    for method, path in [('GET', f'/v2/images/{IMAGE}'),
                         ('DELETE', STAGE), ('GET', '/v2/images')]:
        _started, body = _call(stack_filter, _environ(method, path))
        assert isinstance(body, list)
    assert registry.calls == [f'GET /v2/images/{IMAGE}', f'DELETE {STAGE}',
                              'GET /v2/images']


# -- constant memory -------------------------------------------------------

@pytest.mark.parametrize('chunked', [
    pytest.param(False, id='content-length'),
    pytest.param(True, id='chunked')])
def test_200_mb_each_way_in_constant_memory(
        stack_filter: Any, registry: Registry, digests: Digests,
        chunked: bool) -> None:
    size = 200 * MIB
    expected = _digest(_chunks(size))
    _upload(stack_filter, b'warm up the store and its statements')
    registry.download = lambda: _chunks(size)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        started, body = _call(stack_filter, _environ(
            'PUT', FILE, _chunks(size), None if chunked else size))
        _drain(body)
        _current, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _started, body = _call(stack_filter, _environ('GET', FILE))
        assert _drain(body) == (expected, size)
        _current, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert started.status == '204 No Content'
    assert registry.received == expected
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.digest, record.size) == (expected, size)
    assert record.verified_at is not None
    # A few chunks of 64 KiB in flight, whatever the size of the image.
    assert upload_peak < 2 * MIB, upload_peak
    assert download_peak < 2 * MIB, download_peak


# -- hashing algorithm -----------------------------------------------------

def test_glance_hashing_algorithm_wins(conf: cfg.ConfigOpts,
                                       make_filter: Callable[..., Any],
                                       digests: Digests) -> None:
    conf.register_opt(cfg.StrOpt('hashing_algorithm', default='sha256'))
    _upload(make_filter(hashing_algorithm='sha384'), b'data')
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.algo, record.digest) == (
        'sha256', hashlib.sha256(b'data').hexdigest())


def test_paste_hashing_algorithm_without_glance_options(
        make_filter: Callable[..., Any], registry: Registry,
        digests: Digests) -> None:
    app = make_filter(hashing_algorithm='sha3_256')
    _upload(app, b'data')
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.algo, record.digest) == (
        'sha3_256', hashlib.sha3_256(b'data').hexdigest())
    registry.download = lambda: [b'da', b'ta']
    _started, body = _call(app, _environ('GET', FILE))
    assert b''.join(body) == b'data'


# -- BLAKE3 fingerprints ---------------------------------------------------

def _fingerprint(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@pytest.mark.parametrize('chunked', [False, True])
def test_upload_records_the_fingerprint_with_the_digest(
        stack_filter: Any, digests: Digests, chunked: bool) -> None:
    data = bytes(range(256)) * 3000
    _upload(stack_filter, data, chunked=chunked)
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.digest, record.fingerprint) == (
        hashlib.sha512(data).hexdigest(), _fingerprint(data))


def test_fingerprint_option_off_records_none(
        make_filter: Callable[..., Any], digests: Digests) -> None:
    _upload(make_filter(fingerprint_image_data='false'), b'plain')
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.digest, record.fingerprint) == (
        hashlib.sha512(b'plain').hexdigest(), None)


def test_download_checked_against_the_fingerprint(
        stack_filter: Any, registry: Registry, digests: Digests,
        caplog: pytest.LogCaptureFixture) -> None:
    """A record with a fingerprint is checked by BLAKE3 alone: a wrong
    sha512 in the record does not matter, a changed byte does."""
    data = b''.join(_chunks(MIB))
    digests.record(IMAGE, algo='sha512', digest='0' * 128, size=len(data),
                   source=models.UPLOAD, fingerprint=_fingerprint(data))
    registry.download = lambda: _chunks(MIB)
    _started, body = _call(stack_filter, _environ('GET', FILE))
    assert _drain(body) == (hashlib.sha512(data).hexdigest(), MIB)
    record = digests.get(IMAGE)
    assert record is not None and record.verified_at is not None
    assert record.fingerprint == _fingerprint(data)

    tampered = bytearray(data)
    tampered[MIB // 2] ^= 1
    registry.download = lambda: [bytes(tampered[:MIB // 2 + 1]),
                                 bytes(tampered[MIB // 2 + 1:])]
    _started, body = _call(stack_filter, _environ('GET', FILE))
    received = []
    with caplog.at_level(logging.ERROR), pytest.raises(
            checked_body.ImageDataMismatch):
        received.extend(body)
    assert received == [bytes(tampered[:MIB // 2 + 1])]
    alert = next(r.getMessage() for r in caplog.records
                 if r.getMessage().startswith('ALERT'))
    assert f'blake3 {_fingerprint(data)}' in alert
    assert _fingerprint(bytes(tampered)) in alert
    record = digests.get(IMAGE)
    assert record is not None and record.state == models.TAMPERED


def test_fingerprint_learned_at_a_verified_download_only(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    _record(digests, [b'good ', b'bytes'])
    registry.download = lambda: [b'good ', b'byte!']
    _started, body = _call(stack_filter, _environ('GET', FILE))
    with pytest.raises(checked_body.ImageDataMismatch):
        b''.join(body)
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.state, record.fingerprint) == (models.TAMPERED, None)
    registry.download = lambda: [b'good ', b'bytes']
    _started, body = _call(stack_filter, _environ('GET', FILE))
    assert b''.join(body) == b'good bytes'
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.state, record.fingerprint) == (
        models.RECORDED, _fingerprint(b'good bytes'))


def test_fingerprint_option_off_checks_the_digest(
        make_filter: Callable[..., Any], registry: Registry,
        digests: Digests) -> None:
    """A right fingerprint does not vouch for data when the option is
    off: the record's sha512 decides."""
    data = b'data checked by sha512'
    digests.record(IMAGE, algo='sha512', digest='0' * 128, size=len(data),
                   source=models.UPLOAD, fingerprint=_fingerprint(data))
    registry.download = lambda: [data[:4], data[4:]]
    app = make_filter(fingerprint_image_data='false')
    _started, body = _call(app, _environ('GET', FILE))
    with pytest.raises(checked_body.ImageDataMismatch):
        b''.join(body)


def test_stream_hasher_feeds_every_hasher(hashing: str) -> None:
    chunks = list(_chunks(2 * CHUNK + 5))
    hasher = hashing_module.StreamHasher(hashlib.sha256(),
                                         hashing_module.fingerprinter())
    for chunk in chunks:
        hasher.update(chunk)
    data = b''.join(chunks)
    assert hasher.hexdigests() == (hashlib.sha256(data).hexdigest(),
                                   _fingerprint(data))
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


# -- stage, then import ----------------------------------------------------

STAGED = b'staged image' * 1000
CONVERTED = b'converted image' * 900


def _stage_then_download(app: Any, registry: Registry,
                         stored: bytes) -> Iterable[bytes]:
    _upload(app, STAGED, chunked=True, path=STAGE)
    registry.shown = {'os_hash_algo': 'sha512',
                      'os_hash_value': hashlib.sha512(stored).hexdigest(),
                      'size': len(stored)}
    registry.download = lambda: [stored[:5000], stored[5000:]]
    _started, body = _call(app, _environ('GET', FILE))
    return body  # type: ignore[no-any-return]


def test_staged_digest_confirmed_by_the_import(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    body = _stage_then_download(stack_filter, registry, STAGED)
    assert b''.join(body) == STAGED
    assert registry.calls[-2:] == [f'GET {FILE}', f'GET /v2/images/{IMAGE}']
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.source, record.state, record.digest) == (
        models.STAGE, models.RECORDED, hashlib.sha512(STAGED).hexdigest())
    assert record.fingerprint == _fingerprint(STAGED)
    assert record.verified_at is not None
    # Settled once: the next download asks the registry nothing more.
    _started, body = _call(stack_filter, _environ('GET', FILE))
    assert b''.join(body) == STAGED
    assert registry.calls[-1] == f'GET {FILE}'


def _loaded_from(tmp_path: pathlib.Path, text: str) -> cfg.ConfigOpts:
    """A service configuration loaded from a file with ``text``, Glance's
    import options not registered (no import ran in this process)."""
    path = tmp_path / 'glance-api.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(path)], project='glance')
    return conf


REWRITING = ("[image_import_opts]\n"
             "image_import_plugins = ['image_conversion']\n")


@pytest.mark.parametrize('how', [
    pytest.param('registered', id='glance-options-registered'),
    pytest.param('file', id='read-from-the-service-files'),
    pytest.param('paste', id='image_conversion_enabled'),
])
def test_rewritten_on_import_adopts_the_registry_digest(
        db_url: str, registry: Registry, digests: Digests,
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
        how: str) -> None:
    """The configuration positively says a plugin rewrites data."""
    paste = {'connection': db_url}
    if how == 'registered':
        conf = _loaded_from(tmp_path, REWRITING)
        # As Glance declares it, once this process ran an import.
        conf.register_opt(import_plugins.glance_option(),
                          group='image_import_opts')
    elif how == 'file':
        conf = _loaded_from(tmp_path, REWRITING)
    else:
        conf = _loaded_from(tmp_path, '')
        paste['image_conversion_enabled'] = 'true'
    app = data_integrity.DataIntegrityFilter(registry, paste, conf)
    with caplog.at_level(logging.INFO):
        body = _stage_then_download(app, registry, CONVERTED)
        assert b''.join(body) == CONVERTED
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.source, record.state, record.digest, record.size) == (
        models.IMPORT, models.RECORDED,
        hashlib.sha512(CONVERTED).hexdigest(), len(CONVERTED))
    # The registry's digest was verified by that download, which also
    # gave the fingerprint the next downloads are checked against.
    assert record.fingerprint == _fingerprint(CONVERTED)
    assert 'ALERT' not in caplog.text
    assert 'import plugins image_conversion rewrite it' in caplog.text
    # From now on, the stored data is checked against it.
    registry.download = lambda: [CONVERTED[:-1], b'!']
    _started, body = _call(app, _environ('GET', FILE))
    with pytest.raises(checked_body.ImageDataMismatch):
        b''.join(body)


@pytest.mark.parametrize('how', [
    pytest.param('registered', id='keeping-plugins-registered'),
    pytest.param('file', id='keeping-plugins-in-the-files'),
    pytest.param('none', id='no-plugin-in-the-files'),
    pytest.param('unknown', id='configuration-never-loaded'),
])
def test_staged_data_changed_without_rewriting_plugins_alerts(
        db_url: str, registry: Registry, digests: Digests,
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
        how: str) -> None:
    """Unknown or no rewriting plugin: a changed staged file is a tamper,
    whatever this process did before (finding 1 of issue 20)."""
    keeping = ("[image_import_opts]\nimage_import_plugins = "
               "['no_op', 'inject_image_metadata']\n")
    if how == 'registered':
        conf = _loaded_from(tmp_path, keeping)
        # As Glance declares it, once this process ran an import.
        conf.register_opt(import_plugins.glance_option(),
                          group='image_import_opts')
    elif how == 'file':
        conf = _loaded_from(tmp_path, keeping)
    elif how == 'none':
        conf = _loaded_from(tmp_path, '[DEFAULT]\n')
    else:
        conf = cfg.ConfigOpts()
    app = data_integrity.DataIntegrityFilter(
        registry, {'connection': db_url}, conf)
    body = _stage_then_download(app, registry, CONVERTED)
    received = []
    with pytest.raises(checked_body.ImageDataMismatch):
        received.extend(body)
    assert received == [CONVERTED[:5000]]
    alert = (f'ALERT: the staged data of image {IMAGE} changed before the '
             'import stored it')
    assert alert in caplog.text
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.source, record.state, record.digest) == (
        models.STAGE, models.TAMPERED, hashlib.sha512(STAGED).hexdigest())
    assert record.tampered_at is not None
    # Every later download fails too, without asking the registry again.
    calls = len(registry.calls)
    _started, body = _call(app, _environ('GET', FILE))
    with pytest.raises(checked_body.ImageDataMismatch):
        b''.join(body)
    assert registry.calls[calls:] == [f'GET {FILE}']


def test_staged_digest_of_another_algorithm_is_kept(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    """The registry hashed with another algorithm and no plugin rewrites:
    the download itself compares the stored bytes with the staged digest."""
    _upload(stack_filter, STAGED, chunked=True, path=STAGE)
    registry.shown = {'os_hash_algo': 'sha256',
                      'os_hash_value': hashlib.sha256(STAGED).hexdigest(),
                      'size': len(STAGED)}
    registry.download = lambda: [STAGED[:5000], STAGED[5000:]]
    _started, body = _call(stack_filter, _environ('GET', FILE))
    assert b''.join(body) == STAGED
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.source, record.state, record.algo) == (
        models.STAGE, models.RECORDED, 'sha512')
    assert record.verified_at is not None


# -- mapping database down -------------------------------------------------

DOWN = 'postgresql+psycopg2://ia@127.0.0.1:1/ia'


def test_upload_succeeds_with_the_database_down(
        registry: Registry, conf: cfg.ConfigOpts,
        caplog: pytest.LogCaptureFixture) -> None:
    app = data_integrity.DataIntegrityFilter(
        registry, {'connection': DOWN, 'db_connect_timeout': '1'}, conf)
    started = _upload(app, b'data')
    assert started.status == '204 No Content'
    assert registry.received == hashlib.sha512(b'data').hexdigest()
    assert f'digest of image {IMAGE} was not recorded' in caplog.text


def test_download_served_unchecked_with_the_database_down(
        registry: Registry, conf: cfg.ConfigOpts,
        caplog: pytest.LogCaptureFixture) -> None:
    app = data_integrity.DataIntegrityFilter(
        registry, {'connection': DOWN, 'db_connect_timeout': '1'}, conf)
    registry.download = lambda: [b'served', b' anyway']
    _started, body = _call(app, _environ('GET', FILE))
    assert body is registry.bodies[0]
    assert b''.join(body) == b'served anyway'
    assert f'image {IMAGE} is served without checking' in caplog.text


def test_mismatch_cut_short_even_if_it_cannot_be_marked(
        stack_filter: Any, registry: Registry, digests: Digests,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from instance_aware.store import errors as store_errors

    _record(digests, [b'one', b'two'])
    registry.download = lambda: [b'one', b'tw0']

    def down(*args: Any) -> bool:
        raise store_errors.StoreUnavailable('down')

    monkeypatch.setattr(Digests, 'mark_tampered', down)
    _started, body = _call(stack_filter, _environ('GET', FILE))
    received = []
    with pytest.raises(checked_body.ImageDataMismatch):
        received.extend(body)
    assert received == [b'one']
    assert 'ALERT' in caplog.text and 'MISMATCH' in caplog.text


# -- place in the stack ----------------------------------------------------

def test_innermost_in_the_stack() -> None:
    assert stack.ORDER[-1] is data_integrity.DataIntegrityFilter


def test_reader_passes_reads_through_unchanged() -> None:
    raw = io.BytesIO(b'one\ntwo\nthree')
    reader = hashing_module.HashingReader(raw, hashlib.sha256())
    assert reader.readline() == b'one\n'
    assert reader.read(2) == b'tw'
    assert reader.readlines() == [b'o\n', b'three']
    assert not reader.eof or reader.count == 13
    assert reader.read() == b''
    assert (reader.eof, reader.count) == (True, 13)
    assert reader.hexdigest() == hashlib.sha256(
        b'one\ntwo\nthree').hexdigest()


def test_reader_reads_an_input_that_is_only_iterable() -> None:
    # Glance accepts a ``wsgi.input`` without ``read()`` (its own tests
    # upload chunked data as a generator).
    raw = (chunk for chunk in [b'one\ntw', b'', b'o\nthree'])
    reader = hashing_module.HashingReader(raw, hashlib.sha256())
    assert reader.read(2) == b'on'
    assert reader.readline() == b'e\n'
    assert reader.read() == b'two\nthree'
    assert (reader.eof, reader.count) == (True, 13)
    assert reader.hexdigest() == hashlib.sha256(
        b'one\ntwo\nthree').hexdigest()


# -- the hashing thread ----------------------------------------------------

def test_stream_hasher_gives_hashlib_digest_whatever_the_chunks(
        hashing: str) -> None:
    mutable = bytearray(b'changed after it was handed over' * 10)
    chunks: list[Any] = [b'x' * 1000, memoryview(b'y' * 333), b'', mutable,
                         *_chunks(3 * CHUNK + 17)]
    expected = hashlib.sha384()
    for chunk in chunks:
        expected.update(chunk)
    digest = expected.hexdigest()
    hasher = hashing_module.StreamHasher(hashlib.sha384())
    for chunk in chunks:
        hasher.update(chunk)
    mutable[:] = b'!' * len(mutable)
    assert hasher.hexdigest() == digest
    assert _hash_threads_end()
    # Asked twice, or fed more afterwards: still right.
    assert hasher.hexdigest() == digest
    hasher.update(b'more')
    expected.update(b'more')
    assert hasher.hexdigest() == expected.hexdigest()


def test_abandoned_stream_hasher_ends_its_thread(hashing: str) -> None:
    hasher = hashing_module.StreamHasher(hashlib.sha512())
    for chunk in _chunks(MIB):
        hasher.update(chunk)
    assert bool(_hash_threads()) == (hashing == 'threaded')
    hasher.abandon()
    assert _hash_threads_end()
    if hashing == 'threaded':
        with pytest.raises(RuntimeError, match='abandoned'):
            hasher.hexdigest()


def test_hashing_failure_is_raised_by_hexdigest(hashing: str) -> None:
    class Failing:
        calls = 0

        def update(self, data: bytes) -> None:
            self.calls += 1
            if self.calls == 3:
                raise MemoryError('no room')

        def hexdigest(self) -> str:
            return 'never'

    hasher = hashing_module.StreamHasher(Failing())
    with pytest.raises(MemoryError):
        for chunk in _chunks(MIB):
            hasher.update(chunk)
        hasher.hexdigest()
    assert _hash_threads_end()


def test_client_gone_mid_download_ends_the_hashing_thread(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    _record(digests, _chunks(MIB))
    registry.download = lambda: _chunks(MIB)
    _started, body = _call(stack_filter, _environ('GET', FILE))
    iterator = iter(body)
    for _ in range(5):
        next(iterator)
    body.close()
    assert registry.bodies[0].closed
    assert _hash_threads_end()
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.verified_at, record.tampered_at) == (None, None)


@pytest.mark.parametrize('read_at_most', [None, 3 * CHUNK])
def test_refused_or_short_upload_ends_the_hashing_thread(
        stack_filter: Any, registry: Registry, digests: Digests,
        read_at_most: int | None) -> None:
    registry.read_at_most = read_at_most
    if read_at_most is None:
        registry.put_status = '413 Request Entity Too Large'
    registry.reads = 'raw'
    _started, body = _call(stack_filter, _environ(
        'PUT', FILE, _chunks(MIB), None if read_at_most else MIB))
    _drain(body)
    assert _hash_threads_end()
    assert digests.get(IMAGE) is None


# -- however a body ends (issue 20, finding 2) -----------------------------

class Fault(Exception):
    """What the registry's iterator raises (Glance's cache tee, a store)."""


class Source:
    """The registry's body: ``chunks``, then ``Fault`` if ``fault``."""

    def __init__(self, chunks: list[bytes], fault: bool) -> None:
        self.chunks = chunks
        self.fault = Fault('registry failed') if fault else None
        self.closes = 0

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.fault is not None:
            raise self.fault

    def close(self) -> None:
        self.closes += 1


def _mutated(data: bytes, how: str) -> bytes:
    if how == 'flip' and data:
        return data[:-1] + bytes([data[-1] ^ 1])
    if how == 'shorter' and data:
        return data[:-1]
    if how == 'longer':
        return data + b'!'
    return data


@st.composite
def endings(draw: st.DrawFn) -> dict[str, Any]:
    chunks = draw(st.lists(st.binary(max_size=40), max_size=8))
    data = b''.join(chunks)
    return {
        'chunks': chunks,
        # Raise where the registry's chunks end (Glance's cache tee),
        # or after any number of them (a store failing).
        'fault_at': draw(st.one_of(
            st.none(), st.integers(0, len(chunks)))),
        'recorded': _mutated(data, draw(st.sampled_from(
            ['same', 'same', 'flip', 'shorter', 'longer']))),
        'by_fingerprint': draw(st.booleans()),
        # next() calls before close(); None: until the body ends.
        'steps': draw(st.one_of(st.none(), st.integers(0, 10))),
        'started': draw(st.booleans()),
        'closes': draw(st.integers(1, 3)),
    }


def _expected_ending(case: dict[str, Any]) -> checked_body.Ending:
    """What the body must report, worked out from the case alone."""
    chunks, fault_at = case['chunks'], case['fault_at']
    given = [c for c in (chunks if fault_at is None else chunks[:fault_at])
             if c]
    steps = case['steps']
    reached_end = case['started'] and (
        steps is None or steps >= max(len(given), 1))
    if not reached_end:
        return checked_body.Ending.ABANDONED
    received = b''.join(given)
    recorded = case['recorded']
    if fault_at is not None and len(received) < len(recorded):
        return checked_body.Ending.BROKEN_OFF
    if received == recorded:
        return checked_body.Ending.MATCHED
    return checked_body.Ending.MISMATCHED


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=endings())
def test_a_body_is_judged_once_however_it_ends(
        hashing: str, case: dict[str, Any]) -> None:
    chunks, fault_at = case['chunks'], case['fault_at']
    served = chunks if fault_at is None else chunks[:fault_at]
    source = Source(served, fault=fault_at is not None)
    recorded = case['recorded']
    expected = Digest(
        image_id=IMAGE, source=models.UPLOAD, state=models.RECORDED,
        algo='sha512', digest=hashlib.sha512(recorded).hexdigest(),
        size=len(recorded), recorded_at=models.utcnow(), verified_at=None,
        tampered_at=None,
        fingerprint=(_fingerprint(recorded) if case['by_fingerprint']
                     else None))
    outcomes: list[checked_body.Outcome] = []
    body = checked_body.CheckedBody(source, expected, outcomes.append)

    sent: list[bytes] = []
    raised: BaseException | None = None
    if case['started']:
        iterator = iter(body)
        steps = case['steps']
        taken = 0
        while steps is None or taken < steps:
            taken += 1
            try:
                sent.append(next(iterator))
            except StopIteration:
                break
            except (Fault, checked_body.ImageDataMismatch) as exc:
                raised = exc
                break
    for _ in range(case['closes']):
        body.close()

    ending = _expected_ending(case)
    assert [outcome.ending for outcome in outcomes] == [ending]
    assert source.closes == 1
    pieces = [c for c in served if c]
    if ending is checked_body.Ending.MATCHED and fault_at is None:
        assert b''.join(sent) == recorded
    else:
        # The last chunk the registry gave never goes out unvouched, nor
        # after the registry failed.
        assert sent == pieces[:len(sent)]
        assert len(sent) <= max(len(pieces) - 1, 0)
    outcome = outcomes[0]
    if ending in (checked_body.Ending.MATCHED,
                  checked_body.Ending.MISMATCHED):
        assert outcome.size == len(b''.join(pieces))
    if fault_at is not None and ending is not (
            checked_body.Ending.ABANDONED):
        assert raised is source.fault and outcome.error is source.fault
    elif ending is checked_body.Ending.MISMATCHED:
        assert isinstance(raised, checked_body.ImageDataMismatch)
    else:
        assert raised is None
    assert _hash_threads_end()


def test_cache_tee_failure_at_the_end_marks_and_alerts(
        stack_filter: Any, registry: Registry, digests: Digests,
        caplog: pytest.LogCaptureFixture) -> None:
    """Glance's image cache raises "Checksum verification failed" where a
    changed file ends: judged, marked and alerted all the same."""
    _record(digests, [b'a' * 100, b'b' * 100])

    def tee() -> Iterator[bytes]:
        yield b'a' * 100
        yield b'b' * 99 + b'X'
        raise RuntimeError('Checksum verification failed. Aborted caching')

    registry.download = tee
    _started, body = _call(stack_filter, _environ('GET', FILE))
    received = []
    with caplog.at_level(logging.ERROR), pytest.raises(
            RuntimeError, match='Aborted caching'):
        received.extend(body)
    body.close()
    assert received == [b'a' * 100]
    assert f'ALERT: data of image {IMAGE} does not match' in caplog.text
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.state, record.verified_at) == (models.TAMPERED, None)


def test_registry_breaking_off_early_is_logged_not_marked(
        stack_filter: Any, registry: Registry, digests: Digests,
        caplog: pytest.LogCaptureFixture) -> None:
    _record(digests, [b'a' * 100, b'b' * 100])

    def broken() -> Iterator[bytes]:
        yield b'a' * 100
        raise OSError('store connection reset')

    registry.download = broken
    _started, body = _call(stack_filter, _environ('GET', FILE))
    with pytest.raises(OSError, match='reset'):
        b''.join(body)
    body.close()
    assert (f'Image {IMAGE}: the registry broke off its download after '
            '100 of 200 bytes (store connection reset)') in caplog.text
    assert 'ALERT' not in caplog.text
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.state, record.verified_at, record.tampered_at) == (
        models.RECORDED, None, None)


# -- ranges (issue 20, finding 3) ------------------------------------------

WHOLE = [b'0123456789'] * 3


@pytest.mark.parametrize('content_range', [
    pytest.param('bytes 0-29/30', id='whole'),
    pytest.param('bytes 0-29/*', id='length-unknown'),
    pytest.param('bytes 1-29/30', id='from-the-second-byte'),
    pytest.param('bytes 0-28/30', id='without-the-last-byte'),
    pytest.param(None, id='no-content-range'),
    pytest.param('bytes 0-x/30', id='unparsable'),
])
def test_206_is_checked_only_when_it_carries_the_whole_image(
        stack_filter: Any, registry: Registry, digests: Digests,
        content_range: str | None) -> None:
    """What the registry says it sends decides (its ``Content-Range``,
    parsed by webob), not what the client asked for."""
    _record(digests, WHOLE)
    tampered = [b'0123456789', b'0123456789', b'012345678X']
    registry.download = lambda: tampered
    registry.download_status = '206 Partial Content'
    registry.content_range = content_range
    started, body = _call(stack_filter, _environ(
        'GET', FILE, headers={'Range': 'bytes=0-'}))
    assert started.status == '206 Partial Content'
    if content_range == 'bytes 0-29/30':
        received = []
        with pytest.raises(checked_body.ImageDataMismatch):
            received.extend(body)
        assert received == tampered[:2]
        record = digests.get(IMAGE)
        assert record is not None and record.state == models.TAMPERED
    else:
        assert body is registry.bodies[0]
        assert list(body) == tampered
        record = digests.get(IMAGE)
        assert record is not None and record.state == models.RECORDED


def test_whole_image_206_that_matches_is_verified(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    _record(digests, WHOLE)
    registry.download = lambda: WHOLE
    registry.download_status = '206 Partial Content'
    registry.content_range = 'bytes 0-29/30'
    _started, body = _call(stack_filter, _environ(
        'GET', FILE, headers={'Range': 'bytes=-30'}))
    assert b''.join(body) == b''.join(WHOLE)
    body.close()
    record = digests.get(IMAGE)
    assert record is not None and record.verified_at is not None


def test_200_to_a_range_request_is_checked(
        stack_filter: Any, registry: Registry, digests: Digests) -> None:
    """A registry that ignores ``Range`` sends the whole image: checked."""
    _record(digests, WHOLE)
    registry.download = lambda: [b'0123456789', b'0123456789', b'X']
    _started, body = _call(stack_filter, _environ(
        'GET', FILE, headers={'Range': 'bytes=5-9'}))
    with pytest.raises(checked_body.ImageDataMismatch):
        b''.join(body)



# -- imports whose bytes the stack does not see ----------------------------

IMPORT = f'/v2/images/{IMAGE}/import'
FETCHED = b'fetched by the registry' * 500


def _import(app: Any) -> Started:
    started, body = _call(app, _environ('POST', IMPORT))
    _drain(body)
    return started


def test_import_the_stack_cannot_see_adopts_the_registry_digest(
        stack_filter: Any, registry: Registry, digests: Digests,
        caplog: pytest.LogCaptureFixture) -> None:
    """web-download, glance-download: the registry's digest computed at
    import, checked by every download from the first on."""
    assert _import(stack_filter).status == '202 Accepted'
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.source, record.state, record.digest) == (
        models.IMPORT, models.PENDING, '')

    registry.shown = {'os_hash_algo': 'sha512',
                      'os_hash_value': hashlib.sha512(FETCHED).hexdigest(),
                      'size': len(FETCHED)}
    registry.download = lambda: [FETCHED[:700], FETCHED[700:]]
    with caplog.at_level(logging.INFO):
        _started, body = _call(stack_filter, _environ('GET', FILE))
        assert b''.join(body) == FETCHED
        body.close()
    assert f'Image {IMAGE}: imported by the registry itself' in caplog.text
    record = digests.get(IMAGE)
    assert record is not None
    assert (record.source, record.state, record.digest, record.size) == (
        models.IMPORT, models.RECORDED, hashlib.sha512(FETCHED).hexdigest(),
        len(FETCHED))
    assert record.verified_at is not None
    assert record.fingerprint == _fingerprint(FETCHED)

    registry.download = lambda: [FETCHED[:700], FETCHED[700:-1] + b'!']
    _started, body = _call(stack_filter, _environ('GET', FILE))
    with pytest.raises(checked_body.ImageDataMismatch):
        b''.join(body)
    record = digests.get(IMAGE)
    assert record is not None and record.state == models.TAMPERED


def test_pending_import_without_a_registry_digest_is_served_unchecked(
        stack_filter: Any, registry: Registry, digests: Digests,
        caplog: pytest.LogCaptureFixture) -> None:
    _import(stack_filter)
    registry.shown = {'os_hash_algo': None, 'os_hash_value': None,
                      'size': None}
    registry.download = lambda: [b'not yet']
    _started, body = _call(stack_filter, _environ('GET', FILE))
    assert body is registry.bodies[0]
    assert f'Image {IMAGE}: the registry shows no digest yet' in caplog.text
    record = digests.get(IMAGE)
    assert record is not None and record.state == models.PENDING


def test_import_keeps_a_record_the_image_has(
        stack_filter: Any, digests: Digests) -> None:
    """glance-direct keeps the staged digest; copy-image the digest of the
    data it copies."""
    _upload(stack_filter, STAGED, chunked=True, path=STAGE)
    before = digests.get(IMAGE)
    _import(stack_filter)
    assert digests.get(IMAGE) == before


@pytest.mark.parametrize('status', ['409 Conflict', '400 Bad Request',
                                    '403 Forbidden'])
def test_refused_import_notes_nothing(
        stack_filter: Any, registry: Registry, digests: Digests,
        status: str) -> None:
    registry.import_status = status
    assert _import(stack_filter).status == status
    assert digests.get(IMAGE) is None
