"""Standalone mode: the stack as its own service in front of a Glance.

A :class:`~tests.local.server.StandaloneServer` (gunicorn, the
stack around :class:`instance_aware.proxy.ProxyApp`) forwards to the
*bare* endpoint of the session's real Glance, which never sees the
stack: what it stores is what a deployment in front of an unmodified
Glance would store.  Small local upstreams on 127.0.0.1 stand in for a
Glance that echoes what it received, closes connections, is down or
never answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import http.server
import io
import json
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import wsgiref.simple_server
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil
import pytest
import requests
import webob
from oslo_config import cfg
from oslo_middleware import http_proxy_to_wsgi

from instance_aware import proxy
from instance_aware.store import engine as ia_engine
from instance_aware.store import models
from instance_aware.store.records import Records
from tests.functional.conftest import Api, headers
from tests.functional.test_data_path import RssSampler
from tests.local import serve as cmd_main
from tests.local import server as local_server
from tests.local.server import GlanceServer, StandaloneServer

pytestmark = pytest.mark.functional

MIB = 1024 * 1024
TIMEOUT = 60
#: Seconds any helper server of this module may live.
LIFETIME = 900

HOP_REQUEST_HEADERS = {
    'Connection': 'keep-alive, X-Hop-Request',
    'X-Hop-Request': 'named in Connection',
    'Keep-Alive': 'timeout=30',
    'TE': 'trailers',
    'Trailer': 'X-Checksum',
    'Proxy-Authorization': 'Basic c2VjcmV0OnNlY3JldA==',
    'Proxy-Connection': 'keep-alive',
    'Upgrade': 'h2c',
}
HOP_RESPONSE_HEADERS = [
    ('Connection', 'keep-alive, X-Hop-Response'),
    ('X-Hop-Response', 'named in Connection'),
    ('Keep-Alive', 'timeout=30'),
    ('Trailer', 'X-Checksum'),
    ('Proxy-Authenticate', 'Basic realm="upstream"'),
    ('Proxy-Agent', 'echo'),
    ('Upgrade', 'h2c'),
]


def _unique(prefix: str) -> str:
    return f'{prefix}-{uuid.uuid4().hex[:8]}'


def _names(pairs: Any) -> set[str]:
    return {str(name).lower() for name, _value in pairs}


# -- helper upstreams ------------------------------------------------------


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Routes of :class:`EchoUpstream`."""

    protocol_version = 'HTTP/1.1'
    server: EchoUpstream

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _read_body(self) -> tuple[bytes, bool]:
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b''):
                        pass
                    return bytes(data), True
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length), False

    def _send(self, status: int, body: bytes,
              extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        body, chunked = self._read_body()
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == '/close':
            self.close_connection = True  # no answer at all
            return
        if url.path.endswith('/file') and self.command == 'GET':
            self._stream()
            return
        if url.path == '/location':
            self._send(201, b'{}', [('Location', query['to']),
                                    ('Content-Location', query['to'])])
            return
        if url.path in ('/', '/versions'):
            document = {'versions': [{'id': 'v2.18', 'status': 'CURRENT',
                                      'links': [{'rel': 'self', 'href':
                                                 self.server.url + '/v2/'}]}]}
            self._send(200, json.dumps(document).encode())
            return
        echo = {
            'method': self.command, 'path': self.path,
            'headers': [[k, v] for k, v in self.headers.items()],
            'body_length': len(body), 'chunked': chunked,
            'body_sha256': hashlib.sha256(body).hexdigest(),
        }
        self._send(200, json.dumps(echo).encode(),
                   [*HOP_RESPONSE_HEADERS, ('X-End-To-End', 'kept')])

    def _stream(self) -> None:
        """A 1 GiB download, sent until the reader goes away."""
        chunk = b'x' * (256 * 1024)
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(1024 * MIB))
        self.end_headers()
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                self.wfile.write(chunk)
        except OSError:
            self.server.aborted.set()
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class EchoUpstream(http.server.ThreadingHTTPServer):
    """An upstream on 127.0.0.1 that answers with what it received.

    ``/close`` drops the connection unanswered; ``GET .../file`` streams
    1 GiB and sets :attr:`aborted` when its reader goes away;
    ``/location?to=URL`` answers 201 with that ``Location``; ``/`` and
    ``/versions`` are a version document linking to itself.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(('127.0.0.1', 0), _EchoHandler)
        self.aborted = threading.Event()
        self.url = f'http://127.0.0.1:{self.server_address[1]}'
        self._thread = threading.Thread(target=self.serve_forever,
                                        daemon=True)
        self._timer = threading.Timer(LIFETIME, self.shutdown)
        self._timer.daemon = True

    def __enter__(self) -> EchoUpstream:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self.shutdown()
        self.server_close()


class SilentUpstream:
    """Accepts connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.accepted.append(self.sock.accept()[0])
            except TimeoutError:
                continue
        for conn in self.accepted:
            conn.close()
        self.sock.close()

    def __enter__(self) -> SilentUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


#: What :class:`FaultyUpstream` sends on ``/short``: 100 KiB of 1 MiB.
SHORT_SENT = bytes(range(256)) * 400
#: What it sends of the broken chunked body: a whole chunk, then part of
#: the next one.
CHUNKED_SENT = (b'a' * 10, b'b' * 100)


def _head(status: str = '200 OK', length: int | None = None,
          chunked: bool = False) -> bytes:
    lines = [f'HTTP/1.1 {status}', 'Content-Type: application/octet-stream',
             'Connection: close']
    if length is not None:
        lines.append(f'Content-Length: {length}')
    if chunked:
        lines.append('Transfer-Encoding: chunked')
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('ascii')


def _until_reader_leaves(conn: socket.socket) -> None:
    """Say nothing more until the proxy closes the connection."""
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


