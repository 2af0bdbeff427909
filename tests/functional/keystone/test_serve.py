"""``./tools/dev serve`` with its local Keystone and the standard clients.

The command is run as a newcomer runs it; the ``OS_*`` variables it
prints are given to ``openstack`` and ``glance`` (the installed console
scripts), and the Nova snippet it prints is run as printed.  Ctrl-C stops
Glance and Keystone.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.local import keystone
from tests.local import server as local_server

pytestmark = pytest.mark.functional

READY = 'Ctrl-C stops the server.'
BIN = os.path.dirname(sys.executable)


def _wait_for(process: subprocess.Popen[bytes], log: Any, text: str,
              timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        output = str(log.read_text())
        if text in output:
            return output
        if process.poll() is not None:
            pytest.fail(f'serve exited with {process.returncode}:\n{output}')
        if time.monotonic() > deadline:
            pytest.fail(f'serve did not print {text!r} in time:\n{output}')
        time.sleep(0.2)


def _exported(output: str) -> dict[str, str]:
    """The variables of the ``export`` line ``serve`` printed."""
    [line] = [line.strip() for line in output.splitlines()
              if line.strip().startswith('export OS_')]
    return dict(word.split('=', 1) for word in shlex.split(line)[1:])


def _run(command: list[str], environ: dict[str, str]) -> str:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('OS_')}
    result = subprocess.run(
        command, env={**env, **environ}, capture_output=True, text=True,
        timeout=120, check=False)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope='module')
def served(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, Any]]:
    """``serve`` with defaults but the ports; stopped with SIGINT."""
    if not keystone.available():
        pytest.skip('keystone is not installed')
    tmp = tmp_path_factory.mktemp('serve')
    ports = {'port': local_server.free_port(),
             'bare': local_server.free_port(),
             'keystone': local_server.free_port()}
    log = tmp / 'serve.out'
    with open(log, 'wb') as stream:
        process = subprocess.Popen(
            [sys.executable, '-m', 'tests.local', 'serve',
             '--port', str(ports['port']),
             '--bare-port', str(ports['bare']),
             '--keystone-port', str(ports['keystone']),
             '--state-dir', str(tmp / 'state'), '--max-lifetime', '600'],
            stdout=stream, stderr=subprocess.STDOUT)
    try:
        output = _wait_for(process, log, READY, 240)
        yield {'process': process, 'log': log, 'output': output,
               'ports': ports, 'state': tmp / 'state'}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def test_openstack_and_glance_clients_work_as_printed(
        served: dict[str, Any]) -> None:
    admin = _exported(served['output'])
    assert admin['OS_USERNAME'] == 'admin'
    assert admin['OS_AUTH_URL'] == (
        f"http://127.0.0.1:{served['ports']['keystone']}/v3")
    name = f'cli-{uuid.uuid4().hex[:8]}'
    instance = str(uuid.uuid4())
    member = {**admin, 'OS_USERNAME': 'alpha-member',
              'OS_PROJECT_NAME': 'alpha'}
    created = json.loads(_run(
        [f'{BIN}/openstack', 'image', 'create', name, '--property',
         f'instance_uuid={instance}', '--property', 'image_type=snapshot',
         '-f', 'json'], member))
    assert created['name'] == name
    assert created['properties']['instance_uuid'] == instance

    listed = json.loads(_run([f'{BIN}/openstack', 'image', 'list',
                              '-f', 'json'], admin))
    assert name in {image['Name'] for image in listed}
    assert name in _run([f'{BIN}/glance', 'image-list'], member)
    # Another project does not see alpha's private image.
    other = {**member, 'OS_USERNAME': 'beta-member',
             'OS_PROJECT_NAME': 'beta'}
    assert name not in _run([f'{BIN}/glance', 'image-list'], other)
    # Through the stack the owner gets the relation back; the bare Glance
    # (region Bare) never stored it.
    shown = _run([f'{BIN}/glance', 'image-show', created['id']], member)
    assert instance in shown
    bare = {**member, 'OS_REGION_NAME': keystone.BARE_REGION}
    bare_shown = _run([f'{BIN}/glance', 'image-show', created['id']], bare)
    assert created['id'] in bare_shown and instance not in bare_shown


def test_openrc_files_and_the_nova_snippet(served: dict[str, Any]) -> None:
    openrc = served['state'] / 'openrc'
    assert sorted(p.name for p in openrc.iterdir()) == sorted(
        f'{user}{suffix}' for user in (
            'admin', 'alpha-member', 'alpha-reader', 'beta-member',
            'beta-reader', 'nova') for suffix in ('', '-bare'))
    reader = _exported((openrc / 'beta-reader').read_text())
    assert (reader['OS_USERNAME'], reader['OS_PROJECT_NAME'],
            reader['OS_REGION_NAME']) == ('beta-reader', 'beta', 'RegionOne')
    assert json.loads(_run([f'{BIN}/openstack', 'image', 'list',
                            '-f', 'json'], reader)) is not None

    output = served['output']
    start = output.index("python3 - <<'EOF'\n") + len(
        "python3 - <<'EOF'\n")
    snippet = output[start:output.index('\nEOF\n', start)]
    printed = _run([sys.executable, '-c', snippet], {})
    assert printed.startswith('[') and printed.rstrip().endswith(']')


def test_ctrl_c_stops_glance_and_keystone(served: dict[str, Any]) -> None:
    process = served['process']
    process.send_signal(signal.SIGINT)
    process.wait(60)
    output = served['log'].read_text()
    assert process.returncode == 0, output
    assert output.rstrip().endswith('Stopped.')
    for port in served['ports'].values():
        assert not local_server.port_in_use(port), port
