"""The harness itself: a real Glance, both pipelines, the clients, serve."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.functional.conftest import Api
from tests.local import server as local_server
from tests.local.server import GlanceServer

pytestmark = pytest.mark.functional


def _unique(prefix: str) -> str:
    return f'{prefix}-{uuid.uuid4().hex[:8]}'


@pytest.mark.parametrize('which', ['url', 'bare_url'])
def test_versions_document(glance_server: GlanceServer,
                           which: str) -> None:
    base = getattr(glance_server, which)
    response = requests.get(base + '/versions', timeout=30)
    assert response.status_code == 200
    versions = response.json()['versions']
    by_id = {version['id']: version for version in versions}
    assert by_id['v2.18']['status'] == 'CURRENT'  # Glance 33 (2025.2)
    assert by_id['v2.0']['status'] == 'SUPPORTED'
    assert by_id['v2.18']['links'] == [
        {'rel': 'self', 'href': base + '/v2/'}]


def test_both_ports_are_one_glance_with_and_without_stack(
        glance_server: GlanceServer) -> None:
    """Walk the loaded pipelines in a fresh process (Glance's CONF is
    global, so never in the test runner)."""
    code = (
        'import json, sys\n'
        'from tests.local import glance\n'
        'state = glance.StateDir(sys.argv[1])\n'
        'apps = glance.load_apps(state)\n'
        'print(json.dumps({name: [type(obj).__name__ for obj in '
        'glance.pipeline(app)] for name, app in apps.items()}))\n')
    result = subprocess.run(
        [sys.executable, '-c', code, glance_server.state_dir],
        capture_output=True, text=True, timeout=120, check=True)
    chains = json.loads(result.stdout.strip().splitlines()[-1])
    glance_chain = ['CORS', 'HTTPProxyToWSGI', 'VersionNegotiationFilter',
                    'WsgiMiddleware', 'ContextMiddleware']
    stack = ['LocationPolicyFilter',
             'EncryptionPropertiesFilter', 'InstanceMetadataFilter',
             'DataIntegrityFilter']
    assert chains['stacked'] == [
        'URLMap', *glance_chain, *stack, 'URLMap', 'Resource']
    assert chains['bare'] == ['URLMap', *glance_chain, 'URLMap', 'Resource']


def test_requests_cross_the_stack_only_on_the_stack_port(
        api: Api, bare_api: Api) -> None:
    """The instance query API exists only inside the stack's filter."""
    path = f'/v2/instances/{uuid.uuid4()}/images'
    through = api.get(path, project='a')
    assert through.status_code == 200, through.text
    assert through.json()['images'] == []
    assert bare_api.get(path, project='a').status_code == 404


def test_glanceclient_image_is_the_one_glance_stored(
        glance_server: GlanceServer, glanceclient_for: Callable[..., Any],
        bare_api: Api) -> None:
    client = glanceclient_for('project-a')
    name = _unique('harness')
    image = client.images.create(name=name, disk_format='raw',
                                 container_format='bare',
                                 visibility='private')
    assert image['name'] == name
    assert image['owner'] == 'project-a'
    data = os.urandom(64 * 1024)
    client.images.upload(image['id'], io.BytesIO(data))  # chunked

    stored = bare_api.get(f'/v2/images/{image["id"]}', project='project-a')
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert (body['id'], body['name'], body['owner'], body['status']) == (
        image['id'], name, 'project-a', 'active')
    assert body['size'] == len(data)
    assert body['os_hash_value'] == hashlib.sha512(data).hexdigest()
    # Glance itself shows locations (the harness configures it so); who
    # else sees them is the stack's decision.
    path = os.path.join(glance_server.state_dir, 'stores', 'images',
                        image['id'])
    assert body['direct_url'] == f'file://{path}'
    assert [loc['url'] for loc in body['locations']] == [f'file://{path}']
    downloaded = bare_api.get(f'/v2/images/{image["id"]}/file',
                              project='project-a')
    assert downloaded.content == data

    fetched = client.images.get(image['id'])
    assert (fetched['id'], fetched['name'], fetched['size']) == (
        image['id'], name, len(data))
    assert b''.join(client.images.data(image['id'])) == data


def test_openstacksdk_lists_the_image(
        api: Api, sdk_for: Callable[..., Any]) -> None:
    name = _unique('sdk')
    created = api.post('/v2/images', project='project-s', json={
        'name': name, 'disk_format': 'qcow2', 'container_format': 'bare'})
    assert created.status_code == 201, created.text
    image_id = created.json()['id']

    connection = sdk_for('project-s', roles=('reader',))
    listed = {image.id: image.name for image in connection.image.images()}
    assert listed[image_id] == name
    shown = connection.image.get_image(image_id)
    assert (shown.name, shown.owner, shown.disk_format) == (
        name, 'project-s', 'qcow2')


