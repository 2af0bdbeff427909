"""The deployer guide, run as an operator follows it, with a real Keystone.

The commands come from the ``console`` blocks of
``doc/source/install/index.rst`` and the files from ``etc/``, so the guide
cannot drift from what works.  glance-api serves the sample's ``keystone``
flavor, ``authtoken`` included, against the session's Keystone 30
(``conftest.py``); ``openstack`` runs as the guide writes it, with the
``OS_*`` variables of a project member.  What the test changes, and only
that:

* paths: ``/etc/glance`` and ``/var/lib/glance`` become directories under
  a temporary one, port 9292 a free port on 127.0.0.1;
* both database URLs become SQLite files (the drivers and servers of the
  sample are the operator's);
* ``http://controller:5000`` becomes the test's Keystone, ``GLANCE_PASS``
  and ``ADMIN_PASS`` the passwords of its ``glance`` and ``admin``
  accounts, and ``memcached_servers`` goes (no memcached: authtoken keeps
  its cache in the process);
* the session's catalog also lists the other tests' Glances, so this one
  is in a region of its own, :data:`REGION`, and ``[instance_aware_registry]
  region_name`` names it (``RegionOne`` in the sample);
* ``openstack`` prints JSON (``-f json``) so that the test can read it,
  and its stdin is a terminal, as at a prompt (openstackclient uploads any
  other stdin as the image's data).

Commands that need what a test cannot have (``pip`` against the network,
``systemctl``, a uWSGI build) are named in :data:`NOT_RUN` with the reason,
and what can be checked of them is.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from instance_aware.store import migration
from tests import docsnippets
from tests.docsnippets import Command
from tests.local import keystone
from tests.local import server as local_server

BIN = pathlib.Path(sys.executable).parent
STOCK_PASTE = pathlib.Path(sys.prefix) / 'etc' / 'glance' / (
    'glance-api-paste.ini')
SAMPLE_CONF = docsnippets.ETC / 'glance-api.conf.sample'
PASTE = docsnippets.ETC / 'paste.ini'
UNIT = docsnippets.ETC / 'glance-api.service'
UWSGI = docsnippets.ETC / 'glance-api-uwsgi.ini'
APP = 'glance.wsgi.api:application'
#: The catalog region of this test's Glance.
REGION = 'InstallGuide'
#: The sample's Keystone, and its passwords of the glance and admin users.
SAMPLE_KEYSTONE = 'http://controller:5000'
GLANCE_PASS = 'GLANCE_PASS'
ADMIN_PASS = 'ADMIN_PASS'

#: Commands of the guide this test does not run, and why.
NOT_RUN = {
    'pip': 'installs from the network; the test environment has the '
           'packages (the extras are checked against setup.cfg)',
    'systemctl': 'no systemd here; the unit\'s ExecStart is the gunicorn '
                 'command the test runs',
    'uwsgi': 'no uWSGI build here; its file names the same application',
}
#: Commands of the guide this test runs.
RUN = {'glance-manage', 'instance-aware-manage', 'gunicorn', 'openstack',
       'sqlite3', 'oslopolicy-sample-generator'}

#: Seconds Glance may take to answer after gunicorn starts.
START_TIMEOUT = 90
#: Seconds any HTTP call may take.
TIMEOUT = 30

#: Options the validator cannot know: Glance's store groups are named
#: by ``enabled_backends``, and keystoneauth's plugin options by
#: ``auth_type``.
DYNAMIC_OPTIONS = {
    'glance_store/default_backend',
    'fs/filesystem_store_datadir',
    'os_glance_staging_store/filesystem_store_datadir',
    'os_glance_tasks_store/filesystem_store_datadir',
}

GUIDE = docsnippets.commands()


def _all(program: str, *words: str) -> list[Command]:
    """The documented commands of ``program`` with all of ``words``."""
    return [cmd for cmd in GUIDE if cmd.program == program
            and all(word in cmd.argv for word in words)]


def _find(program: str, *words: str) -> Command:
    """The one documented command of ``program`` with all of ``words``."""
    found = _all(program, *words)
    assert len(found) == 1, (program, words, [c.line for c in found])
    return found[0]


def test_every_documented_command_is_run_or_excused() -> None:
    programs = [cmd.program for cmd in GUIDE]
    assert programs, 'the guide lost its console blocks'
    unknown = sorted(set(programs) - RUN - set(NOT_RUN))
    assert not unknown, (
        f'commands in the install guide that no test runs: {unknown}; '
        'run them in tests/functional/keystone/test_install_guide.py')


def test_pip_extras_exist() -> None:
    parser = configparser.ConfigParser()
    parser.read(docsnippets.ROOT / 'setup.cfg', encoding='utf-8')
    extras = set(parser['options.extras_require'])
    for cmd in GUIDE:
        if cmd.program != 'pip':
            continue
        for word in cmd.argv[1:]:
            if word.startswith('instance-aware['):
                assert word[len('instance-aware['):-1] in extras, cmd.line


def test_unit_and_uwsgi_serve_the_documented_command() -> None:
    gunicorn = _find('gunicorn')
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT, encoding='utf-8')
    exec_start = unit['Service']['ExecStart'].split()
    assert pathlib.Path(exec_start[0]).name == 'gunicorn'
    assert exec_start[1:] == gunicorn.argv[1:]
    assert unit['Service']['Environment'] == (
        'OS_GLANCE_CONFIG_DIR=' + gunicorn.env['OS_GLANCE_CONFIG_DIR'])
    uwsgi = configparser.ConfigParser(interpolation=None)
    uwsgi.read(UWSGI, encoding='utf-8')
    assert uwsgi['uwsgi']['module'] == APP == gunicorn.argv[-1]
    assert uwsgi['uwsgi']['http-socket'] == docsnippets.option_value(
        gunicorn.argv, '--bind')
    ini = docsnippets.option_value(_find('uwsgi').argv, '--ini')
    assert pathlib.Path(ini).name == UWSGI.name


def test_paste_file_is_stock_plus_what_the_guide_says() -> None:
    stock, ours = _read_ini(STOCK_PASTE), _read_ini(PASTE)
    added = sorted(set(ours.sections()) - set(stock.sections()))
    assert added == ['filter:data_integrity', 'filter:encryption_properties',
                     'filter:instance_aware', 'filter:instance_metadata',
                     'filter:location_policy']
    assert not set(stock.sections()) - set(ours.sections())
    guide = docsnippets.INSTALL_GUIDE.read_text(encoding='utf-8')
    for section in added:
        assert f'``[{section}]``' in guide, section
    for section in stock.sections():
        if section == 'composite:api':
            continue
        assert dict(stock[section]) == dict(ours[section]), section
    pipelines = dict(stock['composite:api'])
    assert set(pipelines) == set(ours['composite:api'])
    for flavor, line in pipelines.items():
        if flavor == 'paste.composite_factory':
            assert ours['composite:api'][flavor] == line
            continue
        words = line.split()
        where = words.index('context' if 'context' in words
                            else 'unauthenticated-context') + 1
        expected = [*words[:where], 'instance_aware', *words[where:]]
        assert ours['composite:api'][flavor].split() == expected, flavor


def test_sample_config_has_no_unknown_option(tmp_path: pathlib.Path) -> None:
    namespaces = ['glance.api', 'glance.store', 'oslo.db', 'oslo.policy',
                  'oslo.concurrency', 'keystonemiddleware.auth_token',
                  'castellan.config', 'instance_aware']
    argv = [str(BIN / 'oslo-config-validator'), '--input-file',
            str(SAMPLE_CONF)]
    for namespace in namespaces:
        argv += ['--namespace', namespace]
    result = subprocess.run(argv, capture_output=True, text=True,
                            timeout=120, check=False, cwd=tmp_path)
    unknown = [
        line.split(':', 2)[2].split(' is not part', 1)[0]
        for line in result.stderr.splitlines()
        if line.startswith('ERROR:oslo_config.validator:')]
    assert unknown, result.stderr  # the store groups are always reported
    assert not set(unknown) - DYNAMIC_OPTIONS, result.stderr


def _read_ini(path: pathlib.Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding='utf-8')
    assert parser.sections(), path
    return parser


class Host:
    """``/etc/glance`` and ``/var/lib/glance`` of one test host."""

    def __init__(self, root: pathlib.Path) -> None:
        self.etc = root / 'etc' / 'glance'
        self.var = root / 'var' / 'lib' / 'glance'
        self.etc.mkdir(parents=True)
        self.var.mkdir(parents=True)
        self.port = local_server.free_port()
        self.conf = self.etc / 'glance-api.conf'
        self.glance_db = self.var / 'glance.sqlite'

    def substitute(self, text: str) -> str:
        return (text.replace('/etc/glance', str(self.etc))
                .replace('/var/lib/glance', str(self.var))
                .replace(':9292', f':{self.port}'))

    def argv(self, cmd: Command) -> list[str]:
        program = (shutil.which(cmd.program, path=str(BIN))
                   or shutil.which(cmd.program))
        assert program, f'{cmd.program} is not installed'
        return [program] + [self.substitute(word) for word in cmd.argv[1:]]

    def env(self, cmd: Command) -> dict[str, str]:
        env = dict(os.environ)
        env.update({key: self.substitute(value)
                    for key, value in cmd.env.items()})
        return env

    def run(self, cmd: Command) -> str:
        result = subprocess.run(self.argv(cmd), env=self.env(cmd),
                                capture_output=True, text=True, timeout=120,
                                check=False, cwd=self.var)
        assert result.returncode == 0, (cmd.line, result.stdout,
                                        result.stderr[-3000:])
        return result.stdout + result.stderr

    def install(self, directory: keystone.Directory | None,
                flavor: str | None = None) -> None:
        """The sample files, as the guide installs them, with the Keystone
        of ``directory`` (None: no Keystone answers at all)."""
        text = self.substitute(SAMPLE_CONF.read_text('utf-8'))
        if directory is not None:
            root = directory.auth_url.removesuffix('/v3')
            text = (text.replace(SAMPLE_KEYSTONE, root)
                    .replace(GLANCE_PASS, directory.glance.password)
                    .replace(ADMIN_PASS, directory.admin.password))
        conf = configparser.RawConfigParser(strict=True)
        conf.optionxform = str  # type: ignore[assignment,method-assign]
        conf.read_string(text)
        conf['database']['connection'] = f'sqlite:///{self.glance_db}'
        conf['instance_aware']['connection'] = (
            f'sqlite:///{self.var / "instance_aware.sqlite"}')
        if flavor is not None:
            conf['paste_deploy']['flavor'] = flavor
        conf['DEFAULT']['bind_host'] = '127.0.0.1'
        if directory is None:
            conf['instance_aware_registry']['endpoint'] = (
                f'http://127.0.0.1:{self.port}')
            conf['instance_aware_keys']['auth_url'] = (
                f'http://127.0.0.1:{local_server.free_port()}')
        else:
            assert conf['paste_deploy']['flavor'] == 'keystone'
            # Reached through the catalog, as the guide says, in this
            # Glance's own region.
            conf['instance_aware_registry']['region_name'] = REGION
            del conf['keystone_authtoken']['memcached_servers']
        with open(self.conf, 'w', encoding='utf-8') as stream:
            conf.write(stream)
        shutil.copyfile(PASTE, self.etc / 'glance-api-paste.ini')
        for name in ('images', 'staging', 'tasks', 'image-cache', 'lock'):
            (self.var / name).mkdir()
        rules = docsnippets.code_blocks(docsnippets.INSTALL_GUIDE, 'yaml')
        assert len(rules) == 1, rules
        (self.etc / 'policy.yaml').write_text(
            '\n'.join(rules[0]) + '\n', encoding='utf-8')

    def openstack(self, cmd: Command,
                  environ: dict[str, str]) -> dict[str, Any]:
        """``openstack`` as documented, as the account of ``environ``.

        Its stdin is a terminal, as at an operator's prompt: openstackclient
        uploads a stdin that is not one as the image's data.
        """
        env = {key: value for key, value in os.environ.items()
               if not key.startswith('OS_')}
        controller, terminal = os.openpty()
        try:
            result = subprocess.run(
                [*self.argv(cmd), '-f', 'json'], env={**env, **environ},
                stdin=terminal, capture_output=True, text=True, timeout=120,
                check=False, cwd=self.var)
        finally:
            os.close(terminal)
            os.close(controller)
        assert result.returncode == 0, (cmd.line, result.stdout,
                                        result.stderr[-3000:])
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    @contextlib.contextmanager
    def serving(self, cmd: Command) -> Iterator[str]:
        """glance-api under the documented gunicorn command."""
        log = open(self.var / 'gunicorn.log', 'wb')  # noqa: SIM115
        process = subprocess.Popen(
            self.argv(cmd), env=self.env(cmd), cwd=self.var,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not local_server.answers(self.port):
                tail = (self.var / 'gunicorn.log').read_text(
                    'utf-8', 'replace')[-3000:]
                assert process.poll() is None, tail
                assert time.monotonic() < deadline, tail
                time.sleep(0.5)
            yield f'http://127.0.0.1:{self.port}'
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            log.close()


def _documented_properties(cmd: Command) -> dict[str, str]:
    """The ``--property KEY=VALUE`` pairs of a documented command."""
    return dict(cmd.argv[index + 1].split('=', 1)
                for index, word in enumerate(cmd.argv)
                if word == '--property')


def _glance_properties(host: Host, image_id: str) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(host.glance_db)) as db:
        rows = db.execute('SELECT name, value FROM image_properties '
                          'WHERE image_id = ? AND deleted = 0', (image_id,))
        return dict(rows.fetchall())


@pytest.mark.timeout(600)
def test_install_guide_from_top_to_bottom(
        tmp_path: pathlib.Path, directory: keystone.Directory) -> None:
    host = Host(tmp_path)
    host.install(directory)
    host.run(_find('glance-manage', 'db_sync'))
    host.run(_find('sqlite3'))
    with contextlib.closing(sqlite3.connect(host.glance_db)) as db:
        stats = db.execute('SELECT count(*) FROM sqlite_stat1').fetchone()
        assert stats[0] > 0, 'ANALYZE wrote no planner statistics'
    host.run(_all('instance-aware-manage', 'sync')[0])
    version = host.run(_find('instance-aware-manage', 'version'))
    head = migration.head()
    assert f'Current revision: {head}' in version, version
    assert f'Head revision: {head}' in version, version
    member = directory['alpha-member']
    with host.serving(_find('gunicorn')) as base:
        keystone.register_image_endpoints(directory, base, region=REGION)
        environ = member.environ(directory.auth_url, REGION)
        create = _find('openstack', 'create')
        properties = _documented_properties(create)
        assert set(properties) == {'instance_uuid', 'image_type'}
        created = host.openstack(create, environ)
        assert created['name'] == create.argv[-1]
        assert created['owner'] == member.project_id
        returned = created['properties']
        assert {k: returned[k] for k in properties} == properties
        show = _find('openstack', 'show')
        shown = host.openstack(show, environ)
        assert shown['id'] == created['id']
        assert {k: shown['properties'][k] for k in properties} == properties
        image_url = f'{base}/v2/images/{created["id"]}'
        # Glance shows locations (the sample turns them on); the stack
        # hides them from a project member, as the guide's policy says.
        mine = {'X-Auth-Token': directory.token(member.username)}
        answer = requests.get(image_url, headers=mine, timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text
        assert {k: answer.json()[k] for k in properties} == properties
        assert 'locations' not in answer.json(), answer.text
        assert 'direct_url' not in answer.json(), answer.text
        admin = requests.get(image_url, timeout=TIMEOUT, headers={
            'X-Auth-Token': directory.token(keystone.ADMIN)})
        assert admin.json()['locations'] == [], admin.text
        assert {k: admin.json()[k] for k in properties} == properties
        # Another project's member: the image is not even there; once
        # the owner shares it with every project, it is, without keys.
        other = {'X-Auth-Token': directory.token('beta-member')}
        hidden = requests.get(image_url, headers=other, timeout=TIMEOUT)
        assert hidden.status_code == 404, hidden.text
        assert properties['instance_uuid'] not in hidden.text
        shared = requests.patch(
            image_url, timeout=TIMEOUT,
            json=[{'op': 'replace', 'path': '/visibility',
                   'value': 'community'}],
            headers={**mine, 'Content-Type':
                     'application/openstack-images-v2.1-json-patch'})
        assert shared.json()['visibility'] == 'community', shared.text
        seen = requests.get(image_url, headers=other, timeout=TIMEOUT)
        assert seen.json()['id'] == created['id'], seen.text
        assert not set(properties) & set(seen.json()), seen.text
        stored = _glance_properties(host, str(created['id']))
        assert not set(properties) & set(stored), stored
        # The upgrade path: the schema is already at head, reconcile
        # finds this healthy image and repairs nothing.
        schema_sync, upgrade_sync = _all('instance-aware-manage', 'sync')
        assert upgrade_sync.argv == schema_sync.argv
        host.run(upgrade_sync)
        summary = host.run(_find('instance-aware-manage', 'reconcile'))
        assert '1 records checked against the registry' in summary, summary
        assert '0 pending records were activated' in summary, summary
        shown = host.openstack(show, environ)
        assert {k: shown['properties'][k] for k in properties} == properties


@pytest.mark.timeout(300)
def test_without_keystone_every_image_call_is_refused(
        tmp_path: pathlib.Path) -> None:
    """What the guide says of the unauthenticated flavors."""
    host = Host(tmp_path)
    host.install(None, '')  # the default line: unauthenticated-context
    host.run(_find('glance-manage', 'db_sync'))
    host.run(_all('instance-aware-manage', 'sync')[0])
    with host.serving(_find('gunicorn')) as base:
        listed = requests.get(f'{base}/v2/images', timeout=TIMEOUT)
        created = requests.post(
            f'{base}/v2/images', json={'name': 'x'}, timeout=TIMEOUT)
    for response in (listed, created):
        assert response.status_code == 403, response.text
        assert '403 Forbidden' in response.text, response.text
    guide = docsnippets.INSTALL_GUIDE.read_text(encoding='utf-8')
    assert '``403 Forbidden`` to every image call' in guide


def test_policy_sample_and_installation_uuid_commands() -> None:
    host_env = dict(os.environ)
    sample = subprocess.run(
        [str(BIN / 'oslopolicy-sample-generator'),
         *_find('oslopolicy-sample-generator').argv[1:]],
        capture_output=True, text=True, timeout=120, check=True,
        env=host_env)
    documented = docsnippets.code_blocks(docsnippets.INSTALL_GUIDE, 'yaml')
    for rule in documented[0]:
        name = rule.split('"')[1]
        assert f'#"{name}":' in sample.stdout, name
    generated = subprocess.run(
        [str(BIN / 'instance-aware-manage'),
         *_find('instance-aware-manage',
                'generate-installation-uuid').argv[1:]],
        capture_output=True, text=True, timeout=60, check=True)
    assert str(uuid.UUID(generated.stdout.split()[0])) == (
        generated.stdout.split()[0])
