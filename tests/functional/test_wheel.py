"""The package as shipped: sdist and wheel built from the checkout, the
wheel installed (not editable) into a fresh virtualenv, and used there.

Every other virtualenv of the project is an editable install of the
source tree, which hides whatever the distributions leave out (the
migrations were once missing from the wheel).  Here nothing is imported
from the checkout: the commands run from the new virtualenv, in a
directory of their own.

First the wheel alone (with its dependencies pinned by
``upper-constraints.txt``): ``db sync``, ``db version``, both oslo
generators and the status check; the dev tooling (``tests/local``) is
not in it.  Then Glance 33 and gunicorn (as the ``test`` extra pins them)
and a real Glance with the installed stack, started by
``python -m tests.local serve`` from a copy of the dev tooling alone (no
``instance_aware`` beside it): one create with instance keys, shown back,
kept in the mapping table and not in Glance.
"""

from __future__ import annotations

import configparser
import os
import pathlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import uuid
import venv
import zipfile
from collections.abc import Iterator

import pytest
import requests

from instance_aware.store import migration
from tests.functional.conftest import headers
from tests.local import glance
from tests.local.server import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / 'upper-constraints.txt'
MIGRATIONS = 'instance_aware/store/migrations/versions/'
#: Every revision of the checkout must ship.
REVISIONS = tuple(sorted(path.name for path
                         in (ROOT / MIGRATIONS).glob('[0-9]*.py')))
HEAD = migration.head()
TIMEOUT = 30

pytestmark = pytest.mark.timeout(600)


def _run(*argv: str | os.PathLike[str], cwd: pathlib.Path,
         timeout: int = 300, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    result = subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, check=False, env=env)
    assert result.returncode == 0, (
        f'{argv}: exit {result.returncode}\n{result.stdout}\n'
        f'{result.stderr}')
    return result


def _checkout(dest: pathlib.Path) -> pathlib.Path:
    """The files git tracks or would track, as a clean clone has them
    (with the uncommitted edits): no virtualenv, state or build output."""
    listed = _run('git', 'ls-files', '-z', '--cached', '--others',
                  '--exclude-standard', cwd=ROOT).stdout
    for name in filter(None, listed.split('\0')):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope='module')
