"""``instance-aware-manage adopt``: keys Glance stored before the stack.

A Glance of its own: adoption walks every image Glance has.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instance_aware.cmd import manage
from tests.functional.conftest import Api
from tests.local.server import GlanceServer

PATCH = 'application/openstack-images-v2.1-json-patch'


@pytest.fixture(scope='module')
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with GlanceServer(tmp_path_factory.mktemp('adopt'),
                      max_lifetime=600) as glance:
        yield glance


def _conf(path: Path, endpoint: str) -> Path:
    path.write_text('[instance_aware_registry]\n'
                    f'endpoint = {endpoint}\ntrusted_headers = true\n',
                    encoding='utf-8')
    return path


def _manage(server: GlanceServer, conf: Path, *args: str,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = manage.main([*server.state.config_args(), '--config-file',
                        str(conf), 'adopt', *args])
    out, err = capsys.readouterr()
    return code, out, err


def _create(api: Api, project: str, **properties: Any) -> dict[str, Any]:
    response = api.post('/v2/images', project=project,
                        json={'name': 'legacy', **properties})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def test_adopt_moves_legacy_keys_into_the_store(
        server: GlanceServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    stack, bare = Api(server.url), Api(server.bare_url)
    project = uuid.uuid4().hex
    instance = str(uuid.uuid4())
    key_id = str(uuid.uuid4())
    nova = {'instance_uuid': instance, 'image_type': 'backup',
            'backup_type': 'daily', 'user_id': 'nova-user'}
    encryption = {'os_encrypt_format': 'luks', 'os_encrypt_key_id': key_id}
    # Before the stack: Glance stores everything itself.
    legacy = _create(bare, project, os_distro='cirros', **nova,
                     **encryption)
    broken = _create(bare, project, instance_uuid='not-a-uuid')
    plain = _create(bare, project, os_distro='debian')
    # Since the stack: the store has a newer value than Glance's copy.
    newer = _create(stack, project, instance_uuid=instance,
                    image_type='snapshot')
    response = bare.patch(
        f"/v2/images/{newer['id']}", project=project,
        data=json.dumps([{'op': 'add', 'path': '/image_type',
                          'value': 'stale'}]),
        headers={'Content-Type': PATCH})
    assert response.status_code == 200, response.text

    through_stack = _conf(tmp_path / 'stacked.conf', server.url)
    code, out, err = _manage(server, through_stack, capsys=capsys)
    assert (code, out) == (1, '')
    assert 'answers through the instance-aware stack' in err

    conf = _conf(tmp_path / 'bare.conf', server.bare_url)
    code, out, err = _manage(server, conf, '--dry-run', '--batch-size', '2',
                             capsys=capsys)
    assert (code, err) == (0, '')
    assert out.splitlines() == [
        'Dry run: nothing was changed.',
        '4 images scanned',
        '2 images would be adopted (7 keys moved out of Glance)',
        '1 images left alone (invalid values)',
        f"  image {broken['id']}: 'instance_uuid' is not a UUID",
    ]
    assert bare.get(f"/v2/images/{legacy['id']}",
                    project=project).json()['image_type'] == 'backup'

    code, out, err = _manage(server, conf, capsys=capsys)
    assert (code, err) == (0, '')
    assert out.splitlines()[1] == (
        '2 images were adopted (7 keys moved out of Glance)')

    # Glance keeps only what is its own.
    glance_view = bare.get(f"/v2/images/{legacy['id']}",
                           project=project).json()
    assert set(nova).isdisjoint(glance_view)
    assert set(encryption).isdisjoint(glance_view)
    assert glance_view['os_distro'] == 'cirros'
    assert bare.get(f"/v2/images/{broken['id']}",
                    project=project).json()['instance_uuid'] == 'not-a-uuid'
    assert 'image_type' not in bare.get(f"/v2/images/{newer['id']}",
                                        project=project).json()
    assert bare.get(f"/v2/images/{plain['id']}",
                    project=project).json()['os_distro'] == 'debian'
    # The stack gives them back and answers Nova's rotation with them.
    shown = stack.get(f"/v2/images/{legacy['id']}", project=project).json()
    assert {k: shown[k] for k in (*nova, *encryption)} == {
        **nova, **encryption}
    rotation = stack.get('/v2/images', project=project, params={
        'instance_uuid': instance, 'image_type': 'backup',
        'backup_type': 'daily', 'sort_key': 'created_at',
        'sort_dir': 'desc'}).json()
    assert [i['id'] for i in rotation['images']] == [legacy['id']]
    related = stack.get(f"/v2/images/{legacy['id']}/instance",
                        project=project).json()
    assert (related['instance_uuid'], related['trusted']) == (instance,
                                                              False)
    # What the stack stored since wins over Glance's stale copy.
    assert stack.get(f"/v2/images/{newer['id']}",
                     project=project).json()['image_type'] == 'snapshot'

    code, out, _err = _manage(server, conf, capsys=capsys)
    assert code == 0
    assert out.splitlines()[1] == (
        '0 images were adopted (0 keys moved out of Glance)')
    stack.close()
    bare.close()
