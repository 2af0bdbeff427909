"""Issue 17, findings 4, 5 and 8, against a real Glance 33.

* Authorisation before validation: a caller who may not change an image
  gets one answer whatever the image's captured values, the answer bare
  Glance gives it.
* Service tokens: Nova's calls carry the user's token and Nova's service
  token (``X-Service-Roles: service``, as keystonemiddleware sets it); the
  user of another project learns none of the owner's instance keys or
  encryption properties that way, while Nova still sees locations, asserts
  trusted relations and lists the owner's backups for rotation.
* Trusted relations: an edit of any instance key without a service token
  clears ``trusted``.

The bare endpoint is the witness of what Glance holds and answers.  The
main cases run twice: through Glance's pipeline (``api``) and through the
standalone proxy in front of the bare Glance (``stack_api``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.functional.conftest import TIMEOUT, Api
from tests.local import identity
from tests.local.server import GlanceServer, StandaloneServer

pytestmark = pytest.mark.functional

PATCH = 'application/openstack-images-v2.1-json-patch'
ADMIN = identity.ADMIN_ROLES
MEMBER = identity.DEFAULT_ROLES
ENCRYPTION = {
    'os_encrypt_format': 'LUKSv1',
    'os_encrypt_cipher': 'aes-xts-plain64',
    'os_encrypt_key_deletion_policy': 'do_not_delete',
    'os_decrypt_container_format': 'bare',
    'os_decrypt_size': '1073741824',
}
INSTANCE_KEYS = ('instance_uuid', 'image_type', 'backup_type', 'user_id',
                 'base_image_ref', 'owner_project_name', 'owner_user_name',
                 'owner_id', 'boot_roles', 'image_location', 'image_state',
                 'nova_installation_uuid')
CAPTURED = frozenset(INSTANCE_KEYS) | set(ENCRYPTION) | {
    'os_encrypt_key_id', 'cinder_encryption_key_id',
    'cinder_encryption_key_deletion_policy'}


@pytest.fixture(scope='module')
def standalone(glance_server: GlanceServer,
               tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[StandaloneServer]:
    """The standalone stack in front of the bare Glance."""
    with StandaloneServer(tmp_path_factory.mktemp('trust-standalone'),
                          glance_server.bare_url,
                          max_lifetime=900) as server:
        yield server


@pytest.fixture(params=['pipeline', 'standalone'])
def through(request: pytest.FixtureRequest, api: Api) -> Iterator[Api]:
    """The stack in Glance's pipeline, then as the standalone proxy."""
    if request.param == 'pipeline':
        yield api
        return
    server = request.getfixturevalue('standalone')
    client = Api(server.url, timeout=TIMEOUT)
    yield client
    client.close()


def _project() -> str:
    return uuid.uuid4().hex


def _uuid() -> str:
    return str(uuid.uuid4())


def _nova_keys(project: str, instance: str, **extra: str) -> dict[str, str]:
    return {'instance_uuid': instance, 'image_type': 'backup',
            'backup_type': 'daily', 'user_id': f'{project}-user',
            'base_image_ref': _uuid(), 'owner_project_name': 'demo',
            'owner_user_name': 'alice', 'owner_id': project,
            'boot_roles': 'reader,member', **extra}


def _create(api: Api, project: str, roles: Any = MEMBER,
            service: bool = False, **body: Any) -> dict[str, Any]:
    body = {'name': 'img', 'disk_format': 'raw',
            'container_format': 'bare', **body}
    response = api.post('/v2/images', project=project, roles=roles,
                        service=service, json=body)
    assert response.status_code == 201, response.text
    image: dict[str, Any] = response.json()
    return image


def _patch(api: Api, image_id: str, ops: list[Any], project: str,
           roles: Any = MEMBER, service: bool = False) -> requests.Response:
    return api.patch(f'/v2/images/{image_id}', project=project,
                     roles=roles, service=service, data=json.dumps(ops),
                     headers={'Content-Type': PATCH,
                              'Accept': 'application/json'})


