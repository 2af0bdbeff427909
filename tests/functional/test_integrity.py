"""Integrity of image data against a real Glance and its file store.

Data uploaded (or staged and imported) through the stack is recorded with
the digest Glance itself computes; a full download through the stack whose
bytes no longer match, because the file in Glance's store was changed,
fails for the client, is logged as an alert and marks the image.  The bare
pipeline of the same Glance still serves the changed bytes: the check is
the stack's.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import blake3
import pytest
import requests

from instance_aware.integrity import hashing
from instance_aware.store import engine as ia_engine
from instance_aware.store import models
from instance_aware.store.digests import Digest, Digests
from tests.functional.conftest import Api
from tests.local import glance
from tests.local.server import GlanceServer

KIB = 1024
#: Glance's file store reads and sends 64 KiB chunks.
STORE_CHUNK = 64 * KIB
SIZE = 3 * 1024 * KIB + 12_345


def _data(size: int = SIZE, seed: str = '') -> bytes:
    block = hashlib.sha512(f'{seed}{size}'.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def _pieces(data: bytes, step: int = 100_000) -> Iterator[bytes]:
    """A generator body: requests sends it chunked."""
    for start in range(0, len(data), step):
        yield data[start:start + step]


@pytest.fixture
def digests(glance_server: GlanceServer) -> Iterator[Digests]:
    engine = ia_engine.create_engine(
        glance_server.state.instance_aware_db_url)
    try:
        yield Digests(ia_engine.Database(engine), 'default')
    finally:
        engine.dispose()


def _project() -> str:
    return uuid.uuid4().hex


def _create(api: Api, project: str) -> str:
    response = api.post('/v2/images', project=project, json={
        'name': 'checked', 'disk_format': 'raw', 'container_format': 'bare'})
    assert response.status_code == 201, response.text
    image_id: str = response.json()['id']
    return image_id


def _upload(api: Api, project: str, image_id: str, data: bytes,
            route: str = 'file') -> None:
    response = api.put(
        f'/v2/images/{image_id}/{route}', project=project,
        data=_pieces(data),
        headers={'Content-Type': 'application/octet-stream'})
    assert response.status_code == 204, response.text


def _stored_file(server: GlanceServer, image_id: str) -> str:
    path = os.path.join(server.state.store_dir('images'), image_id)
    assert os.path.getsize(path) > 0
    return path


def _flip(path: str, offset: int, length: int = 16) -> None:
    with open(path, 'r+b') as stream:
        stream.seek(offset)
        original = stream.read(length)
        stream.seek(offset)
        stream.write(bytes(b ^ 0xFF for b in original))


def _download(api: Api, project: str, image_id: str) -> bytes:
    response = api.get(f'/v2/images/{image_id}/file', project=project)
    assert response.status_code == 200, response.text
    return response.content


def _failed_download(api: Api, project: str, image_id: str,
                     headers: dict[str, str] | None = None,
                     status: int = 200) -> tuple[int, int | None]:
    """(bytes received, Content-Length) of a download that must fail;
    ``None`` for a chunked answer (Glance's image cache sends them)."""
    received = 0
    with api.get(f'/v2/images/{image_id}/file', project=project,
                 stream=True, headers=headers or {}) as response:
        assert response.status_code == status, response.text
        length = response.headers.get('Content-Length')
        announced = None if length is None else int(length)
        with pytest.raises((requests.exceptions.ChunkedEncodingError,
                            requests.exceptions.ConnectionError)):
            for chunk in response.iter_content(STORE_CHUNK):
                received += len(chunk)
    return received, announced


def _log_since(server: GlanceServer, offset: int, needle: str,
               timeout: float = 5.0) -> str:
    """The server log after ``offset``, once it contains ``needle``."""
    deadline = time.monotonic() + timeout
    while True:
        with open(server.log_file, 'rb') as stream:
            stream.seek(offset)
            text = stream.read().decode('utf-8', 'replace')
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _record(digests: Digests, image_id: str) -> Digest:
    record = digests.get(image_id)
    assert record is not None
    return record


def _verified(digests: Digests, image_id: str,
              timeout: float = 5.0) -> Digest:
    """The record once a download stamped it.

    A matching download is stamped after its last bytes went out, so the
    client may see the whole body a moment before the store does.
    """
    deadline = time.monotonic() + timeout
    while True:
        record = _record(digests, image_id)
        if record.verified_at is not None and record.verified_at > max(
                record.recorded_at, record.tampered_at or record.recorded_at):
            return record
        if time.monotonic() > deadline:
            return record
        time.sleep(0.02)


def test_upload_records_glance_digest_and_download_is_checked(
        api: Api, bare_api: Api, digests: Digests) -> None:
    project = _project()
    image_id = _create(api, project)
    data = _data()
    _upload(api, project, image_id, data)

    shown = bare_api.get(f'/v2/images/{image_id}', project=project).json()
    record = _record(digests, image_id)
    assert (record.algo, record.digest, record.size) == (
        shown['os_hash_algo'], shown['os_hash_value'], shown['size'])
    assert record.digest == hashlib.sha512(data).hexdigest()
    # Downloads are checked against the BLAKE3 fingerprint of the same pass.
    assert record.fingerprint == blake3.blake3(data).hexdigest()
    assert (record.source, record.state, record.verified_at) == (
        models.UPLOAD, models.RECORDED, None)

    assert _download(api, project, image_id) == data
    verified = _verified(digests, image_id)
    assert verified.verified_at is not None
    assert (verified.state, verified.tampered_at) == (models.RECORDED, None)


def test_tampered_file_in_the_store_is_caught(
        api: Api, bare_api: Api, digests: Digests,
        glance_server: GlanceServer) -> None:
    project = _project()
    image_id = _create(api, project)
    data = _data(seed='tamper')
    _upload(api, project, image_id, data)
    assert _download(api, project, image_id) == data
    assert _verified(digests, image_id).verified_at is not None

    path = _stored_file(glance_server, image_id)
    _flip(path, SIZE // 2)
    tampered = bytearray(data)
    tampered[SIZE // 2:SIZE // 2 + 16] = bytes(
        b ^ 0xFF for b in data[SIZE // 2:SIZE // 2 + 16])
    log_offset = os.path.getsize(glance_server.log_file)

    received, announced = _failed_download(api, project, image_id)
    assert announced == SIZE
    # Everything but the registry's last chunk, which was withheld.
    assert SIZE - STORE_CHUNK <= received < SIZE
    alert = f'ALERT: data of image {image_id} does not match'
    logged = _log_since(glance_server, log_offset, alert)
    assert alert in logged
    assert f'blake3 {blake3.blake3(data).hexdigest()}' in logged
    record = _record(digests, image_id)
    assert (record.state, record.digest) == (
        models.TAMPERED, hashlib.sha512(data).hexdigest())
    first_mark = record.tampered_at
    assert first_mark is not None

    # Every later full download fails too, and is marked again.
    received, _ = _failed_download(api, project, image_id)
    assert received < SIZE
    again = _record(digests, image_id)
    assert again.tampered_at is not None and again.tampered_at > first_mark

    # Bare Glance serves the changed bytes without a word: the check is ours.
    assert _download(bare_api, project, image_id) == bytes(tampered)
    # A range request through the stack is Glance's answer, unchecked.
    start = SIZE // 2 - 4
    partial = api.get(f'/v2/images/{image_id}/file', project=project,
                      headers={'Range': f'bytes={start}-{start + 23}'})
    assert partial.status_code == 206
    assert partial.content == bytes(tampered[start:start + 24])

    # The operator restores the file: served and verified again.
    _flip(path, SIZE // 2)
    assert _download(api, project, image_id) == data
    restored = _verified(digests, image_id)
    assert restored.state == models.RECORDED
    assert restored.verified_at is not None
    assert restored.tampered_at == again.tampered_at


def test_large_image_hashed_beside_the_transfer_is_checked_too(
        api: Api, digests: Digests, glance_server: GlanceServer) -> None:
    """Past its first MiBs the filter hashes in a thread of its own: a
    change near the end is still caught before the last chunk goes out."""
    size = 5 * hashing.THREAD_THRESHOLD + 4321
    project = _project()
    image_id = _create(api, project)
    data = _data(size, seed='large')
    _upload(api, project, image_id, data)
    assert _record(digests, image_id).digest == hashlib.sha512(
        data).hexdigest()
    assert _download(api, project, image_id) == data
    assert _verified(digests, image_id).verified_at is not None

    _flip(_stored_file(glance_server, image_id), size - STORE_CHUNK // 2)
    received, announced = _failed_download(api, project, image_id)
    assert announced == size
    assert size - 2 * STORE_CHUNK <= received < size
    assert _record(digests, image_id).state == models.TAMPERED


def test_truncated_file_in_the_store_is_caught(
        api: Api, digests: Digests, glance_server: GlanceServer) -> None:
    project = _project()
    image_id = _create(api, project)
    data = _data(seed='truncate')
    _upload(api, project, image_id, data)
    path = _stored_file(glance_server, image_id)
    with open(path, 'r+b') as stream:
        stream.truncate(SIZE - 1000)

    received, announced = _failed_download(api, project, image_id)
    assert (announced, received < SIZE - 1000) == (SIZE, True)
    assert _record(digests, image_id).state == models.TAMPERED


def test_staged_then_imported_data_is_checked(
        api: Api, bare_api: Api, digests: Digests,
        glance_server: GlanceServer) -> None:
    project = _project()
    image_id = _create(api, project)
    data = _data(seed='stage')
    _upload(api, project, image_id, data, route='stage')
    staged = _record(digests, image_id)
    assert (staged.source, staged.state, staged.digest, staged.size) == (
        models.STAGE, models.STAGED, hashlib.sha512(data).hexdigest(), SIZE)

    response = api.post(f'/v2/images/{image_id}/import', project=project,
                        json={'method': {'name': 'glance-direct'}})
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while True:
        shown = bare_api.get(f'/v2/images/{image_id}',
                             project=project).json()
        if shown['status'] == 'active' or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown['status'] == 'active', shown
    # glance-direct stored the staged bytes as they were.
    assert shown['os_hash_value'] == staged.digest

    assert _download(api, project, image_id) == data
    record = _verified(digests, image_id)
    assert (record.source, record.state, record.digest) == (
        models.STAGE, models.RECORDED, staged.digest)
    assert record.verified_at is not None

    _flip(_stored_file(glance_server, image_id), 100)
    received, _ = _failed_download(api, project, image_id)
    assert received < SIZE
    assert _record(digests, image_id).state == models.TAMPERED


def test_data_uploaded_without_the_stack_is_not_checked(
        api: Api, bare_api: Api, digests: Digests,
        glance_server: GlanceServer) -> None:
    project = _project()
    image_id = _create(api, project)
    data = _data(seed='bare')
    _upload(bare_api, project, image_id, data)
    assert digests.get(image_id) is None
    _flip(_stored_file(glance_server, image_id), 10)
    served = _download(api, project, image_id)
    assert len(served) == SIZE and served != data


def test_tampered_image_of_one_chunk_gets_500(
        api: Api, digests: Digests, glance_server: GlanceServer) -> None:
    """Nothing sent yet when the mismatch is known: gunicorn answers 500."""
    project = _project()
    image_id = _create(api, project)
    data = _data(1000, seed='small')
    _upload(api, project, image_id, data)
    _flip(_stored_file(glance_server, image_id), 500, 1)
    response = api.get(f'/v2/images/{image_id}/file', project=project)
    assert response.status_code == 500
    assert data[:100] not in response.content
    assert _record(digests, image_id).state == models.TAMPERED


# -- issue 20 ---------------------------------------------------------------

def _active(api: Api, project: str, image_id: str,
            timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        shown: dict[str, object] = api.get(f'/v2/images/{image_id}',
                                           project=project).json()
        if shown['status'] == 'active' or time.monotonic() > deadline:
            return shown
        time.sleep(0.2)


@pytest.mark.parametrize('range_header', [
    pytest.param('bytes=0-', id='from-the-start'),
    pytest.param(f'bytes=-{SIZE}', id='suffix-of-the-size'),
    pytest.param(f'bytes=-{SIZE + 10}', id='suffix-beyond-the-size'),
    pytest.param(f'bytes=0-{SIZE + 10}', id='end-beyond-the-size'),
    pytest.param(f'bytes=0-{SIZE - 1}', id='first-to-last-byte'),
])
def test_range_covering_the_whole_image_is_checked(
        api: Api, digests: Digests, glance_server: GlanceServer,
        range_header: str) -> None:
    """Finding 3: a range over the whole image is a full download."""
    project = _project()
    image_id = _create(api, project)
    data = _data(seed=f'range{range_header}')
    _upload(api, project, image_id, data)
    whole = api.get(f'/v2/images/{image_id}/file', project=project,
                    headers={'Range': range_header})
    assert whole.status_code == 206, whole.text
    assert whole.headers['Content-Range'] == f'bytes 0-{SIZE - 1}/{SIZE}'
    assert whole.content == data
    assert _verified(digests, image_id).verified_at is not None

    _flip(_stored_file(glance_server, image_id), SIZE // 3)
    log_offset = os.path.getsize(glance_server.log_file)
    received, announced = _failed_download(
        api, project, image_id, headers={'Range': range_header},
        status=206)
    assert announced == SIZE
    assert SIZE - STORE_CHUNK <= received < SIZE
    alert = f'ALERT: data of image {image_id} does not match'
    assert alert in _log_since(glance_server, log_offset, alert)
    assert _record(digests, image_id).state == models.TAMPERED

    # A partial range is Glance's answer, unchecked (documented).
    partial = api.get(f'/v2/images/{image_id}/file', project=project,
                      headers={'Range': f'bytes={SIZE // 3}-{SIZE - 1}'})
    assert partial.status_code == 206
    assert len(partial.content) == SIZE - SIZE // 3
    assert partial.content != data[SIZE // 3:]


def test_several_ranges_are_refused_by_glance(
        api: Api, digests: Digests) -> None:
    project = _project()
    image_id = _create(api, project)
    _upload(api, project, image_id, _data(seed='multi'))
    response = api.get(f'/v2/images/{image_id}/file', project=project,
                       headers={'Range': f'bytes=0-9,10-{SIZE - 1}'})
    assert response.status_code == 400
    assert 'multiple ranges are not supported' in response.text
    record = _record(digests, image_id)
    assert (record.state, record.verified_at) == (models.RECORDED, None)


@pytest.fixture
def own_server(
        tmp_path: pathlib.Path) -> Iterator[Callable[..., GlanceServer]]:
    """``own_server(flavor)``: a Glance of this test's own, started."""
    servers: list[GlanceServer] = []

    def start(flavor: str = glance.NOAUTH,
              extra_conf: str | None = None) -> GlanceServer:
        server = GlanceServer(tmp_path / f'glance-{flavor}', flavor=flavor,
                              max_lifetime=600)
        if extra_conf is not None:
            os.makedirs(server.state.config_dir, exist_ok=True)
            with open(os.path.join(server.state.config_dir, 'test.conf'),
                      'w', encoding='utf-8') as stream:
                stream.write(extra_conf)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def _digests_of(server: GlanceServer) -> Digests:
    engine = ia_engine.create_engine(server.state.instance_aware_db_url)
    return Digests(ia_engine.Database(engine), 'default')


def test_tampered_stage_imported_then_downloaded_by_a_fresh_worker(
        own_server: Callable[..., GlanceServer]) -> None:
    """Finding 1: the worker that serves the download never ran an import
    (a restart in between), so Glance's import options are not registered
    in it; a changed staged file is still a tamper, not adopted."""
    server = own_server()
    api = Api(server.url)
    digests = _digests_of(server)
    project = _project()
    image_id = _create(api, project)
    data = _data(seed='staged-tamper')
    _upload(api, project, image_id, data, route='stage')
    staged = os.path.join(server.state.store_dir('staging'), image_id)
    _flip(staged, SIZE // 2, 1)
    response = api.post(f'/v2/images/{image_id}/import', project=project,
                        json={'method': {'name': 'glance-direct'}})
    assert response.status_code == 202, response.text
    shown = _active(api, project, image_id)
    assert shown['status'] == 'active', shown
    assert shown['os_hash_value'] != hashlib.sha512(data).hexdigest()

    server.stop()
    server.start()  # a fresh worker: no import ran in it
    api = Api(server.url)
    log_offset = os.path.getsize(server.log_file)
    received, announced = _failed_download(api, project, image_id)
    assert announced == SIZE and received < SIZE
    staged_alert = (f'ALERT: the staged data of image {image_id} changed '
                    'before the import stored it')
    logged = _log_since(server, log_offset, staged_alert)
    assert staged_alert in logged
    record = _record(digests, image_id)
    assert (record.source, record.state, record.digest) == (
        models.STAGE, models.TAMPERED, hashlib.sha512(data).hexdigest())
    assert 'import plugins' not in logged.split(staged_alert)[0]

    # And so on every later download.
    received, _ = _failed_download(api, project, image_id)
    assert received < SIZE
    digests.db.engine.dispose()


def test_image_cache_in_the_pipeline_changes_nothing(
        own_server: Callable[..., GlanceServer]) -> None:
    """Finding 2: Glance's cache tee raises "Checksum verification failed"
    at the end of a changed file; the download is still marked and
    alerted, on every attempt."""
    server = own_server(glance.CACHING)
    api = Api(server.url)
    digests = _digests_of(server)
    project = _project()
    image_id = _create(api, project)
    data = _data(seed='cached')
    _upload(api, project, image_id, data)
    path = _stored_file(server, image_id)
    _flip(path, SIZE // 2)
    for attempt in range(2):
        log_offset = os.path.getsize(server.log_file)
        received, announced = _failed_download(api, project, image_id)
        # The cache middleware answers chunked: the broken chunked body
        # is what the client sees fail.
        assert announced is None and received < SIZE
        alert = f'ALERT: data of image {image_id} does not match'
        logged = _log_since(server, log_offset, alert)
        assert alert in logged, logged[-3000:]
        assert 'Checksum verification failed' in logged
        record = _record(digests, image_id)
        assert record.state == models.TAMPERED, attempt
    assert not os.path.exists(os.path.join(server.state.join('cache'),
                                           image_id))

    # Restored: served, verified, and cached; the cached copy is checked.
    _flip(path, SIZE // 2)
    assert _download(api, project, image_id) == data
    assert _verified(digests, image_id).state == models.RECORDED
    first = _record(digests, image_id).verified_at
    assert _download(api, project, image_id) == data
    later = _verified(digests, image_id)
    assert first is not None and later.verified_at is not None
    assert later.verified_at > first
    digests.db.engine.dispose()


@pytest.fixture
def web_file(tmp_path: pathlib.Path) -> Iterator[tuple[str, int, bytes]]:
    """(URL, port, data) of a file served over HTTP on 127.0.0.1."""
    root = tmp_path / 'www'
    root.mkdir()
    data = _data(seed='web')
    (root / 'image.raw').write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{port}/image.raw', port, data
    finally:
        server.shutdown()
        server.server_close()


def test_web_download_adopts_glance_digest_and_checks_downloads(
        own_server: Callable[..., GlanceServer],
        web_file: tuple[str, int, bytes]) -> None:
    """The stack never sees the bytes Glance fetches: Glance's digest
    computed at import is adopted at the first download, which is
    checked against it, and so is every later one."""
    url, port, data = web_file
    server = own_server(extra_conf=(
        # Glance refuses loopback sources unless they are allowed.
        '[import_filtering_opts]\nallowed_hosts = [127.0.0.1]\n'
        f'allowed_ports = [{port}]\n'))
    api = Api(server.url)
    digests = _digests_of(server)
    project = _project()
    image_id = _create(api, project)
    response = api.post(f'/v2/images/{image_id}/import', project=project,
                        json={'method': {'name': 'web-download',
                                         'uri': url}})
    assert response.status_code == 202, response.text
    pending = _record(digests, image_id)
    assert (pending.source, pending.state) == (models.IMPORT,
                                               models.PENDING)
    shown = _active(api, project, image_id)
    assert shown['status'] == 'active', shown

    assert _download(api, project, image_id) == data
    record = _verified(digests, image_id)
    assert (record.source, record.state, record.digest, record.size) == (
        models.IMPORT, models.RECORDED, hashlib.sha512(data).hexdigest(),
        SIZE)
    assert record.verified_at is not None
    assert record.fingerprint == blake3.blake3(data).hexdigest()

    _flip(_stored_file(server, image_id), 1000)
    log_offset = os.path.getsize(server.log_file)
    received, _ = _failed_download(api, project, image_id)
    assert received < SIZE
    alert = f'ALERT: data of image {image_id} does not match'
    assert alert in _log_since(server, log_offset, alert)
    assert _record(digests, image_id).state == models.TAMPERED
    digests.db.engine.dispose()