class FaultyUpstream:
    """An upstream on 127.0.0.1 scripted to fail, one way per script
    (the ``script`` query parameter, else the path):

    ``short``: 100 KiB of a 1 MiB ``Content-Length``, then closes.
    ``short-json``: 11 bytes of a 1000-byte JSON document, then closes.
    ``broken-chunked``: a chunk, part of the next, then closes.
    ``silent-after-10``: 10 bytes of 1000, then silence.
    ``headers-then-close``: headers of a 100-byte body, then closes.
    ``headers-then-silent``: headers of a 100-byte body, then silence.
    ``drip``: a 1000-byte body, a byte every quarter of a second.
    Anything else: a complete ``ok``.  Silences last until the proxy
    hangs up (30 s at most); the server lives :data:`LIFETIME` seconds
    at most.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn = self.sock.accept()[0]
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()
        self.sock.close()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            head = b''
            while b'\r\n\r\n' not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            target = urllib.parse.urlsplit(
                head.split(b' ', 2)[1].decode('ascii'))
            script = dict(urllib.parse.parse_qsl(target.query)).get(
                'script', target.path.strip('/'))
            self._script(conn, script)
        except OSError:
            pass
        finally:
            conn.close()

    def _script(self, conn: socket.socket, script: str) -> None:
        if script == 'short':
            conn.sendall(_head(length=MIB) + SHORT_SENT)
        elif script == 'short-json':
            head = _head(length=1000).replace(b'application/octet-stream',
                                              b'application/json')
            conn.sendall(head + b'{"versions"')
        elif script == 'broken-chunked':
            whole, part = CHUNKED_SENT
            conn.sendall(_head(chunked=True) + b'a\r\n' + whole
                         + b'\r\n10000\r\n' + part)
        elif script == 'silent-after-10':
            conn.sendall(_head(length=1000) + b'0123456789')
            _until_reader_leaves(conn)
        elif script == 'headers-then-close':
            conn.sendall(_head(length=100))
        elif script == 'headers-then-silent':
            conn.sendall(_head(length=100))
            _until_reader_leaves(conn)
        elif script == 'drip':
            conn.sendall(_head(length=1000))
            for _ in range(1000):
                if self._stop.wait(0.25):
                    return
                conn.sendall(b'.')
        else:
            conn.sendall(_head(length=2) + b'ok')

    def __enter__(self) -> FaultyUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingWSGIServer(socketserver.ThreadingMixIn,
                           wsgiref.simple_server.WSGIServer):
    daemon_threads = True


def _glance_like(environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> list[bytes]:
    """Links built as Glance builds them: from the request's
    ``application_url``."""
    request = webob.Request(environ)
    base = request.application_url
    if request.path_info in ('/', '/versions'):
        body = json.dumps({'versions': [{
            'id': 'v2.18', 'status': 'CURRENT',
            'links': [{'rel': 'self', 'href': base + '/v2/'}]}]}).encode()
        start_response('200 OK', [('Content-Type', 'application/json'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    start_response('201 Created', [
        ('Location', base + '/v2/images/1'),
        ('Content-Type', 'application/json'), ('Content-Length', '2')])
    return [b'{}']


class ForwardingAwareUpstream:
    """A Glance stand-in behind oslo.middleware's ``http_proxy_to_wsgi``
    with ``enable_proxy_headers_parsing``: its links follow the
    forwarding headers it receives.  ``/`` and ``/versions`` are a
    version document, anything else a 201 with a ``Location``."""

    def __init__(self) -> None:
        conf = cfg.ConfigOpts()
        app = http_proxy_to_wsgi.HTTPProxyToWSGI(_glance_like, conf)
        conf.set_override('enable_proxy_headers_parsing', True,
                          group='oslo_middleware')
        self.server = wsgiref.simple_server.make_server(
            '127.0.0.1', 0, app, server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        daemon=True)
        self._timer = threading.Timer(LIFETIME, self.server.shutdown)
        self._timer.daemon = True

    def __enter__(self) -> ForwardingAwareUpstream:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()


# -- fixtures ----------------------------------------------------------------


def _standalone(factory: pytest.TempPathFactory, name: str, upstream: str,
                **proxy_options: str) -> StandaloneServer:
    return StandaloneServer(factory.mktemp(name), upstream,
                            max_lifetime=LIFETIME,
                            proxy_options=proxy_options)


@pytest.fixture(scope='module')
def stack(glance_server: GlanceServer,
          tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[StandaloneServer]:
    """The standalone stack in front of the bare Glance."""
    with _standalone(tmp_path_factory, 'standalone',
                     glance_server.bare_url) as server:
        yield server


@pytest.fixture
def stack_api(stack: StandaloneServer) -> Iterator[Api]:
    client = Api(stack.url, timeout=TIMEOUT)
    yield client
    client.close()


@pytest.fixture(scope='module')
def echo() -> Iterator[EchoUpstream]:
    with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture(scope='module')
def echo_stack(echo: EchoUpstream,
               tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[StandaloneServer]:
    """In front of the echo upstream: X-Forwarded-* not trusted, links
    rewritten to a public endpoint."""
    with _standalone(tmp_path_factory, 'echo', echo.url, read_timeout='5',
                     public_endpoint='https://images.example.com/image'
                     ) as server:
        yield server


@pytest.fixture(scope='module')
def trusting_stack(echo: EchoUpstream,
                   tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[StandaloneServer]:
    """In front of the echo upstream, behind a trusted proxy, sending
    the upstream's own Host."""
    with _standalone(tmp_path_factory, 'trusting', echo.url,
                     trust_forwarded_headers='true',
                     preserve_host='false') as server:
        yield server