def _show(api: Api, image_id: str, project: str, roles: Any = MEMBER,
          service: bool = False) -> dict[str, Any]:
    response = api.get(f'/v2/images/{image_id}', project=project,
                       roles=roles, service=service)
    assert response.status_code == 200, response.text
    image: dict[str, Any] = response.json()
    return image


def _answer(response: requests.Response) -> tuple[int, str]:
    """Status and message, in whichever error style the body has."""
    try:
        document = response.json()
    except ValueError:
        return response.status_code, response.text
    if isinstance(document, dict) and 'message' in document:
        return response.status_code, str(document['message'])
    return response.status_code, json.dumps(document, sort_keys=True)


def _relation(api: Api, image_id: str, project: str) -> dict[str, Any]:
    response = api.get(f'/v2/images/{image_id}/instance', project=project,
                       headers={'Accept': 'application/json'})
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


# -- finding 4: authorisation before validation ------------------------


def _oracle_attempts(key_id: str) -> list[list[dict[str, Any]]]:
    """Patches whose validation depends on the stored values."""
    return [
        [{'op': 'add', 'path': '/os_encrypt_cipher', 'value': 'aes'}],
        [{'op': 'replace', 'path': '/os_encrypt_key_deletion_policy',
          'value': 'do_not_delete'}],
        [{'op': 'replace', 'path': '/os_encrypt_key_deletion_policy',
          'value': 'on_image_deletion'}],
        [{'op': 'replace', 'path': '/os_encrypt_key_id', 'value': key_id}],
        [{'op': 'replace', 'path': '/os_encrypt_key_id',
          'value': _uuid()}],
        [{'op': 'replace', 'path': '/os_decrypt_size',
          'value': '1073741824'}],
        [{'op': 'replace', 'path': '/os_decrypt_size', 'value': '12'}],
        [{'op': 'remove', 'path': '/os_encrypt_cipher'}],
        [{'op': 'remove', 'path': '/instance_uuid'}],
        [{'op': 'add', 'path': '/instance_uuid', 'value': 'not-a-uuid'}],
        [{'op': 'replace', 'path': '/image_type', 'value': 'snapshot'}],
    ]


@pytest.mark.parametrize('visibility', ['public', 'private'])
def test_no_answer_depends_on_stored_values(through: Api, bare_api: Api,
                                            visibility: str) -> None:
    """Project B's every patch of A's images gets bare Glance's answer:
    403 on a public image, 404 on a private one, encrypted or not."""
    api = through
    owner, other, key_id = _project(), _project(), _uuid()
    encrypted = _create(api, owner, roles=ADMIN, visibility=visibility,
                        os_encrypt_key_id=key_id,
                        **_nova_keys(owner, _uuid()), **ENCRYPTION)
    plain = _create(api, owner, roles=ADMIN, visibility=visibility)
    witness = _create(bare_api, owner, roles=ADMIN, visibility=visibility)
    expected = {'public': 403, 'private': 404}[visibility]

    for ops in _oracle_attempts(key_id):
        bare = _answer(_patch(bare_api, witness['id'], ops, other))
        assert bare[0] == expected, bare
        for service in (False, True):  # B alone, and B through Nova
            answers = {
                _answer(_patch(api, image['id'], ops, other,
                               service=service))
                for image in (encrypted, plain)}
            answers = {(status, message.replace(encrypted['id'], 'ID')
                        .replace(plain['id'], 'ID'))
                       for status, message in answers}
            # One answer, encrypted or not, with Glance's status.
            assert len(answers) == 1, (ops, answers)
            assert next(iter(answers))[0] == expected, (ops, answers)

    # Nothing changed: the owner still reads its values.
    shown = _show(api, encrypted['id'], owner)
    assert {k: shown[k] for k in ENCRYPTION} == ENCRYPTION
    assert shown['os_encrypt_key_id'] == key_id
    assert CAPTURED.isdisjoint(_show(api, plain['id'], owner))
    # And Glance holds none of them.
    assert CAPTURED.isdisjoint(_show(bare_api, encrypted['id'], owner,
                                     roles=ADMIN))


