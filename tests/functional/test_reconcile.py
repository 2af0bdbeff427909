"""``instance-aware-manage reconcile`` against a real Glance.

A Glance of its own (not the session one), so that every record in its
store is one this module made and the summary can be asserted exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from instance_aware.cmd import manage
from instance_aware.http.request import PATCH_V21
from instance_aware.store import engine as ia_engine
from instance_aware.store import models
from instance_aware.store.records import Records, RelationFields
from tests.functional.conftest import headers
from tests.local.identity import ADMIN_ROLES
from tests.local.server import GlanceServer

TIMEOUT = 30


@pytest.fixture(scope='module')
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with GlanceServer(tmp_path_factory.mktemp('reconcile'),
                      max_lifetime=600) as glance:
        yield glance


@pytest.fixture(scope='module')
def registry_conf(server: GlanceServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Config that lets the command reach the local header-trusting Glance."""
    path = tmp_path_factory.mktemp('conf') / 'registry.conf'
    path.write_text('[instance_aware_registry]\n'
                    f'endpoint = {server.url}\n'
                    'trusted_headers = true\n', encoding='utf-8')
    return path


@pytest.fixture
def records(server: GlanceServer) -> Iterator[Records]:
    engine = ia_engine.create_engine(server.state.instance_aware_db_url)
    try:
        yield Records(ia_engine.Database(engine), 'default')
    finally:
        engine.dispose()