def _echoed(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    document['header_map'] = {k.lower(): v for k, v in document['headers']}
    return document


# -- through the stack to a real Glance --------------------------------------


def test_instance_keys_captured_and_stripped_through_the_lifecycle(
        stack_api: Api, bare_api: Api) -> None:
    project = _unique('sa')
    instance = str(uuid.uuid4())
    name = _unique('snap')
    created = stack_api.post('/v2/images', project=project, json={
        'name': name, 'disk_format': 'raw', 'container_format': 'bare',
        'instance_uuid': instance, 'image_type': 'backup',
        'backup_type': 'daily', 'owner_user_name': 'alice'})
    assert created.status_code == 201, created.text
    image = created.json()
    image_id = image['id']
    assert (image['name'], image['owner'], image['status']) == (
        name, project, 'queued')
    assert (image['instance_uuid'], image['image_type'],
            image['backup_type'], image['owner_user_name']) == (
        instance, 'backup', 'daily', 'alice')

    stored = bare_api.get(f'/v2/images/{image_id}', project=project)
    assert stored.status_code == 200, stored.text
    bare = stored.json()
    assert bare['name'] == name
    for key in ('instance_uuid', 'image_type', 'backup_type',
                'owner_user_name'):
        assert key not in bare, key

    shown = stack_api.get(f'/v2/images/{image_id}', project=project).json()
    assert (shown['instance_uuid'], shown['backup_type']) == (
        instance, 'daily')

    listed = stack_api.get('/v2/images', project=project, params={
        'instance_uuid': instance, 'image_type': 'backup',
        'backup_type': 'daily'})
    assert listed.status_code == 200, listed.text
    assert [i['id'] for i in listed.json()['images']] == [image_id]
    assert listed.json()['images'][0]['image_type'] == 'backup'
    # Bare Glance has nothing to match the stripped keys with.
    assert bare_api.get('/v2/images', project=project, params={
        'instance_uuid': instance}).json()['images'] == []

    patched = stack_api.patch(
        f'/v2/images/{image_id}', project=project,
        headers={'Content-Type':
                 'application/openstack-images-v2.1-json-patch'},
        data=json.dumps([
            {'op': 'replace', 'path': '/backup_type', 'value': 'weekly'},
            {'op': 'add', 'path': '/description', 'value': 'kept'}]))
    assert patched.status_code == 200, patched.text
    assert (patched.json()['backup_type'],
            patched.json()['description']) == ('weekly', 'kept')
    bare = bare_api.get(f'/v2/images/{image_id}', project=project).json()
    assert bare['description'] == 'kept'
    assert 'backup_type' not in bare

    related = stack_api.get(f'/v2/instances/{instance}/images',
                            project=project)
    assert related.status_code == 200, related.text
    [entry] = related.json()['images']
    assert (entry['image_id'], entry['image_type'], entry['backup_type'],
            entry['owner']) == (image_id, 'backup', 'weekly', project)

    deleted = stack_api.delete(f'/v2/images/{image_id}', project=project)
    assert deleted.status_code == 204, deleted.text
    assert bare_api.get(f'/v2/images/{image_id}',
                        project=project).status_code == 404
    assert stack_api.get(f'/v2/instances/{instance}/images',
                         project=project).json()['images'] == []
    history = stack_api.get(f'/v2/instances/{instance}/images',
                            project=project,
                            params={'include_deleted': 'true'}).json()
    assert [(e['image_id'], e['status']) for e in history['images']] == [
        (image_id, 'deleted')]


def test_query_api_answers_newest_first_and_only_through_the_stack(
        stack_api: Api, bare_api: Api) -> None:
    project = _unique('sa')
    instance = str(uuid.uuid4())
    ids = []
    for kind, backup in (('snapshot', None), ('backup', 'daily'),
                         ('backup', 'daily')):
        body = {'name': _unique(kind), 'disk_format': 'raw',
                'container_format': 'bare', 'instance_uuid': instance,
                'image_type': kind}
        if backup:
            body['backup_type'] = backup
        created = stack_api.post('/v2/images', project=project, json=body)
        assert created.status_code == 201, created.text
        ids.append(created.json()['id'])
        time.sleep(1.1)  # distinct created_at (second resolution)

    path = f'/v2/instances/{instance}/images'
    everything = stack_api.get(path, project=project).json()['images']
    assert [e['image_id'] for e in everything] == ids[::-1]
    daily = stack_api.get(path, project=project, params={
        'image_type': 'backup', 'backup_type': 'daily'}).json()['images']
    assert [e['image_id'] for e in daily] == [ids[2], ids[1]]
    assert stack_api.get(path, project=_unique('other')).json()[
        'images'] == []
    assert bare_api.get(path, project=project).status_code == 404


def test_locations_hidden_from_members_shown_to_admins(
        stack_api: Api, bare_api: Api) -> None:
    project, name = _unique('sa'), _unique('loc')
    created = stack_api.post('/v2/images', project=project, json={
        'name': name, 'disk_format': 'raw', 'container_format': 'bare'})
    image_id = created.json()['id']
    uploaded = stack_api.put(
        f'/v2/images/{image_id}/file', project=project, data=b'a' * 4096,
        headers={'Content-Type': 'application/octet-stream'})
    assert uploaded.status_code == 204, uploaded.text

    bare = bare_api.get(f'/v2/images/{image_id}', project=project).json()
    assert bare['direct_url'].startswith('file://')
    assert [loc['url'] for loc in bare['locations']] == [bare['direct_url']]

    member = stack_api.get(f'/v2/images/{image_id}', project=project)
    assert member.status_code == 200
    assert 'locations' not in member.json()
    assert 'direct_url' not in member.json()
    assert member.json()['status'] == 'active'
    assert 'file://' not in member.text
    listed = stack_api.get('/v2/images', project=project,
                           params={'name': name}).json()['images']
    assert [i['id'] for i in listed] == [image_id]
    assert 'locations' not in listed[0]

    admin = stack_api.get(f'/v2/images/{image_id}', project=project,
                          roles=('admin', 'member', 'reader')).json()
    assert admin['direct_url'] == bare['direct_url']
    assert admin['locations'] == bare['locations']

    refused = stack_api.patch(
        f'/v2/images/{image_id}', project=project,
        headers={'Content-Type':
                 'application/openstack-images-v2.1-json-patch'},
        data=json.dumps([{'op': 'remove', 'path': '/locations/0'}]))
    assert refused.status_code == 403, refused.text
    assert 'not authorized to change the locations' in refused.text
    assert bare_api.get(f'/v2/images/{image_id}', project=project).json()[
        'locations'] == bare['locations']


def test_location_header_left_as_glance_wrote_it(
        stack: StandaloneServer, glance_server: GlanceServer,
        stack_api: Api, bare_api: Api) -> None:
    """Glance writes it for the Host it is sent: the client's."""
    project = _unique('sa')
    body = {'name': _unique('where'), 'disk_format': 'raw',
            'container_format': 'bare'}
    through = stack_api.post('/v2/images', project=project, json=body)
    direct = bare_api.post('/v2/images', project=project, json=body)
    assert through.headers['Location'] == (
        f'{stack.url}/v2/images/{through.json()["id"]}')
    assert direct.headers['Location'] == (
        f'{glance_server.bare_url}/v2/images/{direct.json()["id"]}')
    assert through.json()['self'] == f'/v2/images/{through.json()["id"]}'
    versions = stack_api.get('/versions').json()['versions']
    assert {link['href'] for version in versions
            for link in version['links']} == {f'{stack.url}/v2/'}


def test_openstacksdk_discovers_and_keeps_using_the_stack(
        stack: StandaloneServer, stack_api: Api) -> None:
    """Version discovery must not lead clients around the stack: the
    keys given back exist only in the stack's database."""
    import openstack.connection

    from tests.local import identity

    project = _unique('sa')
    instance = str(uuid.uuid4())
    created = stack_api.post('/v2/images', project=project, json={
        'name': _unique('sdk'), 'disk_format': 'raw',
        'container_format': 'bare', 'instance_uuid': instance,
        'image_type': 'snapshot'})
    image_id = created.json()['id']
    session = identity.session_for(project, timeout=TIMEOUT)
    connection = openstack.connection.Connection(
        session=session, image_endpoint_override=stack.url,
        image_api_version='2')
    try:
        shown = connection.image.get_image(image_id)
        listed = list(connection.image.images(instance_uuid=instance))
    finally:
        connection.close()
    assert (shown.instance_uuid, shown.properties['image_type']) == (
        instance, 'snapshot')
    assert [image.id for image in listed] == [image_id]


def test_large_chunked_upload_and_download_stream_in_bounded_memory(
        stack: StandaloneServer, stack_api: Api, bare_api: Api) -> None:
    size, chunk = 80 * MIB, MIB

    def pattern(index: int) -> bytes:
        return hashlib.sha256(str(index).encode()).digest() * (chunk // 32)

    expected = hashlib.sha512()
    for index in range(size // chunk):
        expected.update(pattern(index))
    project = _unique('sa')
    image_id = stack_api.post('/v2/images', project=project, json={
        'name': 'big', 'disk_format': 'raw', 'container_format': 'bare',
        'instance_uuid': str(uuid.uuid4()), 'image_type': 'snapshot'},
    ).json()['id']

    with RssSampler(stack) as upload:
        response = stack_api.put(
            f'/v2/images/{image_id}/file', project=project,
            data=(pattern(i) for i in range(size // chunk)),  # chunked
            headers={'Content-Type': 'application/octet-stream'},
            timeout=120)
    assert response.status_code == 204, response.text
    assert upload.growth < 32 * MIB, (
        f'stack worker grew by {upload.growth // MIB} MiB uploading')
    bare = bare_api.get(f'/v2/images/{image_id}', project=project).json()
    assert (bare['status'], bare['size'], bare['os_hash_value']) == (
        'active', size, expected.hexdigest())

    received, total = hashlib.sha512(), 0
    with RssSampler(stack) as download, stack_api.get(
            f'/v2/images/{image_id}/file', project=project, stream=True,
            timeout=120) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers['Content-Length'] == str(size)
        assert 'Transfer-Encoding' not in streamed.headers
        for piece in streamed.iter_content(chunk):
            received.update(piece)
            total += len(piece)
    assert (total, received.hexdigest()) == (size, expected.hexdigest())
    assert download.growth < 32 * MIB, (
        f'stack worker grew by {download.growth // MIB} MiB downloading')

    ranged = stack_api.get(f'/v2/images/{image_id}/file', project=project,
                           headers={'Range': f'bytes={chunk}-{chunk + 9}'})
    assert ranged.status_code == 206
    assert ranged.content == pattern(1)[:10]


@pytest.mark.parametrize('length', [0, 1, MIB + 7])
def test_content_length_uploads_keep_their_bytes(
        stack_api: Api, bare_api: Api, length: int) -> None:
    project = _unique('sa')
    image_id = stack_api.post('/v2/images', project=project, json={
        'name': 'small', 'disk_format': 'raw',
        'container_format': 'bare'}).json()['id']
    data = (b'0123456789abcdef' * (length // 16 + 1))[:length]
    response = stack_api.put(
        f'/v2/images/{image_id}/file', project=project, data=data,
        headers={'Content-Type': 'application/octet-stream'})
    assert response.status_code == 204, response.text
    through = stack_api.get(f'/v2/images/{image_id}/file', project=project)
    direct = bare_api.get(f'/v2/images/{image_id}/file', project=project)
    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content == data
    assert through.headers['Content-Length'] == str(length)


def _upstream_connections(server: GlanceServer, port: int) -> int:
    assert server.pid is not None
    count = 0
    for worker in psutil.Process(server.pid).children(recursive=True):
        count += sum(1 for conn in worker.net_connections('tcp')
                     if conn.raddr and conn.raddr.port == port
                     and conn.status == psutil.CONN_ESTABLISHED)
    return count


def test_abandoned_downloads_leave_no_upstream_connection_behind(
        stack: StandaloneServer, glance_server: GlanceServer,
        stack_api: Api) -> None:
    project = _unique('sa')
    image_id = stack_api.post('/v2/images', project=project, json={
        'name': 'abandoned', 'disk_format': 'raw',
        'container_format': 'bare'}).json()['id']
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB
    assert stack_api.put(
        f'/v2/images/{image_id}/file', project=project, data=data,
        headers={'Content-Type': 'application/octet-stream'},
    ).status_code == 204
    for _ in range(15):
        with stack_api.get(f'/v2/images/{image_id}/file', project=project,
                           stream=True) as partial:
            assert partial.status_code == 200
            first = next(partial.iter_content(64 * 1024))
            assert first == data[:len(first)]
    bare_port = glance_server.bare_port
    assert bare_port is not None
    deadline = time.monotonic() + 10
    while _upstream_connections(stack, bare_port) > 10:  # pool_maxsize
        assert time.monotonic() < deadline, 'upstream connections leaked'
        time.sleep(0.2)
    whole = stack_api.get(f'/v2/images/{image_id}/file', project=project)
    assert whole.content == data


# -- upstream failures -------------------------------------------------------


def test_upstream_down_is_a_502_and_nothing_is_recorded(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    closed = f'http://127.0.0.1:{local_server.free_port()}'
    with _standalone(tmp_path_factory, 'down', closed,
                     connect_timeout='2') as server:
        api = Api(server.url, timeout=TIMEOUT)
        listed = api.get('/v2/images', project='p',
                         headers={'Accept': 'application/json'})
        assert listed.status_code == 502
        error = listed.json()
        assert (error['code'], error['title']) == ('502 Bad Gateway',
                                                   'Bad Gateway')
        assert error['message'].startswith(
            'The image service behind this endpoint could not be '
            'reached.  Retry later.')
        assert closed.rsplit(':', 1)[1] not in listed.text

        instance = str(uuid.uuid4())
        created = api.post('/v2/images', project='p', json={
            'name': 'lost', 'instance_uuid': instance,
            'image_type': 'snapshot'})
        assert created.status_code == 502
        assert 'could not be reached' in created.text
        # The stack's own API still answers: nothing was recorded.
        related = api.get(f'/v2/instances/{instance}/images', project='p',
                          params={'include_deleted': 'true'})
        assert related.status_code == 200, related.text
        assert related.json()['images'] == []
        api.close()
        assert 'Upstream unreachable for GET' in server.log_tail()


def test_silent_upstream_is_a_504(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with SilentUpstream() as silent, _standalone(
            tmp_path_factory, 'silent', silent.url,
            read_timeout='1') as server:
        began = time.monotonic()
        response = requests.get(
            server.url + '/v2/images', timeout=TIMEOUT,
            headers={**headers('p'), 'Accept': 'application/json'})
        took = time.monotonic() - began
        assert response.status_code == 504
        error = response.json()
        assert (error['code'], error['title']) == ('504 Gateway Timeout',
                                                   'Gateway Timeout')
        assert error['message'].startswith(
            'The image service behind this endpoint did not answer '
            'within 1 seconds.')
        assert took < 15
        assert silent.accepted, 'the stack never connected'
        plain = requests.get(server.url + '/v2/images/x', timeout=TIMEOUT,
                             headers={**headers('p'),
                                      'Accept': 'text/plain'})
        assert plain.status_code == 504
        assert plain.text.startswith('504 Gateway Timeout\n\nThe image '
                                     'service behind this endpoint did '
                                     'not answer within 1 seconds.')


def test_create_timing_out_upstream_stays_pending_for_reconcile(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A 504 leaves Glance's outcome unknown: the record is neither
    committed nor thrown away, so reconcile can settle it either way."""
    image_id = str(uuid.uuid4())
    with SilentUpstream() as silent, _standalone(
            tmp_path_factory, 'silent-create', silent.url,
            read_timeout='1') as server:
        response = requests.post(
            server.url + '/v2/images', timeout=TIMEOUT,
            headers={**headers('p'), 'Accept': 'application/json'},
            json={'id': image_id, 'name': 'x',
                  'instance_uuid': str(uuid.uuid4())})
        assert response.status_code == 504, response.text
        engine = ia_engine.create_engine(server.state.instance_aware_db_url)
        try:
            stored = Records(ia_engine.Database(engine), 'default').get(
                image_id, models.INSTANCE)
        finally:
            engine.dispose()
    assert stored is not None and stored.state == models.PENDING


def test_upstream_closing_without_an_answer_is_a_502(
        echo_stack: StandaloneServer) -> None:
    response = requests.get(echo_stack.url + '/close', timeout=TIMEOUT,
                            headers={'Accept': 'application/json'})
    assert response.status_code == 502
    assert response.json()['message'].startswith(
        'The image service behind this endpoint sent no valid response.')


# -- upstream faults around the first byte ---------------------------------


@pytest.fixture(scope='module')
def faulty() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as upstream:
        yield upstream


@pytest.fixture(scope='module')
def faulty_stack(faulty: FaultyUpstream,
                 tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[StandaloneServer]:
    """In front of the faulty upstream: ``read_timeout = 2``; one worker
    of four threads, so ``max_concurrent_transfers`` is 3."""
    with _standalone(tmp_path_factory, 'faulty', faulty.url,
                     read_timeout='2') as server:
        yield server


@pytest.fixture(scope='module')
def deadline_stack(faulty: FaultyUpstream,
                   tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[StandaloneServer]:
    """In front of the faulty upstream: ``transfer_timeout = 2`` with a
    ``read_timeout`` no wait reaches; version documents rewritten."""
    with _standalone(tmp_path_factory, 'deadline', faulty.url,
                     read_timeout='30', transfer_timeout='2',
                     public_endpoint='https://images.example') as server:
        yield server


@dataclasses.dataclass
class Received:
    """What an HTTP client got, and whether the body was complete."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    complete: bool
    seconds: float


def _download(script: str) -> str:
    """An image download (streamed by the stack, not read whole)."""
    return f'/v2/images/{uuid.uuid4()}/file?script={script}'


def _receive(server: StandaloneServer, path: str,
             sent: dict[str, str] | None = None) -> Received:
    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname or '127.0.0.1',
                                            url.port, timeout=TIMEOUT)
    began = time.monotonic()
    try:
        connection.request('GET', path, headers={
            **headers('p'), 'Accept': 'application/json', **(sent or {})})
        response = connection.getresponse()
        try:
            body, complete = response.read(), True
        except http.client.IncompleteRead as exc:
            body, complete = exc.partial, False
        return Received(response.status, response.headers, body, complete,
                        time.monotonic() - began)
    finally:
        connection.close()


def test_upstream_closing_mid_body_cuts_the_response_short(
        faulty_stack: StandaloneServer) -> None:
    path = _download('short')
    got = _receive(faulty_stack, path)
    assert (got.status, got.headers['Content-Length']) == (200, str(MIB))
    assert not got.complete
    assert got.body == SHORT_SENT
    assert (f'Upstream response to GET {path} broke off after '
            f'{len(SHORT_SENT)} bytes') in faulty_stack.log_tail()


def test_broken_chunked_body_ends_without_its_last_chunk(
        faulty_stack: StandaloneServer) -> None:
    got = _receive(faulty_stack, _download('broken-chunked'))
    assert got.status == 200
    assert got.headers['Transfer-Encoding'] == 'chunked'
    assert 'Content-Length' not in got.headers
    assert not got.complete
    assert got.body == b''.join(CHUNKED_SENT)


def test_upstream_silent_after_the_first_bytes_is_cut_after_read_timeout(
        faulty_stack: StandaloneServer) -> None:
    got = _receive(faulty_stack, _download('silent-after-10'))
    assert (got.status, got.headers['Content-Length']) == (200, '1000')
    assert not got.complete
    assert got.body == b'0123456789'
    assert 1.5 < got.seconds < 30


_NO_VALID_RESPONSE = ('The image service behind this endpoint sent no '
                      'valid response.')


@pytest.mark.parametrize(('path', 'status', 'message'), [
    pytest.param(_download('headers-then-close'), '502 Bad Gateway',
                 _NO_VALID_RESPONSE, id='closed'),
    pytest.param(_download('headers-then-silent'), '504 Gateway Timeout',
                 'The image service behind this endpoint did not answer '
                 'within 2 seconds.', id='silent'),
    # The stack reads documents whole: a fault anywhere in one is an
    # error response.
    pytest.param('/v2/images?script=short', '502 Bad Gateway',
                 _NO_VALID_RESPONSE, id='document-closed-midway'),
    pytest.param('/v2/images?script=broken-chunked', '502 Bad Gateway',
                 _NO_VALID_RESPONSE, id='document-chunk-broken'),
    pytest.param('/v2/images?script=silent-after-10',
                 '504 Gateway Timeout',
                 'The image service behind this endpoint did not answer '
                 'within 2 seconds.', id='document-silent-midway'),
])
def test_fault_before_the_first_byte_is_an_error_response(
        faulty_stack: StandaloneServer, path: str, status: str,
        message: str) -> None:
    got = _receive(faulty_stack, path)
    assert got.complete
    assert got.status == int(status.split()[0])
    error = json.loads(got.body)
    assert (error['code'], error['title']) == (status,
                                               status.split(' ', 1)[1])
    assert error['message'].startswith(message)


@pytest.mark.parametrize('rewritten', [False, True])
def test_version_document_broken_midway_is_a_502(
        faulty_stack: StandaloneServer, deadline_stack: StandaloneServer,
        rewritten: bool) -> None:
    """Read whole by the stack's filters, or by the proxy to rewrite its
    links for ``public_endpoint``."""
    got = _receive(deadline_stack if rewritten else faulty_stack,
                   '/versions?script=short-json')
    assert (got.status, got.complete) == (502, True)
    error = json.loads(got.body)
    assert error['code'] == '502 Bad Gateway'
    assert error['message'].startswith(_NO_VALID_RESPONSE)


def test_bytes_go_out_as_they_come(faulty_stack: StandaloneServer) -> None:
    """A byte every quarter of a second reaches the client as it comes,
    not once a buffer is full."""
    url = urllib.parse.urlsplit(faulty_stack.url)
    connection = http.client.HTTPConnection(url.hostname or '127.0.0.1',
                                            url.port, timeout=TIMEOUT)
    try:
        began = time.monotonic()
        connection.request('GET', _download('drip'))
        response = connection.getresponse()
        assert (response.status, response.headers['Content-Length']) == (
            200, '1000')
        assert response.read(4) == b'....'
        assert time.monotonic() - began < 10
    finally:
        connection.close()


def test_transfer_timeout_cuts_a_dripping_download(
        deadline_stack: StandaloneServer) -> None:
    got = _receive(deadline_stack, _download('drip'))
    assert (got.status, got.headers['Content-Length']) == (200, '1000')
    assert not got.complete
    assert 0 < len(got.body) < 100
    assert got.body == b'.' * len(got.body)
    assert 1.5 < got.seconds < 30
    assert 'the exchange took more than 2 seconds' in (
        deadline_stack.log_tail())


def test_transfer_timeout_before_the_first_byte_is_a_504(
        deadline_stack: StandaloneServer) -> None:
    got = _receive(deadline_stack, _download('headers-then-silent'))
    assert (got.status, got.complete) == (504, True)
    error = json.loads(got.body)
    assert error['code'] == '504 Gateway Timeout'
    assert error['message'].startswith(
        'The image service behind this endpoint did not complete the '
        'transfer within 2 seconds.')
    assert got.seconds < 30


class _SlowInput(io.BytesIO):
    """A client body that takes a fifth of a second per read."""

    def read(self, size: int | None = -1) -> bytes:
        time.sleep(0.2)
        return super().read(size)


def test_upload_outliving_transfer_timeout_is_a_504(
        echo: EchoUpstream) -> None:
    """The proxy alone: the deadline is checked between the pieces of
    the body it sends, and the slot comes back."""
    app = proxy.ProxyApp({'upstream': echo.url, 'transfer_timeout': '0.5',
                          'max_concurrent_transfers': '1'},
                         cfg.ConfigOpts())
    data = b'u' * (10 * 64 * 1024)
    request = webob.Request.blank('/echo', method='PUT',
                                  headers={'Accept': 'application/json'})
    request.environ['wsgi.input'] = _SlowInput(data)
    request.content_length = len(data)
    began = time.monotonic()
    response = request.get_response(app)
    assert time.monotonic() - began < 1.5
    assert response.status_int == 504
    assert response.json_body['message'].startswith(
        'The image service behind this endpoint did not complete the '
        'transfer within 0.5 seconds.')
    again = webob.Request.blank('/echo').get_response(app)
    assert (again.status_int, again.json_body['method']) == (200, 'GET')


@pytest.mark.timeout(180)
def test_transfers_beyond_the_bound_get_503_while_health_checks_answer(
        faulty_stack: StandaloneServer) -> None:
    """Eight downloads from an upstream sending a byte at a time: three
    run (four threads less one), five are refused at once, and the
    health check and the stack's own API still answer."""
    held: list[requests.Response] = []
    try:
        for _ in range(3):
            running = requests.get(faulty_stack.url + _download('drip'),
                                   stream=True, timeout=TIMEOUT)
            held.append(running)
            assert running.status_code == 200
        for _ in range(5):
            began = time.monotonic()
            busy = requests.get(faulty_stack.url + _download('drip'),
                                timeout=TIMEOUT,
                                headers={'Accept': 'application/json'})
            assert time.monotonic() - began < 10
            assert busy.status_code == 503, busy.text
            assert busy.headers['Retry-After'] == '5'
            error = busy.json()
            assert (error['code'], error['title']) == (
                '503 Service Unavailable', 'Service Unavailable')
            assert error['message'].startswith(
                'This endpoint is busy with other transfers to the image '
                'service.  Retry later.')
        began = time.monotonic()
        health = requests.get(faulty_stack.url + '/healthcheck',
                              headers={'Accept': 'application/json'},
                              timeout=TIMEOUT)
        assert health.status_code == 200
        assert health.json() == {'detailed': False, 'reasons': []}
        related = requests.get(
            f'{faulty_stack.url}/v2/instances/{uuid.uuid4()}/images',
            headers={**headers('p'), 'Accept': 'application/json'},
            timeout=TIMEOUT)
        assert (related.status_code, related.json()['images']) == (200, [])
        assert time.monotonic() - began < 10
        for running in held:
            assert next(running.iter_content(1)) == b'.'
    finally:
        for running in held:
            running.close()
    # The clients went away: their slots come back.
    deadline = time.monotonic() + 30
    while True:
        answer = requests.get(faulty_stack.url + '/ok', timeout=TIMEOUT)
        if answer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (answer.status_code, answer.content) == (200, b'ok')
    assert 'answered 503' in faulty_stack.log_tail()


# -- links built from forwarded addresses ------------------------------------

PUBLIC = 'https://images.example'


@pytest.fixture(scope='module')
def forwarding_aware() -> Iterator[ForwardingAwareUpstream]:
    with ForwardingAwareUpstream() as upstream:
        yield upstream


@pytest.fixture(scope='module')
def public_stacks(forwarding_aware: ForwardingAwareUpstream,
                  tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[dict[bool, StandaloneServer]]:
    """``public_endpoint`` set, forwarding headers trusted (True) or not
    (False)."""
    with _standalone(tmp_path_factory, 'public-trusting',
                     forwarding_aware.url, public_endpoint=PUBLIC,
                     trust_forwarded_headers='true') as trusting, \
            _standalone(tmp_path_factory, 'public', forwarding_aware.url,
                        public_endpoint=PUBLIC) as untrusting:
        yield {True: trusting, False: untrusting}


@pytest.mark.parametrize(('trusted', 'sent', 'glance_writes'), [
    pytest.param(True, {'X-Forwarded-Host': 'front.example',
                        'X-Forwarded-Proto': 'https'},
                 'https://front.example', id='x-forwarded-host-proto'),
    pytest.param(True, {'X-Forwarded-Host': 'front.example'},
                 'http://front.example', id='x-forwarded-host'),
    pytest.param(True, {'X-Forwarded-Host': 'front.example:443',
                        'X-Forwarded-Proto': 'https'},
                 'https://front.example', id='default-port'),
    pytest.param(True, {'X-Forwarded-Host': 'front.example:8443',
                        'X-Forwarded-Proto': 'https'},
                 'https://front.example:8443', id='other-port'),
    pytest.param(True, {'X-Forwarded-Host': 'front.example',
                        'X-Forwarded-Proto': 'https',
                        'X-Forwarded-Prefix': '/image'},
                 'https://front.example/image', id='x-forwarded-prefix'),
    pytest.param(True, {'X-Forwarded-Proto': 'https'},
                 'https://{stack}', id='x-forwarded-proto'),
    pytest.param(True, {'Forwarded': 'for=203.0.113.9;proto=https;'
                                     'host=front.example'},
                 'https://front.example', id='forwarded'),
    pytest.param(True, {'Forwarded': 'for=203.0.113.9;proto=https;'
                                     'host="front.example"'},
                 'https://"front.example"', id='forwarded-quoted'),
    pytest.param(True, {}, 'http://{stack}', id='trusted-own-hop'),
    pytest.param(False, {'X-Forwarded-Host': 'evil.example',
                         'X-Forwarded-Proto': 'https',
                         'X-Forwarded-Prefix': '/evil',
                         'Forwarded': 'proto=https;host=evil.example'},
                 'http://{stack}', id='untrusted-replaced'),
])
def test_public_endpoint_rewrites_links_of_forwarded_addresses(
        forwarding_aware: ForwardingAwareUpstream,
        public_stacks: dict[bool, StandaloneServer], trusted: bool,
        sent: dict[str, str], glance_writes: str) -> None:
    server = public_stacks[trusted]
    stack_host = urllib.parse.urlsplit(server.url).netloc
    glance_writes = glance_writes.format(stack=stack_host)
    # What the stand-in writes for the headers the stack sends it.
    forwarded = proxy.ProxyApp(
        {'upstream': forwarding_aware.url,
         'trust_forwarded_headers': str(trusted)},
        cfg.ConfigOpts()).request_headers(webob.Request.blank(
            '/versions', headers={**sent, 'Host': stack_host},
            remote_addr='127.0.0.1').environ)
    bare = requests.get(forwarding_aware.url + '/versions',
                        headers=forwarded, timeout=TIMEOUT).json()
    assert bare['versions'][0]['links'][0]['href'] == glance_writes + '/v2/'

    versions = requests.get(server.url + '/versions', headers=sent,
                            timeout=TIMEOUT)
    assert versions.status_code == 200, versions.text
    assert versions.json()['versions'][0]['links'] == [
        {'rel': 'self', 'href': PUBLIC + '/v2/'}]
    created = requests.get(server.url + '/v2/somewhere', headers=sent,
                           timeout=TIMEOUT, allow_redirects=False)
    assert created.status_code == 201
    assert created.headers['Location'] == PUBLIC + '/v2/images/1'


# -- what crosses the proxy ---------------------------------------------------


def test_hop_by_hop_request_headers_are_not_forwarded(
        echo_stack: StandaloneServer) -> None:
    data = [b'a' * 70000, b'b' * 3, b'c' * 200000]
    response = requests.post(
        echo_stack.url + '/echo?x=1&y=%2F', data=iter(data),  # chunked
        headers={**HOP_REQUEST_HEADERS, 'X-End-To-End': 'kept',
                 'Content-Type': 'application/x-thing'},
        timeout=TIMEOUT)
    echoed = _echoed(response)
    sent = echoed['header_map']
    for name in (*HOP_REQUEST_HEADERS, 'expect'):
        assert name.lower() not in sent, name
    assert sent['x-end-to-end'] == 'kept'
    assert sent['content-type'] == 'application/x-thing'
    assert sent['user-agent'].startswith('python-requests/')
    # Streamed on as chunks, not gathered into one Content-Length body.
    assert sent['transfer-encoding'] == 'chunked'
    assert 'content-length' not in sent
    assert (echoed['method'], echoed['path'], echoed['chunked']) == (
        'POST', '/echo?x=1&y=%2F', True)
    assert (echoed['body_length'], echoed['body_sha256']) == (
        270003, hashlib.sha256(b''.join(data)).hexdigest())

    fixed = _echoed(requests.put(echo_stack.url + '/echo', data=b'z' * 999,
                                 timeout=TIMEOUT))
    assert fixed['header_map']['content-length'] == '999'
    assert 'transfer-encoding' not in fixed['header_map']
    assert (fixed['chunked'], fixed['body_length']) == (False, 999)


def test_hop_by_hop_response_headers_are_dropped(
        echo: EchoUpstream, echo_stack: StandaloneServer) -> None:
    response = requests.get(echo_stack.url + '/echo', timeout=TIMEOUT)
    assert response.status_code == 200
    received = {name.lower() for name in response.headers}
    for name in ('x-hop-response', 'trailer', 'proxy-authenticate',
                 'proxy-agent', 'keep-alive', 'upgrade'):
        assert name not in received, name
    assert response.headers['X-End-To-End'] == 'kept'

    # What the proxy itself hands to the WSGI server (which would drop
    # some of them on its own).
    app = proxy.ProxyApp({'upstream': echo.url}, cfg.ConfigOpts())
    direct = webob.Request.blank('/echo').get_response(app)
    assert direct.status_int == 200
    names = _names(direct.headerlist)
    assert not names & _names(HOP_RESPONSE_HEADERS), names
    assert 'x-end-to-end' in names
    assert direct.json_body['path'] == '/echo'


def test_untrusted_forwarding_headers_are_replaced(
        echo_stack: StandaloneServer) -> None:
    response = requests.get(echo_stack.url + '/echo', timeout=TIMEOUT,
                            headers={
                                'X-Forwarded-For': '203.0.113.9',
                                'X-Forwarded-Proto': 'https',
                                'X-Forwarded-Host': 'evil.example',
                                'X-Forwarded-Prefix': '/evil',
                                'Forwarded': 'for=203.0.113.9;host=evil',
                            })
    sent = _echoed(response)['header_map']
    assert sent['x-forwarded-for'] == '127.0.0.1'
    assert sent['x-forwarded-proto'] == 'http'
    host = urllib.parse.urlsplit(echo_stack.url).netloc
    assert sent['x-forwarded-host'] == host
    assert sent['host'] == host  # preserve_host
    assert 'forwarded' not in sent
    assert 'x-forwarded-prefix' not in sent


def test_trusted_forwarding_headers_are_extended(
        echo: EchoUpstream, trusting_stack: StandaloneServer) -> None:
    response = requests.get(trusting_stack.url + '/echo', timeout=TIMEOUT,
                            headers={
                                'X-Forwarded-For': '203.0.113.9',
                                'X-Forwarded-Proto': 'https',
                                'X-Forwarded-Host': 'images.example.com',
                                'Forwarded': 'for=203.0.113.9;'
                                             'host=images.example.com',
                            })
    sent = _echoed(response)['header_map']
    host = urllib.parse.urlsplit(trusting_stack.url).netloc
    assert sent['x-forwarded-for'] == '203.0.113.9, 127.0.0.1'
    assert sent['x-forwarded-proto'] == 'https'
    assert sent['x-forwarded-host'] == 'images.example.com'
    assert sent['forwarded'] == (
        'for=203.0.113.9;host=images.example.com, '
        f'for=127.0.0.1;proto=http;host="{host}"')
    # preserve_host = false: the upstream is addressed by its own name.
    assert sent['host'] == urllib.parse.urlsplit(echo.url).netloc

    bare = _echoed(requests.get(trusting_stack.url + '/echo',
                                timeout=TIMEOUT))['header_map']
    assert (bare['x-forwarded-for'], bare['x-forwarded-proto'],
            bare['x-forwarded-host']) == ('127.0.0.1', 'http', host)
    assert 'forwarded' not in bare


@pytest.mark.parametrize(('written', 'public'), [
    pytest.param('{upstream}/v2/images/1', 'https://images.example.com/'
                 'image/v2/images/1', id='upstream'),
    pytest.param('http://{stack}/v2/images/1?a=b',
                 'https://images.example.com/image/v2/images/1?a=b',
                 id='forwarded-host'),
    pytest.param('http://elsewhere.example/v2/images/1',
                 'http://elsewhere.example/v2/images/1', id='other-host'),
    pytest.param('{upstream}x/v2', '{upstream}x/v2', id='longer-port'),
])
def test_public_endpoint_rewrites_location(
        echo: EchoUpstream, echo_stack: StandaloneServer, written: str,
        public: str) -> None:
    stack_host = urllib.parse.urlsplit(echo_stack.url).netloc
    location = written.format(upstream=echo.url, stack=stack_host)
    response = requests.get(echo_stack.url + '/location', timeout=TIMEOUT,
                            params={'to': location}, allow_redirects=False)
    assert response.status_code == 201
    public = public.format(upstream=echo.url)
    assert response.headers['Location'] == public
    assert response.headers['Content-Location'] == public


def test_public_endpoint_rewrites_version_document(
        echo_stack: StandaloneServer) -> None:
    for path in ('/', '/versions'):
        response = requests.get(echo_stack.url + path, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.json()['versions'][0]['links'] == [
            {'rel': 'self', 'href': 'https://images.example.com/image/v2/'}]
        assert response.headers['Content-Length'] == str(
            len(response.content))


# -- client disconnects ------------------------------------------------------


def test_client_disconnect_closes_the_upstream_response(
        echo: EchoUpstream, echo_stack: StandaloneServer) -> None:
    """Through gunicorn and the stack: the 1 GiB upstream download stops
    as soon as the client has gone."""
    echo.aborted.clear()
    with requests.get(f'{echo_stack.url}/v2/images/{uuid.uuid4()}/file',
                      headers=headers('p'), stream=True,
                      timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers['Content-Length'] == str(1024 * MIB)
        assert next(response.iter_content(MIB))[:1] == b'x'
    assert echo.aborted.wait(20), 'upstream still sending after disconnect'
    assert _echoed(requests.get(echo_stack.url + '/echo',
                                timeout=TIMEOUT))['path'] == '/echo'


def test_closing_the_body_early_closes_its_connection(
        echo: EchoUpstream) -> None:
    """The proxy alone: close() on a half-read body drops the upstream
    connection (a reference is held, so only close() can do it)."""
    app = proxy.ProxyApp({'upstream': echo.url}, cfg.ConfigOpts())
    echo.aborted.clear()
    started: list[str] = []
    environ = webob.Request.blank(f'/v2/images/{uuid.uuid4()}/file').environ
    body: Any = app(environ, lambda status, headers, exc=None: started.append(
        status))
    assert started == ['200 OK']
    assert next(iter(body))[:1] == b'x'
    body.close()
    assert echo.aborted.wait(20)
    again = webob.Request.blank('/echo').get_response(app)
    assert again.json_body['method'] == 'GET'


# -- the command --------------------------------------------------------------


def _wait_for(process: subprocess.Popen[bytes], log: Any, text: str,
              timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        output = log.read_text()
        if text in output:
            return str(output)
        if process.poll() is not None:
            pytest.fail(f'serve exited with {process.returncode}:\n{output}')
        if time.monotonic() > deadline:
            pytest.fail(f'serve did not print {text!r} in time:\n{output}')
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_serve_upstream_runs_the_stack_alone(
        glance_server: GlanceServer, bare_api: Api, tmp_path: Any) -> None:
    port = local_server.free_port()
    log = tmp_path / 'serve.out'
    with open(log, 'wb') as stream:
        process = subprocess.Popen(
            [sys.executable, '-m', 'tests.local', 'serve',
             '--port', str(port), '--upstream', glance_server.bare_url,
             '--state-dir', str(tmp_path / 'state'),
             '--max-lifetime', '170'],
            stdout=stream, stderr=subprocess.STDOUT)
    try:
        output = _wait_for(process, log, 'Ctrl-C stops the server.', 90)
        url = f'http://127.0.0.1:{port}'
        api = Api(url, timeout=TIMEOUT)
        instance = str(uuid.uuid4())
        created = api.post('/v2/images', project='cli', json={
            'name': 'cli', 'instance_uuid': instance,
            'image_type': 'snapshot'})
        assert created.status_code == 201, created.text
        assert created.json()['instance_uuid'] == instance
        stored = bare_api.get(f'/v2/images/{created.json()["id"]}',
                              project='cli').json()
        assert 'instance_uuid' not in stored
        # Answered by the stack itself.
        assert requests.get(url + '/healthcheck',
                            timeout=TIMEOUT).status_code == 200
        api.close()
        process.send_signal(signal.SIGINT)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    output = log.read_text()
    assert process.returncode == 0, output
    assert f'The instance-aware stack:           {url}' in output
    assert ('in front of the Glance at:          '
            f'{glance_server.bare_url}') in output
    assert 'Glance with the instance-aware stack' not in output
    assert output.rstrip().endswith('Stopped.')
    assert (tmp_path / 'state' / 'instance_aware.sqlite').exists()
    assert not (tmp_path / 'state' / 'glance.sqlite').exists()
    assert not local_server.port_in_use(port)


@pytest.mark.parametrize('argv', [
    pytest.param(['--upstream', 'http://127.0.0.1:9', '--bare-port', '1'],
                 id='no-bare-port'),
    pytest.param(['--upstream', 'ftp://glance'], id='scheme'),
    pytest.param(['--upstream', 'http://glance:99999'], id='port'),
])
def test_serve_upstream_bad_usage_exits_2(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_main.main(['serve', *argv]) == 2
    assert 'error:' in capsys.readouterr().err


def test_paste_entry_point_builds_the_stack_around_the_proxy(
        echo: EchoUpstream) -> None:
    from importlib.metadata import entry_points

    [entry] = entry_points(group='paste.app_factory',
                           name='instance_aware_proxy')
    factory: Callable[..., Any] = entry.load()
    assert factory is proxy.app_factory
    app = factory({}, upstream=echo.url, read_timeout='3')
    chain = []
    while app is not None:
        chain.append(type(app).__name__)
        app = getattr(app, 'application', None)
    assert chain == ['LocationPolicyFilter',
                     'EncryptionPropertiesFilter', 'InstanceMetadataFilter',
                     'DataIntegrityFilter', 'ProxyApp']
    with pytest.raises(cfg.ConfigFileValueError, match='read_timeout'):
        factory({}, upstream=echo.url, read_timeout='soon')


@pytest.mark.parametrize('flavor', ['noauth', 'keystone'])
def test_standalone_pipelines_load(tmp_path: Any, flavor: str) -> None:
    """In a fresh process (the configuration is the global ``CONF``)."""
    code = (
        'import json, sys\n'
        'from tests.local import standalone\n'
        'state = standalone.prepare(sys.argv[1], "http://127.0.0.1:9",\n'
        '    flavor=sys.argv[2], auth_url=sys.argv[3] or None)\n'
        'root = standalone.load_app(state, sys.argv[2])\n'
        'chains = {}\n'
        'for prefix, app in root.routes:\n'
        '    chain = chains[prefix or "/"] = []\n'
        '    while app is not None:\n'
        '        chain.append(type(app).__name__)\n'
        '        app = getattr(app, "application", None) or getattr(\n'
        '            app, "_app", None)\n'
        'print(json.dumps(chains))\n')
    result = subprocess.run(
        [sys.executable, '-c', code, str(tmp_path / 'state'), flavor,
         'http://127.0.0.1:5000/v3' if flavor == 'keystone' else ''],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    chains = json.loads(result.stdout.strip().splitlines()[-1])
    stack = ['LocationPolicyFilter',
             'EncryptionPropertiesFilter', 'InstanceMetadataFilter',
             'DataIntegrityFilter', 'ProxyApp']
    auth = ['AuthProtocol'] if flavor == 'keystone' else []
    assert chains == {'/healthcheck': ['Healthcheck'], '/': [*auth, *stack]}
    conf = (tmp_path / 'state' / 'instance-aware.conf').read_text()
    assert 'upstream = http://127.0.0.1:9' in conf
    assert ('[keystone_authtoken]' in conf) == (flavor == 'keystone')