def test_owner_without_write_right_gets_one_answer(api: Api) -> None:
    """A reader of the owner project (no ``modify_image``) gets Glance's
    403, never a validation error about the stored values."""
    owner = _project()
    image = _create(api, owner, os_encrypt_key_id=_uuid(), **ENCRYPTION)
    plain = _create(api, owner)
    for ops in _oracle_attempts(_uuid()):
        answers = set()
        for target in (image, plain):
            response = _patch(api, target['id'], ops, owner,
                              roles=('reader',))
            status, message = _answer(response)
            answers.add((status, message.replace(target['id'], 'ID')))
        assert len(answers) == 1, (ops, answers)
        assert next(iter(answers))[0] == 403, (ops, answers)
    assert CAPTURED.isdisjoint(_show(api, plain['id'], owner))


def test_the_owner_still_gets_validation_errors(api: Api) -> None:
    owner = _project()
    plain = _create(api, owner)
    response = _patch(api, plain['id'], [
        {'op': 'add', 'path': '/os_encrypt_cipher', 'value': 'aes'}], owner)
    assert response.status_code == 400, response.text
    assert "Property 'os_encrypt_key_id' is required with " \
        "'os_encrypt_cipher'" in response.json()['message']
    response = _patch(api, plain['id'], [
        {'op': 'remove', 'path': '/os_encrypt_cipher'}], owner)
    assert response.status_code == 409, response.text
    assert 'os_encrypt_cipher' in response.text


# -- finding 5: service tokens -------------------------------------------


def test_nova_shows_another_projects_image_without_its_keys(
        through: Api, bare_api: Api) -> None:
    api = through
    owner, other, instance = _project(), _project(), _uuid()
    keys = _nova_keys(owner, instance)
    image = _create(api, owner, service=True, visibility='community',
                    os_encrypt_key_id=_uuid(), **keys, **ENCRYPTION)

    # The owner through Nova gets its keys back.
    own = _show(api, image['id'], owner, service=True)
    assert {k: own[k] for k in keys} == keys
    assert {k: own[k] for k in ENCRYPTION} == ENCRYPTION

    # Another project's user through Nova gets the image as Glance
    # stores it, without A's instance keys or encryption properties.
    seen = _show(api, image['id'], other, service=True)
    assert CAPTURED.isdisjoint(seen), sorted(CAPTURED & set(seen))
    assert 'locations' in seen, 'Nova sees locations where policy says'
    bare = _show(bare_api, image['id'], other, service=True)
    assert {k: v for k, v in seen.items()
            if k not in ('locations', 'direct_url')} == {
        k: v for k, v in bare.items()
        if k not in ('locations', 'direct_url')}

    # Lists and list filters through Nova are no oracle either.
    listed = api.get('/v2/images', project=other, service=True,
                     params={'id': f"in:{image['id']}",
                             'visibility': 'community'})
    assert listed.status_code == 200, listed.text
    items = listed.json()['images']
    assert [i['id'] for i in items] == [image['id']]
    assert CAPTURED.isdisjoint(items[0])
    for name, value in (('instance_uuid', instance),
                        ('user_id', keys['user_id'])):
        found = api.get('/v2/images', project=other, service=True,
                        params={name: value, 'visibility': 'community'})
        assert found.status_code == 200, found.text
        assert found.json()['images'] == []
    # The query API answers for the caller's own project only.
    related = api.get(f'/v2/instances/{instance}/images', project=other,
                      service=True)
    assert related.status_code == 200, related.text
    assert related.json()['images'] == []
    single = api.get(f"/v2/images/{image['id']}/instance", project=other,
                     service=True, headers={'Accept': 'application/json'})
    assert single.status_code == 404, single.text
    assert 'No instance relation found' in single.json()['message']


