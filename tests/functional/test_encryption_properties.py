"""Encryption properties through the stack into a real Glance.

Validation (400 naming the property, nothing written anywhere), capture
and strip (the bare endpoint shows Glance never stored them), give-back by
persona, fixed key and format once the image has data, list filters
without an oracle, and the import refusal when conversion is on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.functional.conftest import Api, headers
from tests.local.server import GlanceServer

PATCH = 'application/openstack-images-v2.1-json-patch'
PATCH_V20 = 'application/openstack-images-v2.0-json-patch'


def encrypted(**extra: str) -> dict[str, str]:
    return {'os_encrypt_format': 'LUKSv1',
            'os_encrypt_cipher': 'aes-xts-plain64',
            'os_encrypt_key_id': str(uuid.uuid4()),
            'os_encrypt_key_deletion_policy': 'on_image_deletion',
            'os_decrypt_container_format': 'bare',
            'os_decrypt_size': '1073741824', **extra}


KEYS = set(encrypted())


def _project() -> str:
    return uuid.uuid4().hex


def _create(api: Api, project: str, roles: tuple[str, ...] = (
        'reader', 'member'), **properties: Any) -> dict[str, Any]:
    """An image of ``project`` (public ones need the admin role)."""
    if properties.get('visibility') == 'public':
        roles = ('admin', *roles)
    response = api.post('/v2/images', project=project, roles=roles,
                        json={'name': 'enc', 'disk_format': 'raw',
                              'container_format': 'bare', **properties})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def _patch(api: Api, project: str, image_id: str, ops: list[Any],
           media_type: str = PATCH, **kwargs: Any) -> requests.Response:
    """``ops`` in v2.1 form; rewritten for the v2.0 media type."""
    if media_type == PATCH_V20:
        ops = [{op['op']: op['path'],
                **({'value': op['value']} if 'value' in op else {})}
               for op in ops]
    return api.patch(f'/v2/images/{image_id}', project=project,
                     data=json.dumps(ops),
                     headers={'Content-Type': media_type}, **kwargs)


def _upload(api: Api, project: str, image_id: str) -> None:
    response = api.put(f'/v2/images/{image_id}/file', project=project,
                       data=b'encrypted bytes ' * 64,
                       headers={'Content-Type': 'application/octet-stream'})
    assert response.status_code == 204, response.text


def test_create_captures_strips_and_gives_back(api: Api,
                                              bare_api: Api) -> None:
    project = _project()
    values = encrypted()
    image = _create(api, project, **values)
    assert {k: image[k] for k in KEYS} == values
    shown = api.get(f"/v2/images/{image['id']}", project=project).json()
    assert {k: shown[k] for k in KEYS} == values
    bare = bare_api.get(f"/v2/images/{image['id']}", project=project).json()
    assert KEYS.isdisjoint(bare), 'Glance stored an encryption property'
    assert bare['name'] == 'enc' and bare['status'] == 'queued'


def test_give_back_by_persona(api: Api) -> None:
    project, other = _project(), _project()
    values = encrypted()
    image = _create(api, project, visibility='public', **values)
    path = f"/v2/images/{image['id']}"

    def seen(**caller: Any) -> dict[str, Any]:
        response = api.get(path, **caller)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    assert {k: seen(project=project, roles=['reader'])[k]
            for k in KEYS} == values
    assert {k: seen(project=other, roles=['admin'])[k]
            for k in KEYS} == values
    # A service token (Nova acting for a user of another project) does
    # not widen what that user may read (issue 17, finding 5).
    through_nova = seen(project=other, service=True)
    assert KEYS.isdisjoint(through_nova)
    assert through_nova['id'] == image['id']
    assert {k: seen(project=project, service=True)[k]
            for k in KEYS} == values
    foreign = seen(project=other)
    assert KEYS.isdisjoint(foreign)
    assert foreign['id'] == image['id']
    listed = api.get('/v2/images', project=other,
                     params={'id': f"in:{image['id']}"}).json()['images']
    assert [i['id'] for i in listed] == [image['id']]
    assert KEYS.isdisjoint(listed[0])


@pytest.mark.parametrize(('properties', 'named'), [
    ({'os_encrypt_key_id': 'not-a-uuid', 'os_encrypt_format': 'luks'},
     'os_encrypt_key_id'),
    (encrypted(os_encrypt_key_deletion_policy='sometimes'),
     'os_encrypt_key_deletion_policy'),
    (encrypted(os_encrypt_format='rot13'), 'os_encrypt_format'),
    (encrypted(os_decrypt_size='-1'), 'os_decrypt_size'),
    (encrypted(os_decrypt_size='1e9'), 'os_decrypt_size'),
    ({'os_encrypt_format': 'luks'}, 'os_encrypt_key_id'),
    ({'os_encrypt_key_id': str(uuid.uuid4())}, 'os_encrypt_format'),
    ({'os_encrypt_cipher': 'aes'}, 'os_encrypt_key_id'),
    ({'cinder_encryption_key_id': 'nope'}, 'cinder_encryption_key_id'),
    ({'cinder_encryption_key_deletion_policy': 'on_image_deletion'},
     'cinder_encryption_key_id'),
    ({'cinder_encryption_key_id': str(uuid.uuid4()),
      'cinder_encryption_key_deletion_policy': 'yes'},
     'cinder_encryption_key_deletion_policy'),
    ({'os_encrypt_format': 5, 'os_encrypt_key_id': str(uuid.uuid4())},
     'os_encrypt_format'),
])
def test_invalid_creates_are_400_and_write_nothing(
        api: Api, bare_api: Api, properties: dict[str, Any],
        named: str) -> None:
    project = _project()
    image_id = str(uuid.uuid4())
    response = api.post('/v2/images', project=project,
                        json={'id': image_id, 'name': 'bad', **properties})
    assert response.status_code == 400, response.text
    assert named in response.text
    assert bare_api.get(f'/v2/images/{image_id}',
                        project=project).status_code == 404
    # The id is still free: nothing half written in the store either.
    again = api.post('/v2/images', project=project,
                     json={'id': image_id, 'name': 'good', **encrypted()})
    assert again.status_code == 201, again.text


def test_legacy_pair_is_captured(api: Api, bare_api: Api) -> None:
    project = _project()
    legacy = {'cinder_encryption_key_id': str(uuid.uuid4()),
              'cinder_encryption_key_deletion_policy': 'do_not_delete'}
    image = _create(api, project, **legacy)
    assert {k: image[k] for k in legacy} == legacy
    bare = bare_api.get(f"/v2/images/{image['id']}", project=project).json()
    assert set(legacy).isdisjoint(bare)


@pytest.mark.parametrize('media_type', [PATCH, PATCH_V20])
def test_patch_while_queued_then_fixed_once_active(
        api: Api, bare_api: Api, media_type: str) -> None:
    project = _project()
    image = _create(api, project)
    image_id = image['id']
    values = encrypted()
    ops = [{'op': 'add', 'path': f'/{key}', 'value': value}
           for key, value in values.items()]
    patched = _patch(api, project, image_id, ops, media_type)
    assert patched.status_code == 200, patched.text
    assert {k: patched.json()[k] for k in KEYS} == values
    assert KEYS.isdisjoint(bare_api.get(f'/v2/images/{image_id}',
                                        project=project).json())
    _upload(api, project, image_id)
    for ops in (
            [{'op': 'replace', 'path': '/os_encrypt_key_id',
              'value': str(uuid.uuid4())}],
            [{'op': 'replace', 'path': '/os_encrypt_format',
              'value': 'LUKSv2'}],
    ):
        refused = _patch(api, project, image_id, ops, media_type)
        assert refused.status_code == 400, refused.text
        assert ops[0]['path'][1:] in refused.text
        assert 'has data' in refused.text
    # Other encryption properties may still change; the name too.
    allowed = _patch(api, project, image_id, [
        {'op': 'replace', 'path': '/os_decrypt_size', 'value': '42'},
        {'op': 'replace', 'path': '/name', 'value': 'renamed'}],
        media_type)
    assert allowed.status_code == 200, allowed.text
    document = allowed.json()
    assert (document['os_decrypt_size'], document['name'],
            document['os_encrypt_key_id']) == (
        '42', 'renamed', values['os_encrypt_key_id'])


def test_image_with_data_cannot_become_encrypted(api: Api) -> None:
    project = _project()
    image = _create(api, project)
    _upload(api, project, image['id'])
    ops = [{'op': 'add', 'path': f'/{key}', 'value': value}
           for key, value in encrypted().items()]
    refused = _patch(api, project, image['id'], ops)
    assert refused.status_code == 400, refused.text
    assert 'has data' in refused.text
    shown = api.get(f"/v2/images/{image['id']}", project=project).json()
    assert KEYS.isdisjoint(shown)
    assert shown['status'] == 'active'


def test_patch_of_foreign_image_is_answered_as_glance_does(
        api: Api) -> None:
    project, other = _project(), _project()
    image = _create(api, project)
    ops = [{'op': 'add', 'path': f'/{key}', 'value': value}
           for key, value in encrypted().items()]
    refused = _patch(api, other, image['id'], ops)
    assert refused.status_code == 404, refused.text
    assert 'os_encrypt' not in refused.text
    shown = api.get(f"/v2/images/{image['id']}", project=project).json()
    assert KEYS.isdisjoint(shown)


def test_reader_cannot_set_encryption_properties(api: Api) -> None:
    project = _project()
    image = _create(api, project, visibility='shared')
    ops = [{'op': 'add', 'path': f'/{key}', 'value': value}
           for key, value in encrypted().items()]
    refused = _patch(api, project, image['id'], ops, roles=['reader'])
    assert refused.status_code == 403, refused.text
    assert 'encryption properties' in refused.text
    shown = api.get(f"/v2/images/{image['id']}", project=project).json()
    assert KEYS.isdisjoint(shown)


def test_list_filters_on_encryption_keys_without_oracle(api: Api) -> None:
    project, other = _project(), _project()
    values = encrypted()
    image = _create(api, project, visibility='public', **values)
    _create(api, project, **encrypted())  # another key, not matched
    params = {'os_encrypt_key_id': values['os_encrypt_key_id']}
    mine = api.get('/v2/images', project=project, params=params).json()
    assert [i['id'] for i in mine['images']] == [image['id']]
    assert mine['images'][0]['os_encrypt_key_id'] == (
        values['os_encrypt_key_id'])
    theirs = api.get('/v2/images', project=other, params=params).json()
    assert theirs['images'] == []


# -- conversion refusal: a Glance told that its conversion plugin is on --


@pytest.fixture(scope='module')
def converting(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[GlanceServer]:
    state = tmp_path_factory.mktemp('converting')
    overrides = Path(state) / 'glance-api.conf.d'
    overrides.mkdir()
    (overrides / 'conversion.conf').write_text(
        '[instance_aware]\nimage_conversion_enabled = true\n',
        encoding='utf-8')
    with GlanceServer(state, max_lifetime=600) as server:
        yield server


def _stage(url: str, project: str, image_id: str) -> None:
    response = requests.put(
        f'{url}/v2/images/{image_id}/stage', data=b'x' * 64, timeout=30,
        headers={**headers(project),
                 'Content-Type': 'application/octet-stream'})
    assert response.status_code == 204, response.text


def test_import_of_encrypted_image_refused_when_conversion_is_on(
        converting: GlanceServer) -> None:
    project, other = _project(), _project()
    api = Api(converting.url)
    image = _create(api, project, **encrypted())
    _stage(converting.url, project, image['id'])
    body = {'method': {'name': 'glance-direct'}}
    refused = api.post(f"/v2/images/{image['id']}/import", project=project,
                       json=body)
    assert refused.status_code == 400, refused.text
    assert 'encrypted' in refused.text
    shown = api.get(f"/v2/images/{image['id']}", project=project).json()
    assert shown['status'] == 'uploading'  # staged, never imported
    # Another project learns nothing about the encryption: Glance answers.
    foreign = api.post(f"/v2/images/{image['id']}/import", project=other,
                       json=body)
    assert foreign.status_code == 404, foreign.text
    assert 'encrypted' not in foreign.text
    # A plain image imports as usual.
    plain = _create(api, project)
    _stage(converting.url, project, plain['id'])
    accepted = api.post(f"/v2/images/{plain['id']}/import", project=project,
                        json=body)
    assert accepted.status_code == 202, accepted.text