def test_other_project_does_not_see_a_private_image(
        api: Api, glanceclient_for: Callable[..., Any]) -> None:
    name = _unique('private')
    image = glanceclient_for('project-a').images.create(
        name=name, disk_format='raw', container_format='bare',
        visibility='private')

    shown = api.get(f'/v2/images/{image["id"]}', project='project-b')
    assert shown.status_code == 404, shown.text
    assert f'No image found with ID {image["id"]}' in shown.text
    listed = api.get('/v2/images', project='project-b',
                     params={'name': name})
    assert listed.status_code == 200
    assert listed.json()['images'] == []

    own = api.get('/v2/images', project='project-a', params={'name': name})
    assert [i['id'] for i in own.json()['images']] == [image['id']]
    anonymous = api.get(f'/v2/images/{image["id"]}')
    assert anonymous.status_code == 401


def _wait_for(process: subprocess.Popen[bytes], log: Any, text: str,
              timeout: float) -> str:
    """Wait until ``serve`` printed ``text``; its output so far."""
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


def _sigint(disposition: Any) -> Callable[[], None]:
    def child() -> None:  # runs in the child before exec
        signal.signal(signal.SIGINT, disposition)
    return child


@pytest.mark.timeout(180)
@pytest.mark.parametrize('inherited', [
    pytest.param(signal.SIG_DFL, id='sigint-default'),
    # What a shell without job control gives a background command.
    pytest.param(signal.SIG_IGN, id='sigint-ignored-by-the-parent'),
])
def test_serve_answers_and_exits_0_on_sigint(tmp_path: Any,
                                             inherited: Any) -> None:
    port, bare_port = local_server.free_port(), local_server.free_port()
    log = tmp_path / 'serve.out'
    with open(log, 'wb') as stream:
        process = subprocess.Popen(
            [sys.executable, '-m', 'tests.local', 'serve',
             '--port', str(port), '--bare-port', str(bare_port),
             '--state-dir', str(tmp_path / 'state'), '--flavor', 'noauth',
             '--max-lifetime', '170'],
            stdout=stream, stderr=subprocess.STDOUT,
            preexec_fn=_sigint(inherited))
    try:
        output = _wait_for(process, log, 'Ctrl-C stops the server.', 90)
        for each in (port, bare_port):
            versions = requests.get(f'http://127.0.0.1:{each}/versions',
                                    timeout=30).json()['versions']
            assert 'v2.18' in {version['id'] for version in versions}
        process.send_signal(signal.SIGINT)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    output = log.read_text()
    assert process.returncode == 0, output
    assert (f'Glance with the instance-aware stack: '
            f'http://127.0.0.1:{port}') in output
    assert f'without the stack:      http://127.0.0.1:{bare_port}' in output
    assert "-H 'X-Identity-Status: Confirmed'" in output
    assert output.rstrip().endswith('Stopped.')
    assert not local_server.answers(port, timeout=1.0)
    assert not local_server.port_in_use(port)


def test_server_surfaces_its_log_when_it_cannot_start(
        glance_server: GlanceServer, tmp_path: Any) -> None:
    with pytest.raises(local_server.ServerError, match='in use'):
        GlanceServer(tmp_path / 'state', port=glance_server.port,
                     bare=False).start()


def test_server_failing_to_boot_shows_its_log(tmp_path: Any) -> None:
    overrides = tmp_path / 'state' / 'glance-api.conf.d'
    overrides.mkdir(parents=True)
    (overrides / 'broken.conf').write_text(
        '[glance_store]\ndefault_backend = no-such-backend\n')
    server = GlanceServer(tmp_path / 'state', bare=False,
                          start_timeout=60)
    with pytest.raises(local_server.ServerError) as raised:
        server.start()
    message = str(raised.value)
    assert 'gunicorn exited with code' in message
    assert 'no-such-backend' in message
    assert not server.running


@pytest.mark.timeout(120)
def test_server_stops_by_itself(tmp_path: Any) -> None:
    """When its starter dies, and when its lifetime is over."""
    state = tmp_path / 'state'
    code = (
        'import os, sys\n'
        'from tests.local.server import GlanceServer\n'
        'server = GlanceServer(sys.argv[1], bare=False).start()\n'
        'print(server.port, flush=True)\n'
        'os._exit(0)  # no stop(): the watchdog must notice\n')
    result = subprocess.run([sys.executable, '-c', code, str(state)],
                            capture_output=True, text=True, timeout=90,
                            check=True)
    port = int(result.stdout.split()[-1])
    deadline = time.monotonic() + 20
    while local_server.port_in_use(port):
        assert time.monotonic() < deadline, 'orphaned server still runs'
        time.sleep(0.2)

    # Long enough for Glance to start on a loaded machine (the lifetime
    # counts from the server's start, before it serves).
    server = GlanceServer(state, bare=False, max_lifetime=15).start()
    try:
        deadline = time.monotonic() + 45
        while server.running:
            assert time.monotonic() < deadline, 'lifetime not enforced'
            time.sleep(0.2)
    finally:
        code_ = server.stop()
    assert code_ == 0
    assert 'maximum lifetime of 15 s reached' in server.log_tail()