def test_nova_keeps_what_it_needs(through: Api) -> None:
    """Locations, trusted assertions and the owner's backup rotation."""
    api = through
    owner, other, instance = _project(), _project(), _uuid()
    backups = []
    for _ in range(2):
        image = _create(api, owner, service=True,
                        **_nova_keys(owner, instance))
        response = api.put(f"/v2/images/{image['id']}/file", project=owner,
                           service=True, data=b'backup' * 100,
                           headers={'Content-Type':
                                    'application/octet-stream'})
        assert response.status_code == 204, response.text
        backups.append(image['id'])

    # Nova sees locations; the user alone does not.
    shown = _show(api, backups[0], owner, service=True)
    assert shown['locations'] and shown['direct_url'].startswith(
        'file://'), shown
    alone = _show(api, backups[0], owner)
    assert 'locations' not in alone and 'direct_url' not in alone

    # The relation is trusted and names its asserter.
    relation = _relation(api, backups[0], owner)
    assert relation['trusted'] is True
    assert relation['properties']['instance_uuid'] == instance

    # _rotate_backups: the owner's daily backups of the instance, newest
    # first, through Nova.
    response = api.get('/v2/images', project=owner, service=True, params={
        'instance_uuid': instance, 'image_type': 'backup',
        'backup_type': 'daily', 'sort_key': 'created_at',
        'sort_dir': 'desc'})
    assert response.status_code == 200, response.text
    images = response.json()['images']
    assert [i['id'] for i in images] == backups[::-1]
    assert all(i['instance_uuid'] == instance for i in images)
    # The same rotation query for another project's user finds nothing.
    response = api.get('/v2/images', project=other, service=True, params={
        'instance_uuid': instance, 'image_type': 'backup',
        'backup_type': 'daily'})
    assert response.status_code == 200, response.text
    assert response.json()['images'] == []


# -- finding 8: trusted relations ------------------------------------------


@pytest.mark.parametrize('key,value', [
    ('user_id', 'mallory'),
    ('base_image_ref', '11111111-2222-3333-4444-555555555555'),
    ('owner_user_name', 'mallory'),
    ('boot_roles', 'admin'),
    ('image_type', 'snapshot'),
    ('instance_uuid', '66666666-7777-8888-9999-000000000000'),
])
def test_editing_an_asserted_key_clears_trusted(through: Api, key: str,
                                                value: str) -> None:
    api = through
    owner, instance = _project(), _uuid()
    keys = _nova_keys(owner, instance)
    image = _create(api, owner, service=True, **keys)
    assert _relation(api, image['id'], owner)['trusted'] is True

    response = _patch(api, image['id'], [
        {'op': 'replace', 'path': f'/{key}', 'value': value}], owner)
    assert response.status_code == 200, response.text
    assert response.json()[key] == value
    relation = _relation(api, image['id'], owner)
    assert relation['trusted'] is False
    assert relation['properties'][key] == value

    # The query API no longer vouches for the edited values.
    related = api.get(f"/v2/instances/{relation['instance_uuid']}/images",
                      project=owner)
    assert related.status_code == 200, related.text
    entries = {e['image_id']: e for e in related.json()['images']}
    assert entries[image['id']]['trusted'] is False
    assert entries[image['id']]['properties'][key] == value

    # Nova asserting the relation again makes it trusted.
    response = _patch(api, image['id'], [
        {'op': 'replace', 'path': '/backup_type', 'value': 'weekly'},
        {'op': 'replace', 'path': f'/{key}', 'value': keys[key]}], owner,
        service=True)
    assert response.status_code == 200, response.text
    relation = _relation(api, image['id'], owner)
    assert relation['trusted'] is True
    assert relation['properties'][key] == keys[key]


def test_unchanged_values_keep_trusted(through: Api) -> None:
    api = through
    owner, instance = _project(), _uuid()
    keys = _nova_keys(owner, instance)
    image = _create(api, owner, service=True, **keys)
    response = _patch(api, image['id'], [
        {'op': 'replace', 'path': '/user_id', 'value': keys['user_id']},
        {'op': 'replace', 'path': '/name', 'value': 'renamed'}], owner)
    assert response.status_code == 200, response.text
    assert response.json()['name'] == 'renamed'
    assert _relation(api, image['id'], owner)['trusted'] is True