def _manage(server: GlanceServer, conf: Path, *args: str,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = manage.main([*server.state.config_args(), '--config-file',
                        str(conf), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _create(url: str, project: str, **properties: Any) -> str:
    response = requests.post(
        url + '/v2/images', json={'name': 'img', **properties},
        headers=headers(project), timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    image_id: str = response.json()['id']
    return image_id


def _relation(server: GlanceServer, image_id: str,
              project: str) -> dict[str, Any] | None:
    response = requests.get(f'{server.url}/v2/images/{image_id}/instance',
                            headers=headers(project), timeout=TIMEOUT)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def test_reconcile_repairs_crashes_and_bypassed_deletes(
        server: GlanceServer, registry_conf: Path, records: Records,
        capsys: pytest.CaptureFixture[str]) -> None:
    project = uuid.uuid4().hex
    instance = str(uuid.uuid4())
    # Kept: created through the stack, still in Glance.
    kept = _create(server.url, project, instance_uuid=instance,
                   image_type='snapshot')
    # Deleted behind the stack's back (bare pipeline): record stays active.
    bypassed = _create(server.url, project, instance_uuid=instance,
                       image_type='backup', backup_type='daily')
    response = requests.delete(f'{server.bare_url}/v2/images/{bypassed}',
                               headers=headers(project), timeout=TIMEOUT)
    assert response.status_code == 204
    # Given to another project behind the stack's back: the record still
    # names the first owner.
    other = uuid.uuid4().hex
    given = _create(server.url, project, instance_uuid=instance,
                    image_type='backup', backup_type='weekly')
    response = requests.patch(
        f'{server.bare_url}/v2/images/{given}',
        json=[{'op': 'replace', 'path': '/owner', 'value': other}],
        headers={**headers(project, roles=ADMIN_ROLES),
                 'Content-Type': PATCH_V21}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()['owner'] == other
    assert _relation(server, given, project) is not None
    assert _relation(server, given, other) is None
    # A crash after Glance created the image, before our commit.
    crashed_after = _create(server.bare_url, project, name='late')
    records.begin(crashed_after, project, models.INSTANCE,
                  {'instance_uuid': instance, 'image_type': 'snapshot'},
                  RelationFields(instance, None, 'snapshot', None, False,
                                 f'{project}-user'))
    # A crash before Glance created it: nothing to activate.
    never_created = str(uuid.uuid4())
    records.begin(never_created, project, models.INSTANCE,
                  {'instance_uuid': instance},
                  RelationFields(instance, None, None, None, False, None))

    code, out, err = _manage(server, registry_conf, 'reconcile',
                             '--dry-run', '--pending-age', '0',
                             '--batch-size', '1', capsys=capsys)
    assert (code, err) == (0, '')
    assert out.splitlines() == [
        'Dry run: nothing was changed.',
        '5 records checked against the registry',
        '1 pending records would be activated',
        '1 pending records would be discarded',
        '1 records of deleted images would be marked deleted',
        '1 records of images given to another project would be moved',
    ]
    assert records.get(crashed_after, models.INSTANCE).state == 'pending'
    assert records.related(given).project_id == project
    assert records.get(never_created, models.INSTANCE) is not None
    assert records.get(bypassed, models.INSTANCE).state == 'active'

    code, out, err = _manage(server, registry_conf, 'reconcile',
                             '--pending-age', '0', capsys=capsys)
    assert (code, err) == (0, '')
    assert out.splitlines() == [
        '5 records checked against the registry',
        '1 pending records were activated',
        '1 pending records were discarded',
        '1 records of deleted images were marked deleted',
        '1 records of images given to another project were moved',
    ]
    assert records.get(never_created, models.INSTANCE) is None
    # The given image is the new owner's: its relation, filters and
    # query API; the former owner learns nothing of it any more.
    moved = _relation(server, given, other)
    assert moved is not None
    assert (moved['owner'], moved['instance_uuid'], moved['backup_type']) \
        == (other, instance, 'weekly')
    assert _relation(server, given, project) is None
    listed = requests.get(
        f'{server.url}/v2/images',
        params={'instance_uuid': instance, 'backup_type': 'weekly'},
        headers=headers(other), timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text
    assert [i['id'] for i in listed.json()['images']] == [given]
    assert listed.json()['images'][0]['instance_uuid'] == instance
    activated = _relation(server, crashed_after, project)
    assert activated is not None
    assert (activated['status'], activated['instance_uuid'],
            activated['owner']) == ('active', instance, project)
    assert activated['created_at'] is not None
    # The bypassed delete is history now, the kept image untouched.
    response = requests.get(
        f'{server.url}/v2/instances/{instance}/images',
        params={'include_deleted': 'true'}, headers=headers(project),
        timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    by_id = {e['image_id']: e for e in response.json()['images']}
    assert set(by_id) == {kept, bypassed, crashed_after}
    assert by_id[bypassed]['status'] == 'deleted'
    assert by_id[bypassed]['deleted_at'] is not None
    assert by_id[kept]['status'] == 'active'
    # The rotation listing through the stack forgets the deleted backup.
    listed = requests.get(
        f'{server.url}/v2/images',
        params={'instance_uuid': instance, 'image_type': 'backup'},
        headers=headers(project), timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text
    assert listed.json()['images'] == []

    # A second run finds nothing more to do.
    code, out, _err = _manage(server, registry_conf, 'reconcile',
                              '--pending-age', '0', capsys=capsys)
    assert code == 0
    assert out.splitlines()[1:] == [
        '0 pending records were activated',
        '0 pending records were discarded',
        '0 records of deleted images were marked deleted',
        '0 records of images given to another project were moved',
    ]


def test_young_pending_records_are_left_alone(
        server: GlanceServer, registry_conf: Path, records: Records,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A create in flight right now is not the reconciler's business."""
    in_flight = str(uuid.uuid4())
    records.begin(in_flight, 'p', models.INSTANCE, {'image_type': 'x'})
    try:
        code, out, _err = _manage(server, registry_conf, 'reconcile',
                                  capsys=capsys)
        assert code == 0
        assert '0 pending records were discarded' in out.splitlines()
        assert records.get(in_flight, models.INSTANCE).state == 'pending'
    finally:
        records.abort(in_flight, models.INSTANCE)


def test_unreachable_glance_is_one_line_and_changes_nothing(
        server: GlanceServer, records: Records, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    project = uuid.uuid4().hex
    image = _create(server.url, project, instance_uuid=str(uuid.uuid4()))
    conf = tmp_path / 'down.conf'
    conf.write_text('[instance_aware_registry]\n'
                    'endpoint = http://127.0.0.1:9\n'
                    'trusted_headers = true\ntimeout = 2\n',
                    encoding='utf-8')
    code, out, err = _manage(server, conf, 'reconcile', capsys=capsys)
    assert code == 1
    assert out == ''
    assert err.startswith('instance-aware-manage: error: registry '
                          'http://127.0.0.1:9: ')
    assert len(err.splitlines()) == 1
    assert records.get(image, models.INSTANCE).state == 'active'


@pytest.mark.parametrize('args', [
    ['--batch-size', '0'], ['--batch-size', 'x'], ['--pending-age', '-1'],
])
def test_bad_options_are_usage_errors(
        server: GlanceServer, registry_conf: Path, args: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _manage(server, registry_conf, 'reconcile', *args,
                              capsys=capsys)
    assert code == 2
    assert 'reconcile' in err and args[0] in err


def test_missing_endpoint_is_reported(
        server: GlanceServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No endpoint and no auth: say what to configure."""
    conf = tmp_path / 'empty.conf'
    conf.write_text('[instance_aware_registry]\n', encoding='utf-8')
    code, out, err = _manage(server, conf, 'reconcile', capsys=capsys)
    assert (code, out) == (1, '')
    assert err.startswith('instance-aware-manage: error: registry: ')
    assert len(err.splitlines()) == 1