def dists(tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[pathlib.Path, pathlib.Path, str]:
    """sdist, wheel (built from the sdist, as ``python -m build`` does)
    and the build's output."""
    work = tmp_path_factory.mktemp('build')
    source = _checkout(work / 'source')
    out = work / 'dist'
    result = _run(sys.executable, '-m', 'build', '--outdir', out, source,
                  cwd=work)
    (sdist,) = out.glob('*.tar.gz')
    (wheel,) = out.glob('*.whl')
    return sdist, wheel, result.stdout + result.stderr


@pytest.fixture(scope='module')
def installed(dists: tuple[pathlib.Path, pathlib.Path, str],
              tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A fresh virtualenv with the wheel and its dependencies only."""
    env = tmp_path_factory.mktemp('venv') / 'venv'
    venv.create(env, with_pip=True)
    _run(env / 'bin' / 'python', '-m', 'pip', 'install', '--quiet',
         '-c', CONSTRAINTS, dists[1], cwd=env)
    return env


@pytest.fixture
def workdir(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where the installed commands run: not the checkout."""
    return tmp_path


def test_sdist_has_the_license_and_the_migrations(
        dists: tuple[pathlib.Path, pathlib.Path, str]) -> None:
    sdist, _wheel, _output = dists
    with tarfile.open(sdist) as archive:
        names = {name.split('/', 1)[1] for name in archive.getnames()
                 if '/' in name}
    assert 'LICENSE' in names
    assert {MIGRATIONS + name for name in REVISIONS} <= names


def test_wheel_has_the_license_and_the_migrations(
        dists: tuple[pathlib.Path, pathlib.Path, str]) -> None:
    _sdist, wheel, output = dists
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(
            name for name in names
            if name.endswith('.dist-info/METADATA'))).decode()
        license_text = archive.read(next(
            name for name in names
            if name.endswith('.dist-info/licenses/LICENSE'))).decode()
    assert {MIGRATIONS + name for name in REVISIONS} <= names
    assert 'instance_aware/store/migrations/script.py.mako' in names
    assert not [name for name in names
                if name.startswith(('instance_aware/local/', 'tests/'))]
    assert 'Apache License' in license_text
    assert 'Version 2.0, January 2004' in license_text
    assert 'License-File: LICENSE' in metadata
    assert 'License classifiers are deprecated' not in output
    assert 'SetuptoolsDeprecationWarning' not in output


def test_installed_commands_work_without_the_checkout(
        installed: pathlib.Path, workdir: pathlib.Path) -> None:
    bin_dir = installed / 'bin'
    located = _run(bin_dir / 'python', '-c',
                   'import instance_aware; print(instance_aware.__file__)',
                   cwd=workdir).stdout
    assert located.startswith(str(installed))
    database = workdir / 'mapping.sqlite'
    config = workdir / 'glance-api.conf'
    config.write_text(f'[instance_aware]\nconnection = sqlite:///{database}'
                      '\n[instance_aware_keys]\nenabled = false\n',
                      encoding='utf-8')
    manage = [bin_dir / 'instance-aware-manage', '--config-file', config]

    synced = _run(*manage, 'db', 'sync', cwd=workdir).stdout
    assert synced.splitlines()[-1] == (
        f'Database schema upgraded from revision None to revision {HEAD}.')
    version = _run(*manage, 'db', 'version', cwd=workdir)
    assert (version.stdout, version.stderr) == (
        f'Current revision: {HEAD}\nHead revision: {HEAD}\n', '')
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {'alembic_version', 'ia_images', 'ia_properties',
            'ia_relations', 'ia_encryption_keys'} <= tables

    sample = _run(bin_dir / 'oslo-config-generator', '--namespace',
                  'instance_aware', cwd=workdir).stdout
    for group in ('[instance_aware]', '[instance_aware_registry]',
                  '[instance_aware_keys]'):
        assert group in sample
    assert '#connection = <None>' in sample
    policy = _run(bin_dir / 'oslopolicy-sample-generator', '--namespace',
                  'instance_aware', cwd=workdir).stdout
    assert '"instance_aware:get_instance_metadata"' in policy
    assert '"instance_aware:get_image_location"' in policy

    status = _run(bin_dir / 'instance-aware-status', '--config-file',
                  config, 'upgrade', 'check', cwd=workdir).stdout
    assert status.count('Result: Success') == 3
    for command in ('instance-aware-manage', 'instance-aware-status'):
        shown = _run(bin_dir / command, '--version', cwd=workdir).stdout
        assert '0.1.0' in shown
    assert not (bin_dir / 'instance-aware').exists()  # dev tooling


def _test_pins(*names: str) -> list[str]:
    """The requirements of the ``test`` extra for ``names``."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / 'setup.cfg', encoding='utf-8')
    lines = parser['options.extras_require']['test'].split()
    return [line for line in lines
            if re.split(r'[=<>!~\[]', line, maxsplit=1)[0] in names]


def _dev_tooling(dest: pathlib.Path) -> pathlib.Path:
    """``tests/local`` alone (and the ``tests`` package it lives in)."""
    (dest / 'tests').mkdir(parents=True)
    shutil.copy2(ROOT / 'tests' / '__init__.py', dest / 'tests')
    shutil.copytree(ROOT / 'tests' / 'local', dest / 'tests' / 'local',
                    ignore=shutil.ignore_patterns('__pycache__'))
    return dest


@pytest.fixture
def served(installed: pathlib.Path, workdir: pathlib.Path
           ) -> Iterator[tuple[str, str, pathlib.Path]]:
    """``serve`` of the dev tooling on the installed package (Glance 33
    and gunicorn added): stacked URL, bare URL, state directory."""
    _run(installed / 'bin' / 'python', '-m', 'pip', 'install', '--quiet',
         '-c', CONSTRAINTS, *_test_pins('glance', 'gunicorn'), cwd=workdir,
         timeout=600)
    tooling = _dev_tooling(workdir / 'tooling')
    port, bare_port = free_port(), free_port()
    state = workdir / 'state'
    log = (workdir / 'serve.out').open('w')
    process = subprocess.Popen(
        [str(installed / 'bin' / 'python'), '-m', 'tests.local', 'serve',
         '--flavor', glance.NOAUTH, '--port', str(port), '--bare-port',
         str(bare_port), '--state-dir', str(state), '--max-lifetime',
         '240'], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, 'PYTHONPATH': str(tooling)})
    url, bare = f'http://127.0.0.1:{port}', f'http://127.0.0.1:{bare_port}'
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (
                (workdir / 'serve.out').read_text())
            try:  # gunicorn accepts before Glance has loaded
                if requests.get(url + '/versions',
                                timeout=10).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert time.monotonic() < deadline, (
                (workdir / 'serve.out').read_text())
            time.sleep(0.5)
        yield url, bare, state
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()


def test_installed_stack_in_a_real_glance(
        served: tuple[str, str, pathlib.Path]) -> None:
    url, bare, state = served
    project = uuid.uuid4().hex
    instance = str(uuid.uuid4())
    created = requests.post(
        url + '/v2/images', headers=headers(project), timeout=TIMEOUT,
        json={'name': 'snap', 'instance_uuid': instance,
              'image_type': 'snapshot'})
    assert created.status_code == 201, created.text
    image_id = created.json()['id']
    assert (created.json()['instance_uuid'],
            created.json()['image_type']) == (instance, 'snapshot')

    shown = requests.get(f'{url}/v2/images/{image_id}',
                         headers=headers(project), timeout=TIMEOUT)
    assert shown.status_code == 200, shown.text
    assert (shown.json()['instance_uuid'],
            shown.json()['image_type']) == (instance, 'snapshot')
    stored = requests.get(f'{bare}/v2/images/{image_id}',
                          headers=headers(project), timeout=TIMEOUT)
    assert stored.status_code == 200, stored.text
    assert 'instance_uuid' not in stored.json()
    assert 'image_type' not in stored.json()

    with sqlite3.connect(state / 'instance_aware.sqlite') as db:
        rows = set(db.execute(
            'SELECT p.name, p.value FROM ia_properties p JOIN ia_images i '
            'ON i.id = p.image_ref WHERE i.image_id = ?', (image_id,)))
    assert {('instance_uuid', instance), ('image_type', 'snapshot')} <= rows
    # A clean start logs no error (glance_store's cinder driver, which
    # needs os-brick, is not reported as one).
    log = (state / 'server.log').read_text(encoding='utf-8')
    assert [line for line in log.splitlines() if ' ERROR ' in line] == []
