"""Image data streams through the stack untouched, in constant memory.

A few hundred MB go up with chunked transfer encoding and come back down
through the stack while the gunicorn worker's resident memory is sampled;
the bytes are checked end to end and against what Glance recorded.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator

import psutil
import pytest
import requests

from tests.functional.conftest import headers
from tests.local.server import GlanceServer

MIB = 1024 * 1024
SIZE = 256 * MIB
CHUNK = MIB
#: What the worker may grow by while moving SIZE bytes each way.  Well
#: under SIZE/8: anything buffering the body would blow through it.
MAX_GROWTH = 32 * MIB
TIMEOUT = 120


def _pattern(index: int) -> bytes:
    """Chunk ``index`` of the image: distinct, cheap to regenerate."""
    return hashlib.sha256(str(index).encode()).digest() * (CHUNK // 32)


def _body() -> Iterator[bytes]:
    for index in range(SIZE // CHUNK):
        yield _pattern(index)


class RssSampler(threading.Thread):
    """Peak resident memory of the server's worker processes."""

    def __init__(self, server: GlanceServer) -> None:
        super().__init__(daemon=True)
        assert server.pid is not None
        self.workers = psutil.Process(server.pid).children(recursive=True)
        assert self.workers, 'gunicorn has no worker process'
        self.baseline = self._rss()
        self.peak = self.baseline
        self._done = threading.Event()

    def _rss(self) -> int:
        return sum(w.memory_info().rss for w in self.workers)

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def _create(url: str, project: str) -> str:
    response = requests.post(
        url + '/v2/images', headers=headers(project), timeout=TIMEOUT,
        json={'name': 'big', 'disk_format': 'raw',
              'container_format': 'bare',
              'instance_uuid': str(uuid.uuid4()), 'image_type': 'snapshot'})
    assert response.status_code == 201, response.text
    image_id: str = response.json()['id']
    return image_id


def test_large_image_streams_both_ways_in_constant_memory(
        glance_server: GlanceServer) -> None:
    project = uuid.uuid4().hex
    url = glance_server.url
    image_id = _create(url, project)
    expected = hashlib.sha512()
    for index in range(SIZE // CHUNK):
        expected.update(_pattern(index))

    with RssSampler(glance_server) as upload:
        response = requests.put(
            f'{url}/v2/images/{image_id}/file', data=_body(),
            headers={**headers(project),
                     'Content-Type': 'application/octet-stream'},
            timeout=TIMEOUT)
    assert response.status_code == 204, response.text
    assert upload.growth < MAX_GROWTH, (
        f'worker grew by {upload.growth // MIB} MiB during the upload')

    shown = requests.get(f'{url}/v2/images/{image_id}',
                         headers=headers(project), timeout=TIMEOUT).json()
    assert (shown['status'], shown['size']) == ('active', SIZE)
    assert (shown['os_hash_algo'], shown['os_hash_value']) == (
        'sha512', expected.hexdigest())
    # The captured keys are given back on the same image, data or not.
    assert shown['image_type'] == 'snapshot'

    received = hashlib.sha512()
    total = 0
    with RssSampler(glance_server) as download, requests.get(
            f'{url}/v2/images/{image_id}/file', headers=headers(project),
            stream=True, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers['Content-Length'] == str(SIZE)
        for chunk in response.iter_content(CHUNK):
            received.update(chunk)
            total += len(chunk)
    assert total == SIZE
    assert received.hexdigest() == expected.hexdigest()
    assert download.growth < MAX_GROWTH, (
        f'worker grew by {download.growth // MIB} MiB during the download')

    # A range request is answered by Glance as asked, bytes included.
    response = requests.get(
        f'{url}/v2/images/{image_id}/file',
        headers={**headers(project), 'Range': f'bytes={CHUNK}-{CHUNK + 99}'},
        timeout=TIMEOUT)
    assert response.status_code == 206
    assert response.content == _pattern(1)[:100]


def test_client_disconnect_mid_download_leaves_server_healthy(
        glance_server: GlanceServer) -> None:
    project = uuid.uuid4().hex
    url = glance_server.url
    image_id = _create(url, project)
    response = requests.put(
        f'{url}/v2/images/{image_id}/file',
        data=(_pattern(i) for i in range(32)),
        headers={**headers(project),
                 'Content-Type': 'application/octet-stream'},
        timeout=TIMEOUT)
    assert response.status_code == 204
    for _ in range(5):
        with requests.get(f'{url}/v2/images/{image_id}/file',
                          headers=headers(project), stream=True,
                          timeout=TIMEOUT) as partial:
            assert partial.status_code == 200
            first = next(partial.iter_content(CHUNK))
            assert first == _pattern(0)[:len(first)]
        # Closed after one chunk; the next request is served normally.
    shown = requests.get(f'{url}/v2/images/{image_id}',
                         headers=headers(project), timeout=TIMEOUT)
    assert shown.status_code == 200
    assert shown.json()['size'] == 32 * CHUNK


@pytest.mark.parametrize('length', [0, 1, CHUNK + 7])
def test_content_length_uploads_keep_their_bytes(
        glance_server: GlanceServer, length: int) -> None:
    project = uuid.uuid4().hex
    url = glance_server.url
    image_id = _create(url, project)
    data = (_pattern(0) * 2)[:length]
    response = requests.put(
        f'{url}/v2/images/{image_id}/file', data=data,
        headers={**headers(project),
                 'Content-Type': 'application/octet-stream'},
        timeout=TIMEOUT)
    assert response.status_code == 204, response.text
    downloaded = requests.get(f'{url}/v2/images/{image_id}/file',
                              headers=headers(project), timeout=TIMEOUT)
    bare = requests.get(f'{glance_server.bare_url}/v2/images/{image_id}'
                        '/file', headers=headers(project), timeout=TIMEOUT)
    assert downloaded.status_code == bare.status_code == 200
    assert downloaded.content == bare.content == data
