"""Instance relations (issue #3) against a real Glance 33.

Each test acts in projects of its own (``uuid4().hex``), so tests never see
each other's images in the session Glance.  The bare endpoint is the
witness: what Glance itself stored, and (for list filters and patch
semantics) what Glance answers when it stores the instance keys as plain
properties, in another project.

Two tests put an in-process ``instance_metadata`` filter in front of the
bare endpoint (:class:`LocalStack`): one with an unreachable mapping
database (503, Glance never called), one counting the registry calls of
the list fast path.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import webob
from oslo_config import cfg

from instance_aware.filters.instance_metadata import InstanceMetadataFilter
from instance_aware.store import engine as store_engine
from tests.dbbackends import migrated_sqlite
from tests.functional.conftest import TIMEOUT, Api, headers
from tests.local import identity
from tests.local.server import GlanceServer

pytestmark = pytest.mark.functional

PATCH21 = 'application/openstack-images-v2.1-json-patch'
PATCH20 = 'application/openstack-images-v2.0-json-patch'
JSON = {'Accept': 'application/json'}
INSTANCE_KEYS = ('instance_uuid', 'image_type', 'backup_type', 'user_id',
                 'base_image_ref', 'owner_project_name', 'owner_user_name',
                 'owner_id', 'boot_roles', 'image_location', 'image_state',
                 'nova_installation_uuid')
ADMIN = identity.ADMIN_ROLES
#: Image fields that differ between two otherwise identical images.
VOLATILE = ('id', 'owner', 'created_at', 'updated_at', 'self', 'file',
            'locations', 'direct_url')


def _project() -> str:
    return uuid.uuid4().hex


def _uuid() -> str:
    return str(uuid.uuid4())


def _nova_keys(project: str, instance: str, **extra: str) -> dict[str, str]:
    """Every instance key, with the values Nova would set."""
    return {
        'instance_uuid': instance,
        'image_type': 'snapshot',
        'user_id': f'{project}-user',
        'base_image_ref': _uuid(),
        'owner_project_name': 'demo',
        'owner_user_name': 'alice',
        'owner_id': project,
        'boot_roles': 'reader,member',
        'image_location': 'snapshot',
        'image_state': 'available',
        'nova_installation_uuid': _uuid(),
        **extra,
    }


def _create(api: Api, project: str, roles: Any = identity.DEFAULT_ROLES,
            service: bool = False, **body: Any) -> dict[str, Any]:
    body.setdefault('name', f'img-{uuid.uuid4().hex[:6]}')
    response = api.post('/v2/images', project=project, roles=roles,
                        service=service, json=body)
    assert response.status_code == 201, response.text
    image: dict[str, Any] = response.json()
    return image


def _patch(api: Api, image_id: str, ops: list[Any], project: str,
           media: str = PATCH21, roles: Any = identity.DEFAULT_ROLES,
           service: bool = False,
           hdrs: dict[str, str] | None = None) -> requests.Response:
    return api.patch(f'/v2/images/{image_id}', project=project, roles=roles,
                     service=service, data=json.dumps(ops),
                     headers={'Content-Type': media, **JSON,
                              **(hdrs or {})})


def _show(api: Api, image_id: str, project: str,
          **kwargs: Any) -> dict[str, Any]:
    response = api.get(f'/v2/images/{image_id}', project=project, **kwargs)
    assert response.status_code == 200, response.text
    image: dict[str, Any] = response.json()
    return image


def _keys_of(image: dict[str, Any]) -> dict[str, Any]:
    return {k: image[k] for k in INSTANCE_KEYS if k in image}


def _relation(api: Api, image_id: str, project: str,
              **kwargs: Any) -> dict[str, Any] | None:
    response = api.get(f'/v2/images/{image_id}/instance', project=project,
                       headers=JSON, **kwargs)
    if response.status_code == 404:
        assert f'No instance relation found for image {image_id}' in (
            response.json()['message'])
        return None
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()
    return entry


def _related(api: Api, instance: str, project: str,
             roles: Any = identity.DEFAULT_ROLES,
             **params: str) -> list[dict[str, Any]]:
    response = api.get(f'/v2/instances/{instance}/images', project=project,
                       roles=roles, params=params, headers=JSON)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()['images']
    return entries


def _ids(entries: list[dict[str, Any]], key: str = 'id') -> list[str]:
    return [e[key] for e in entries]


def _message(response: requests.Response) -> str:
    """The explanation of an error answered as JSON, Glance's way."""
    document = response.json()
    assert set(document) == {'message', 'code', 'title'}, document
    assert document['code'].startswith(str(response.status_code))
    message: str = document['message']
    return message


def _ever_stored(server: GlanceServer, image_id: str) -> set[str]:
    """Every property name Glance's database holds for the image, rows it
    marked deleted included: what ever reached Glance."""
    connection = sqlite3.connect(server.state.glance_db, timeout=TIMEOUT)
    try:
        rows = connection.execute(
            'SELECT name FROM image_properties WHERE image_id = ?',
            (image_id,)).fetchall()
    finally:
        connection.close()
    return {row[0] for row in rows}


def _listed(api: Api, project: str, roles: Any = identity.DEFAULT_ROLES,
            service: bool = False, **params: str) -> list[str]:
    response = api.get('/v2/images', project=project, roles=roles,
                       service=service, params=params)
    assert response.status_code == 200, response.text
    return _ids(response.json()['images'])


# -- capture and strip -----------------------------------------------------


@pytest.mark.parametrize('client_id', [True, False],
                         ids=['client-id', 'assigned-id'])
def test_create_captures_every_instance_key_and_glance_never_sees_one(
        glance_server: GlanceServer, api: Api, bare_api: Api,
        client_id: bool) -> None:
    project, instance = _project(), _uuid()
    keys = _nova_keys(project, instance, image_type='backup',
                      backup_type='daily')
    body: dict[str, Any] = {'name': 'nova-backup', 'hw_disk_bus': 'scsi',
                            'disk_format': 'qcow2',
                            'container_format': 'bare', **keys}
    if client_id:
        body['id'] = _uuid()
    created = _create(api, project, **body)

    if client_id:
        assert created['id'] == body['id']
    assert _keys_of(created) == keys
    assert (created['name'], created['hw_disk_bus'], created['owner']) == (
        'nova-backup', 'scsi', project)
    stored = _show(bare_api, created['id'], project)
    assert _keys_of(stored) == {}
    assert stored['hw_disk_bus'] == 'scsi'
    assert _ever_stored(glance_server, created['id']) == {'hw_disk_bus'}
    assert _show(api, created['id'], project) == {
        **{k: v for k, v in stored.items()
           if k not in ('locations', 'direct_url')}, **keys}

    relation = _relation(api, created['id'], project)
    assert relation == {
        'image_id': created['id'],
        'instance_uuid': instance,
        'installation_uuid': keys['nova_installation_uuid'],
        'image_type': 'backup',
        'backup_type': 'daily',
        'properties': keys,
        'trusted': False,
        'owner': project,
        'status': 'active',
        'created_at': created['created_at'],
        'deleted_at': None,
        'registry_id': 'default',
    }


def test_headers_assert_instance_and_installation(
        glance_server: GlanceServer, api: Api, bare_api: Api) -> None:
    project, instance, installation = _project(), _uuid(), _uuid()
    asserted = {'X-Instance-UUID': instance,
                'X-Nova-Installation-UUID': installation}
    # A create without any body at all.
    response = api.post('/v2/images', project=project, service=True,
                        headers=asserted)
    assert response.status_code == 201, response.text
    image = response.json()
    assert _keys_of(image) == {'instance_uuid': instance,
                               'nova_installation_uuid': installation}
    assert _keys_of(_show(bare_api, image['id'], project)) == {}
    relation = _relation(api, image['id'], project)
    assert relation is not None
    assert (relation['instance_uuid'], relation['installation_uuid'],
            relation['trusted']) == (instance, installation, True)

    # On an update, next to an operation Glance applies.
    other = _uuid()
    response = _patch(api, image['id'],
                      [{'op': 'add', 'path': '/name', 'value': 'renamed'}],
                      project, hdrs={'X-Instance-UUID': other})
    assert response.status_code == 200, response.text
    assert response.json()['name'] == 'renamed'
    assert response.json()['instance_uuid'] == other
    assert response.json()['nova_installation_uuid'] == installation
    stored = _show(bare_api, image['id'], project)
    assert stored['name'] == 'renamed'
    assert _keys_of(stored) == {}
    assert _ids(_related(api, other, project), 'image_id') == [image['id']]
    assert _related(api, instance, project) == []
    assert _ever_stored(glance_server, image['id']) == set()


@pytest.mark.parametrize('media', [PATCH21, PATCH20])
def test_patch_captures_keys_with_both_media_types(
        glance_server: GlanceServer, api: Api, bare_api: Api,
        media: str) -> None:
    project, instance = _project(), _uuid()
    image = _create(api, project, name='plain')

    def op(kind: str, key: str, value: str | None = None) -> dict[str, Any]:
        change: dict[str, Any] = (
            {'op': kind, 'path': f'/{key}'} if media == PATCH21
            else {kind: f'/{key}'})
        if value is not None:
            change['value'] = value
        return change

    response = _patch(api, image['id'], [
        op('add', 'instance_uuid', instance),
        op('add', 'image_type', 'backup'),
        op('add', 'backup_type', 'daily'),
        op('replace', 'name', 'nova-backup'),
        op('add', 'hw_qemu_guest_agent', 'yes'),
    ], project, media=media)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert _keys_of(updated) == {'instance_uuid': instance,
                                 'image_type': 'backup',
                                 'backup_type': 'daily'}
    assert (updated['name'], updated['hw_qemu_guest_agent']) == (
        'nova-backup', 'yes')
    stored = _show(bare_api, image['id'], project)
    assert (stored['name'], stored['hw_qemu_guest_agent']) == (
        'nova-backup', 'yes')
    assert _keys_of(stored) == {}

    response = _patch(api, image['id'], [
        op('replace', 'backup_type', 'weekly'),
        op('remove', 'instance_uuid'),
    ], project, media=media)
    assert response.status_code == 200, response.text
    assert _keys_of(response.json()) == {'image_type': 'backup',
                                         'backup_type': 'weekly'}
    assert _keys_of(_show(api, image['id'], project)) == {
        'image_type': 'backup', 'backup_type': 'weekly'}
    assert _keys_of(_show(bare_api, image['id'], project)) == {}
    relation = _relation(api, image['id'], project)
    assert relation is not None
    assert (relation['instance_uuid'], relation['backup_type']) == (
        None, 'weekly')
    assert _related(api, instance, project) == []
    assert _ever_stored(glance_server, image['id']) == {
        'hw_qemu_guest_agent'}


@pytest.mark.parametrize('pointer', ['/ image_type', '/image_type ',
                                     '/  image_type'])
def test_pointer_spellings_glance_decodes_are_captured(
        api: Api, bare_api: Api, pointer: str) -> None:
    """Glance strips white space around pointer tokens: so do we."""
    project = _project()
    image = _create(api, project)
    response = _patch(api, image['id'], [
        {'op': 'add', 'path': pointer, 'value': 'snapshot'}], project)
    assert response.status_code == 200, response.text
    assert response.json()['image_type'] == 'snapshot'
    assert _keys_of(_show(bare_api, image['id'], project)) == {}


def test_route_spellings_are_captured_too(api: Api, bare_api: Api) -> None:
    """``/v2.x/`` and doubled slashes reach Glance's routes: they are
    captured like ``/v2/``; a spelling Glance does not route is its 404."""
    owner, stranger, instance = _project(), _project(), _uuid()
    for path in ('/v2.1/images', '//v2//images'):
        response = api.post(path, project=owner, json={
            'name': 'spelled', 'visibility': 'community',
            'instance_uuid': instance})
        assert response.status_code == 201, (path, response.text)
        image_id = response.json()['id']
        assert response.json()['instance_uuid'] == instance
        assert _keys_of(_show(bare_api, image_id, owner)) == {}
        shown = api.get(f'/v2.9/images/{image_id}', project=stranger)
        assert shown.status_code == 200, shown.text
        assert _keys_of(shown.json()) == {}
        response = api.patch(
            f'/v2.3/images/{image_id}', project=owner,
            data=json.dumps([{'op': 'add', 'path': '/image_type',
                              'value': 'backup'}]),
            headers={'Content-Type': PATCH21})
        assert response.status_code == 200, response.text
        assert response.json()['image_type'] == 'backup'
        assert _keys_of(_show(bare_api, image_id, owner)) == {}

    ops = [{'op': 'add', 'path': '/backup_type', 'value': 'daily'}]
    ours = _patch(api, f'{image_id}/', ops, owner)
    glance = _patch(bare_api, f'{image_id}/', ops, owner)
    assert (ours.status_code, glance.status_code) == (404, 404)
    assert 'backup_type' not in _show(api, image_id, owner)


CREATE_ERRORS = [
    pytest.param({'instance_uuid': 'not-a-uuid'}, {},
                 "Invalid value for property 'instance_uuid': 'not-a-uuid' "
                 'is not a UUID.', id='instance-uuid'),
    pytest.param({'nova_installation_uuid': '1234'}, {},
                 "Invalid value for property 'nova_installation_uuid': "
                 "'1234' is not a UUID.", id='installation-uuid'),
    pytest.param({}, {'X-Instance-UUID': 'nope'},
                 "Invalid value for property 'instance_uuid': 'nope' is not "
                 'a UUID.', id='instance-header'),
    pytest.param({}, {'X-Nova-Installation-UUID': 'nope'},
                 "Invalid value for property 'nova_installation_uuid': "
                 "'nope' is not a UUID.", id='installation-header'),
    pytest.param({'image_type': 7},
                 {}, "Invalid value for property 'image_type': expected a "
                 'string, got int.', id='int'),
    pytest.param({'backup_type': None}, {},
                 "Invalid value for property 'backup_type': expected a "
                 'string, got NoneType.', id='null'),
    pytest.param({'boot_roles': ['reader']}, {},
                 "Invalid value for property 'boot_roles': expected a "
                 'string, got list.', id='list'),
    pytest.param({'image_type': 'x' * 256}, {},
                 "Invalid value for property 'image_type': longer than 255 "
                 'characters.', id='too-long'),
]


@pytest.mark.parametrize('body,hdrs,message', CREATE_ERRORS)
def test_invalid_create_is_a_clear_400_and_nothing_is_written(
        api: Api, bare_api: Api, body: dict[str, Any],
        hdrs: dict[str, str], message: str) -> None:
    project, instance, image_id = _project(), _uuid(), _uuid()
    name = f'refused-{uuid.uuid4().hex[:6]}'
    response = api.post('/v2/images', project=project, json={
        'id': image_id, 'name': name, 'instance_uuid': instance, **body},
        headers={**JSON, **hdrs})
    assert response.status_code == 400, response.text
    assert _message(response).startswith(message)
    # The same error as HTML without an Accept header, as Glance does.
    html = api.post('/v2/images', project=project, json={
        'id': image_id, 'name': name, 'instance_uuid': instance, **body},
        headers=hdrs)
    assert html.status_code == 400
    assert html.headers['Content-Type'].startswith('text/html')
    assert '<title>400 Bad Request</title>' in html.text

    assert _listed(bare_api, project, name=name) == []
    assert _relation(api, image_id, project) is None
    assert _related(api, instance, project) == []


PATCH_ERRORS = [
    pytest.param(PATCH21, [{'op': 'add', 'path': '/instance_uuid',
                            'value': 'zzz'}], {},
                 "Invalid value for property 'instance_uuid': 'zzz' is not "
                 'a UUID.', id='uuid'),
    pytest.param(PATCH21, [{'op': 'add', 'path': '/image_type',
                            'value': {'a': 1}}], {},
                 "Invalid value for property 'image_type': expected a "
                 'string, got dict.', id='dict'),
    pytest.param(PATCH20, [{'add': '/backup_type', 'value': 5}], {},
                 "Invalid value for property 'backup_type': expected a "
                 'string, got int.', id='v2.0-int'),
    pytest.param(PATCH21, [{'op': 'replace', 'path': '/boot_roles',
                            'value': 'r' * 256}], {},
                 "Invalid value for property 'boot_roles': longer than 255 "
                 'characters.', id='too-long'),
    pytest.param(PATCH21, [{'op': 'add', 'path': '/image_type/deeper',
                            'value': 'x'}], {},
                 "Invalid JSON pointer for this resource: "
                 "'/image_type/deeper'", id='deep-pointer'),
    pytest.param(PATCH21, [{'op': 'add', 'path': '/image_type'}], {},
                 'Operation "add" requires a member named "value".',
                 id='no-value'),
    pytest.param(PATCH21, [], {'X-Nova-Installation-UUID': 'nope'},
                 "Invalid value for property 'nova_installation_uuid': "
                 "'nope' is not a UUID.", id='header'),
]


@pytest.mark.parametrize('media,ops,hdrs,message', PATCH_ERRORS)
def test_invalid_patch_is_a_clear_400_and_nothing_is_changed(
        api: Api, bare_api: Api, media: str, ops: list[Any],
        hdrs: dict[str, str], message: str) -> None:
    project, instance = _project(), _uuid()
    image = _create(api, project, name='before', instance_uuid=instance,
                    boot_roles='reader')
    rename = ({'op': 'replace', 'path': '/name', 'value': 'after'}
              if media == PATCH21 else {'replace': '/name', 'value': 'after'})
    response = _patch(api, image['id'], [rename, *ops], project, media,
                      hdrs=hdrs)
    assert response.status_code == 400, response.text
    assert _message(response).startswith(message)
    assert _show(bare_api, image['id'], project)['name'] == 'before'
    relation = _relation(api, image['id'], project)
    assert relation is not None
    assert relation['properties'] == {'instance_uuid': instance,
                                      'boot_roles': 'reader'}


# -- trust -----------------------------------------------------------------


def test_relation_is_scoped_to_the_owner_project(
        api: Api, bare_api: Api) -> None:
    """A user relating their image to someone else's instance changes only
    their own project's answers, even for a service caller elsewhere."""
    attacker, victim, instance = _project(), _project(), _uuid()
    spoof = _create(api, attacker, visibility='community',
                    instance_uuid=instance, image_type='backup',
                    backup_type='daily')
    own = _create(api, victim, service=True, visibility='community',
                  instance_uuid=instance, image_type='backup',
                  backup_type='daily')

    assert _ids(_related(api, instance, victim), 'image_id') == [own['id']]
    assert _ids(_related(api, instance, attacker), 'image_id') == [
        spoof['id']]
    rotation = {'instance_uuid': instance, 'image_type': 'backup',
                'backup_type': 'daily', 'visibility': 'community'}
    for service in (False, True):
        response = api.get('/v2/images', project=victim, service=service,
                           params=rotation)
        assert response.status_code == 200, response.text
        assert _ids(response.json()['images']) == [own['id']]
    assert _listed(api, attacker, **rotation) == [spoof['id']]

    # The victim sees the attacker's community image as Glance stores it.
    seen = _show(api, spoof['id'], victim)
    assert seen == {k: v for k, v in _show(bare_api, spoof['id'], victim)
                    .items() if k not in ('locations', 'direct_url')}
    assert _keys_of(seen) == {}
    assert _relation(api, spoof['id'], victim) is None

    # An administrator sees both, and which one a service asserted.
    response = api.get(f'/v2/instances/{instance}/images', project=_project(),
                       roles=ADMIN, params={'all_projects': 'true'})
    assert response.status_code == 200, response.text
    trusted = {e['image_id']: (e['owner'], e['trusted'])
               for e in response.json()['images']}
    assert trusted == {spoof['id']: (attacker, False),
                       own['id']: (victim, True)}
    response = api.get(f'/v2/instances/{instance}/images', project=victim,
                       params={'all_projects': 'true'}, headers=JSON)
    assert response.status_code == 403
    assert _message(response).startswith(
        'Only administrators may use all_projects.')


def test_trust_changes_only_with_the_relation(api: Api) -> None:
    project, instance = _project(), _uuid()
    image = _create(api, project, service=True, instance_uuid=instance,
                    image_type='snapshot')

    def trusted() -> bool:
        relation = _relation(api, image['id'], project)
        assert relation is not None
        return bool(relation['trusted'])

    assert trusted()
    # A service editing a key outside the relation keeps it trusted...
    response = _patch(api, image['id'], [
        {'op': 'add', 'path': '/boot_roles', 'value': 'member'}], project,
        service=True)
    assert response.status_code == 200, response.text
    assert trusted()
    # ...a user editing any instance key makes it the user's assertion
    # (issue 17, finding 8: trust covers every asserted key)...
    response = _patch(api, image['id'], [
        {'op': 'add', 'path': '/boot_roles', 'value': 'reader'}], project)
    assert response.status_code == 200, response.text
    assert not trusted()
    response = _patch(api, image['id'], [
        {'op': 'replace', 'path': '/image_type', 'value': 'backup'}],
        project)
    assert response.status_code == 200, response.text
    assert not trusted()
    # ...until a service asserts it again.
    response = _patch(api, image['id'], [
        {'op': 'add', 'path': '/backup_type', 'value': 'daily'}], project,
        service=True)
    assert response.status_code == 200, response.text
    assert trusted()


def test_the_relation_follows_the_image_owner(api: Api) -> None:
    """An administrator may create an image for, or give it to, another
    project: the relation is that project's from then on."""
    admin, first, second, instance = (_project(), _project(), _project(),
                                      _uuid())
    image = _create(api, admin, roles=ADMIN, owner=first,
                    instance_uuid=instance, image_type='backup',
                    backup_type='daily')
    assert image['owner'] == first
    filters = {'instance_uuid': instance, 'image_type': 'backup'}
    assert _ids(_related(api, instance, first), 'image_id') == [image['id']]
    assert _listed(api, first, **filters) == [image['id']]
    assert _related(api, instance, admin) == []

    response = api.patch(
        f'/v2/images/{image["id"]}', project=admin, roles=ADMIN,
        data=json.dumps([{'op': 'replace', 'path': '/owner',
                          'value': second}]),
        headers={'Content-Type': PATCH21})
    assert response.status_code == 200, response.text
    assert (response.json()['owner'], response.json()['instance_uuid']) == (
        second, instance)
    assert _ids(_related(api, instance, second), 'image_id') == [image['id']]
    assert _listed(api, second, **filters) == [image['id']]
    assert _keys_of(_show(api, image['id'], second))['instance_uuid'] == (
        instance)
    # The former owner no longer learns anything about it.
    assert _related(api, instance, first) == []
    assert _listed(api, first, **filters) == []
    assert _relation(api, image['id'], first) is None


# -- nothing lost ----------------------------------------------------------


def test_duplicate_id_is_refused_and_the_first_relation_stays(
        api: Api, bare_api: Api) -> None:
    project, first, second = _project(), _uuid(), _uuid()
    image = _create(api, project, instance_uuid=first, image_type='backup')
    response = api.post('/v2/images', project=project, headers=JSON, json={
        'id': image['id'], 'name': 'dup', 'instance_uuid': second,
        'image_type': 'snapshot'})
    assert response.status_code == 409
    bare = bare_api.post('/v2/images', project=project, headers=JSON,
                         json={'id': image['id'], 'name': 'dup'})
    assert bare.status_code == 409
    assert _message(response) == _message(bare)
    relation = _relation(api, image['id'], project)
    assert relation is not None
    assert relation['properties'] == {'instance_uuid': first,
                                      'image_type': 'backup'}
    assert _related(api, second, project) == []

    # An id Glance has but the store does not: Glance refuses.
    plain = _create(bare_api, project)
    response = api.post('/v2/images', project=project, headers=JSON, json={
        'id': plain['id'], 'name': 'dup', 'instance_uuid': second})
    assert response.status_code == 409
    assert _message(response).startswith(
        f'Image ID {plain["id"]} already exists!')
    assert _relation(api, plain['id'], project) is None
    assert _related(api, second, project) == []


@pytest.mark.parametrize('body,status,message', [
    pytest.param({'min_ram': 'lots'}, 400,
                 "Provided object does not match schema 'image'",
                 id='bad-core'),
    pytest.param({'hw_disk_bus': 5}, 400,
                 "Provided object does not match schema 'image'",
                 id='non-string-property'),
    pytest.param({'k' * 256: 'v'}, 400,
                 'Custom property should not be greater than 255 '
                 'characters.', id='key-length'),
    pytest.param({'os_glance_thing': 'x'}, 403,
                 'Access was denied to this resource.', id='reserved'),
    pytest.param({'owner': 'somebody-else'}, 403,
                 'Access was denied to this resource.', id='owner'),
    pytest.param({'visibility': 'public'}, 403,
                 'You are not authorized to complete publicize_image',
                 id='publicize'),
])
def test_glance_refusal_leaves_the_store_unchanged(
        api: Api, bare_api: Api, body: dict[str, Any], status: int,
        message: str) -> None:
    project, instance, image_id = _project(), _uuid(), _uuid()
    request = {'id': image_id, 'name': 'refused', 'instance_uuid': instance,
               'image_type': 'backup', **body}
    response = api.post('/v2/images', project=project, headers=JSON,
                        json=request)
    assert response.status_code == status, response.text
    assert _message(response).startswith(message)
    # Glance said the same to the request without our keys.
    bare = bare_api.post('/v2/images', project=project, headers=JSON,
                         json={k: v for k, v in request.items()
                               if k not in INSTANCE_KEYS})
    assert (bare.status_code, _message(bare)) == (
        response.status_code, _message(response))
    assert _relation(api, image_id, project) is None
    assert _related(api, instance, project) == []
    # The id is still free: a corrected create succeeds.
    retried = _create(api, project, id=image_id, instance_uuid=instance)
    assert retried['instance_uuid'] == instance


# Steps of one patch sequence: (media type, ops).  Run on a stack image
# (keys captured) and a bare image (keys stored by Glance), they must give
# the same statuses and leave the same properties.
PATCH_SEQUENCE: list[tuple[str, list[dict[str, Any]]]] = [
    (PATCH21, [{'op': 'add', 'path': '/image_type', 'value': 'snapshot'}]),
    (PATCH21, [{'op': 'add', 'path': '/image_type', 'value': 'backup'}]),
    (PATCH21, [{'op': 'replace', 'path': '/backup_type', 'value': 'daily'}]),
    (PATCH21, [{'op': 'remove', 'path': '/backup_type'}]),
    (PATCH20, [{'add': '/image_type', 'value': 'again'}]),
    (PATCH20, [{'add': '/backup_type', 'value': 'daily'}]),
    (PATCH20, [{'replace': '/backup_type', 'value': 'weekly'}]),
    (PATCH21, [{'op': 'remove', 'path': '/image_type'}]),
    (PATCH20, [{'remove': '/image_type'}]),
    (PATCH21, [{'op': 'replace', 'path': '/image_type', 'value': 'x'}]),
    (PATCH21, [{'op': 'replace', 'path': '/name', 'value': 'renamed'},
               {'op': 'add', 'path': '/instance_uuid',
                'value': '8c1b3a2e-0f6e-4f55-9a3e-0a4c9c0e1d11'}]),
    (PATCH21, [{'op': 'replace', 'path': '/name', 'value': 'not-applied'},
               {'op': 'remove', 'path': '/image_type'}]),
    (PATCH21, [{'op': 'add', 'path': '/image_type', 'value': 'a'},
               {'op': 'remove', 'path': '/image_type'}]),
    (PATCH21, [{'op': 'remove', 'path': '/instance_uuid'},
               {'op': 'add', 'path': '/instance_uuid',
                'value': '0d0c7d5e-55b4-4bb6-8a5b-6b7fbb1d36f4'}]),
    (PATCH21, [{'op': 'replace', 'path': '/no_such_plain_key',
                'value': 'x'},
               {'op': 'add', 'path': '/boot_roles', 'value': 'member'}]),
]


def test_patch_semantics_are_glances(glance_server: GlanceServer, api: Api,
                                    bare_api: Api) -> None:
    project, witness = _project(), _project()
    stacked = _create(api, project, name='patched')
    bare = _create(bare_api, witness, name='patched')
    for step, (media, ops) in enumerate(PATCH_SEQUENCE):
        ours = _patch(api, stacked['id'], ops, project, media)
        glance = _patch(bare_api, bare['id'], ops, witness, media)
        assert ours.status_code == glance.status_code, (step, ours.text)
        if glance.status_code == 200:
            expected = {k: v for k, v in glance.json().items()
                        if k not in VOLATILE}
            assert {k: v for k, v in ours.json().items()
                    if k not in VOLATILE} == expected, step
        shown = _show(api, stacked['id'], project)
        witnessed = _show(bare_api, bare['id'], witness)
        assert (_keys_of(shown), shown['name']) == (
            _keys_of(witnessed), witnessed['name']), step
    assert _ever_stored(glance_server, stacked['id']) == set()
    assert _ever_stored(glance_server, bare['id']) >= {
        'image_type', 'backup_type', 'instance_uuid'}


def test_patch_of_captured_keys_only_still_asks_glance(
        api: Api, bare_api: Api) -> None:
    """Existence and permission come from Glance, in Glance's words."""
    owner, other = _project(), _project()
    private = _create(api, owner, visibility='private')
    community = _create(api, owner, visibility='community',
                        instance_uuid=_uuid())
    missing = _uuid()
    add = [{'op': 'add', 'path': '/image_type', 'value': 'backup'}]
    remove_missing = [{'op': 'remove', 'path': '/backup_type'}]
    cases = [
        (missing, other, identity.DEFAULT_ROLES, add, 404),
        (private['id'], other, identity.DEFAULT_ROLES, add, 404),
        (community['id'], other, identity.DEFAULT_ROLES, add, 403),
        (community['id'], other, identity.DEFAULT_ROLES, remove_missing, 403),
        (private['id'], owner, ('reader',), add, 403),
        (private['id'], owner, ('reader',), remove_missing, 403),
    ]
    for image_id, caller, roles, ops, status in cases:
        ours = _patch(api, image_id, ops, caller, roles=roles)
        # Glance storing the key itself says the same.
        plain = [{**op, 'path': '/zz_plain'} for op in ops]
        glance = _patch(bare_api, image_id, plain, caller, roles=roles)
        assert (ours.status_code, glance.status_code) == (status, status), (
            image_id, caller, roles, ours.text)
        assert _message(ours) == _message(glance)
    assert _relation(api, private['id'], owner) is None
    assert 'image_type' not in _show(api, community['id'], owner)

    # The owner gets the full image back, as from any update.
    response = _patch(api, private['id'], add, owner)
    assert response.status_code == 200, response.text
    assert response.json() == _show(api, private['id'], owner)
    assert response.json()['image_type'] == 'backup'
    conflict = _patch(api, private['id'], remove_missing, owner)
    glance = _patch(bare_api, private['id'],
                    [{'op': 'remove', 'path': '/zz_plain'}], owner)
    assert conflict.status_code == glance.status_code == 409
    assert 'Property backup_type does not exist.' in _message(conflict)
    assert _message(conflict) == _message(glance).replace(
        'zz_plain', 'backup_type')


def test_update_probe_never_touches_keys_glance_kept(
        api: Api, bare_api: Api) -> None:
    """An image from before the stack still has instance keys in Glance;
    a patch of captured keys only must not remove Glance's copy."""
    owner = _project()
    legacy = _create(bare_api, owner, image_type='snapshot',
                     instance_uuid=_uuid())
    response = _patch(api, legacy['id'], [
        {'op': 'add', 'path': '/image_type', 'value': 'backup'}], owner)
    assert response.status_code == 200, response.text
    assert response.json()['image_type'] == 'backup'
    kept = bare_api.get(f"/v2/images/{legacy['id']}", project=owner).json()
    assert (kept['image_type'], kept['instance_uuid']) == (
        'snapshot', legacy['instance_uuid'])
    assert not any(k.startswith('instance_aware_probe') for k in kept)


def test_delete_keeps_the_relation_as_history(
        api: Api, bare_api: Api) -> None:
    project, instance = _project(), _uuid()
    kept = _create(api, project, instance_uuid=instance, image_type='backup',
                   backup_type='daily', protected=True)
    gone = _create(api, project, instance_uuid=instance, image_type='backup',
                   backup_type='daily')

    refused = api.delete(f'/v2/images/{kept["id"]}', project=project)
    assert refused.status_code == 403
    response = api.delete(f'/v2/images/{gone["id"]}', project=project)
    assert response.status_code == 204, response.text
    assert api.get(f'/v2/images/{gone["id"]}',
                   project=project).status_code == 404
    assert bare_api.get(f'/v2/images/{gone["id"]}',
                        project=project).status_code == 404

    assert _ids(_related(api, instance, project), 'image_id') == [kept['id']]
    assert _listed(api, project, instance_uuid=instance) == [kept['id']]
    history = _related(api, instance, project, include_deleted='true')
    assert _ids(history, 'image_id') == [gone['id'], kept['id']]
    deleted = history[0]
    assert deleted['status'] == 'deleted'
    assert deleted['deleted_at'] is not None
    assert deleted['deleted_at'] >= deleted['created_at']
    assert deleted['properties'] == {'instance_uuid': instance,
                                     'image_type': 'backup',
                                     'backup_type': 'daily'}
    assert history[1]['status'] == 'active'
    assert history[1]['deleted_at'] is None
    assert _relation(api, gone['id'], project) == deleted


# -- the store down, and the fast path, on an in-process stack --------------


class Forward:
    """The registry over HTTP (the bare endpoint), recording every call."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.calls: list[tuple[str, str]] = []
        self.session = requests.Session()

    def __call__(self, environ: dict[str, Any],
                 start_response: Any) -> Any:
        req = webob.Request(environ)
        self.calls.append((req.method, req.path_qs))
        sent = {k: v for k, v in req.headers.items()
                if k.lower() not in ('host', 'content-length')}
        answer = self.session.request(
            req.method, self.base_url + req.path_qs, headers=sent,
            data=req.body or None, timeout=TIMEOUT)
        response = webob.Response(status=answer.status_code)
        response.headerlist = [
            (k, v) for k, v in answer.headers.items()
            if k.lower() not in ('connection', 'content-length', 'date',
                                 'server', 'transfer-encoding')]
        response.body = answer.content
        return response(environ, start_response)


class LocalStack:
    """An ``instance_metadata`` filter in this process, before Glance."""

    def __init__(self, bare_url: str, connection: str) -> None:
        conf = cfg.ConfigOpts()
        conf([], project='glance', default_config_files=[],
             default_config_dirs=[])
        self.registry = Forward(bare_url)
        self.filter = InstanceMetadataFilter(
            self.registry, {'connection': connection}, conf)

    def request(self, method: str, path: str, project: str,
                body: Any = None, content_type: str = 'application/json',
                service: bool = False,
                hdrs: dict[str, str] | None = None) -> webob.Response:
        req = webob.Request.blank(path, method=method, headers={
            **headers(project, service=service), **JSON, **(hdrs or {})})
        if body is not None:
            req.body = json.dumps(body).encode('utf-8')
            req.content_type = content_type
        return req.get_response(self.filter)


@pytest.fixture
def unreachable_store(glance_server: GlanceServer) -> LocalStack:
    """A stack whose mapping database refuses connections."""
    return LocalStack(glance_server.bare_url,
                      'postgresql+psycopg2://ia:ia@127.0.0.1:1/ia')


@pytest.fixture
def local_stack(glance_server: GlanceServer,
                tmp_path: Path) -> Iterator[LocalStack]:
    """A stack with a store of its own (an SQLite file)."""
    url = migrated_sqlite(tmp_path)
    yield LocalStack(glance_server.bare_url, url)
    store_engine.get_engine(url).dispose()


def _unavailable(response: webob.Response) -> None:
    assert response.status_int == 503, response.body
    assert response.headers['Retry-After'] == '5'
    assert json.loads(response.body)['message'].startswith(
        'The instance-aware mapping database is unavailable; nothing was '
        'changed.')


def test_store_down_is_a_503_before_glance_is_asked(
        unreachable_store: LocalStack, api: Api, bare_api: Api) -> None:
    stack = unreachable_store
    project, instance = _project(), _uuid()
    image = _create(api, project, name='before', instance_uuid=instance)
    path = f'/v2/images/{image["id"]}'
    name = f'never-{uuid.uuid4().hex[:6]}'
    rename = [{'op': 'replace', 'path': '/name', 'value': 'after'}]
    refused = [
        ('POST', '/v2/images', {'name': name, 'instance_uuid': instance},
         'application/json', {}),
        ('POST', '/v2/images', {'name': name}, 'application/json',
         {'X-Instance-UUID': instance}),
        ('PATCH', path, [*rename, {'op': 'add', 'path': '/image_type',
                                   'value': 'backup'}], PATCH21, {}),
        ('PATCH', path, rename, PATCH21, {}),  # keys must be given back
        ('PATCH', path, rename, PATCH21, {'X-Instance-UUID': instance}),
        ('DELETE', path, None, 'application/json', {}),
        ('GET', f'/v2/images?instance_uuid={instance}', None,
         'application/json', {}),
        ('GET', f'/v2/instances/{instance}/images', None,
         'application/json', {}),
        ('GET', f'{path}/instance', None, 'application/json', {}),
    ]
    for method, target, body, content_type, hdrs in refused:
        response = stack.request(method, target, project, body, content_type,
                                 hdrs=hdrs)
        _unavailable(response)
        assert stack.registry.calls == [], (method, target)

    assert _listed(bare_api, project, name=name) == []
    stored = _show(bare_api, image['id'], project)
    assert stored['name'] == 'before'
    assert _keys_of(_show(api, image['id'], project)) == {
        'instance_uuid': instance}

    # A read that reached Glance still fails rather than answer without
    # the keys, and changed nothing.
    _unavailable(stack.request('GET', path, project))
    assert stack.registry.calls == [('GET', path)]
    # A create with nothing to capture needs no store at all.
    response = stack.request('POST', '/v2/images', project, {'name': name})
    assert response.status_int == 201, response.body
    assert _listed(bare_api, project, name=name) == [response.json['id']]


def test_rotation_listing_walks_candidates_without_a_registry_list(
        local_stack: LocalStack, api: Api, bare_api: Api) -> None:
    """Nova's rotation within one project shows candidates one by one, in
    the registry's order, and answers exactly as Glance."""
    project, witness, instance = _project(), _project(), _uuid()
    specs: list[dict[str, Any]] = [
        {'name': 'b0'}, {'name': 'b1', 'visibility': 'community'},
        {'name': 'b2', 'os_hidden': True}, {'name': 'b3', 'tags': ['t']},
        {'name': 'b4', 'visibility': 'private'},
    ]
    keys = {'instance_uuid': instance, 'image_type': 'backup',
            'backup_type': 'daily'}
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    for number, spec in enumerate(specs):
        if number:
            time.sleep(1.05)  # distinct created_at seconds
        response = local_stack.request('POST', '/v2/images', project,
                                       {**spec, **keys}, service=True)
        assert response.status_int == 201, response.body
        ours[response.json['id']] = spec['name']
        theirs[_create(bare_api, witness, **spec, **keys)['id']] = (
            spec['name'])
    queries = [
        'image_type=backup&backup_type=daily&instance_uuid={i}&limit=200'
        '&sort_key=created_at&sort_dir=desc',
        'instance_uuid={i}&limit=2',
        'instance_uuid={i}&sort_dir=asc&limit=3',
        'instance_uuid={i}&sort=created_at:asc&limit=1',
        'instance_uuid={i}&os_hidden=true',
        'instance_uuid={i}&visibility=community',
        'instance_uuid={i}&tag=t&image_type=backup',
        'instance_uuid={i}&name=in:b0,b4&limit=1',
    ]
    for query in queries:
        query = query.format(i=instance)
        local_stack.registry.calls.clear()
        pages = _follow(lambda url: _local_get(local_stack, url, project),
                        f'/v2/images?{query}')
        assert all(not path.startswith('/v2/images?')
                   for _, path in local_stack.registry.calls), query
        expected = _follow(lambda url: bare_api.get(url, project=witness),
                           f'/v2/images?{query}')
        _same_pages(pages, ours, expected, theirs, query)


def _local_get(stack: LocalStack, url: str,
               project: str) -> requests.Response:
    """A webob answer as the little of ``requests.Response`` we read."""
    response = stack.request('GET', url, project)
    fake = requests.Response()
    fake.status_code = response.status_int
    fake._content = response.body
    fake.headers.update(response.headers)
    return fake


# -- give back -------------------------------------------------------------


def test_keys_are_given_back_to_allowed_callers_only(
        api: Api, bare_api: Api) -> None:
    owner, member, stranger = _project(), _project(), _project()
    keys = _nova_keys(owner, _uuid())
    shared = _create(api, owner, **keys)
    public = _create(api, owner, roles=ADMIN, visibility='public', **keys)
    assert _keys_of(shared) == _keys_of(public) == keys
    response = api.post(f'/v2/images/{shared["id"]}/members', project=owner,
                        json={'member': member})
    assert response.status_code == 200, response.text
    response = api.put(f'/v2/images/{shared["id"]}/members/{member}',
                       project=member, json={'status': 'accepted'})
    assert response.status_code == 200, response.text

    # Readers of the owner project (through Nova too), administrators.
    allowed = [(owner, identity.DEFAULT_ROLES, False, shared),
               (owner, ('reader',), False, shared),
               (owner, identity.DEFAULT_ROLES, True, shared),
               (_project(), ADMIN, False, shared)]
    for project, roles, service, image in allowed:
        seen = _show(api, image['id'], project, roles=roles,
                     service=service)
        assert _keys_of(seen) == keys, (project, roles, service)
    for params in ({'id': f'in:{shared["id"]},{public["id"]}'},
                   {'name': shared['name']}):
        response = api.get('/v2/images', project=owner, params=params)
        assert response.status_code == 200, response.text
        assert response.json()['images']
        for item in response.json()['images']:
            assert _keys_of(item) == keys

    # Everybody else, through Nova (a service token) or not: exactly
    # Glance's image, without any key (issue 17, finding 5: a service
    # token does not widen what the user it acts for may read).
    for project, image, service in (
            (member, shared, False), (member, public, False),
            (stranger, public, False), (member, shared, True),
            (stranger, public, True)):
        seen = _show(api, image['id'], project, service=service)
        stored = _show(bare_api, image['id'], project, service=service)
        # Nova (a service token) still sees locations.
        assert seen == {k: v for k, v in stored.items()
                        if service or k not in ('locations', 'direct_url')}
        assert _keys_of(seen) == {}
        listed = api.get('/v2/images', project=project, service=service,
                         params={'id': f'in:{image["id"]}'})
        assert listed.json()['images'] == [seen]
        assert _relation(api, image['id'], project,
                         service=service) is None
    # The owner's update answer carries them too.
    response = _patch(api, shared['id'], [
        {'op': 'add', 'path': '/hw_rng_model', 'value': 'virtio'}], owner)
    assert response.status_code == 200, response.text
    assert _keys_of(response.json()) == keys


# -- list filters ----------------------------------------------------------


def _follow(get: Callable[[str], requests.Response],
            url: str) -> list[dict[str, Any]]:
    """Every page of a list, following ``next`` links."""
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        response = get(next_url)
        assert response.status_code == 200, (next_url, response.text)
        pages.append(response.json())
        next_url = pages[-1].get('next')
        assert len(pages) < 50, 'paging does not end'
    return pages


def _same_pages(ours: list[dict[str, Any]], our_names: dict[str, str],
                theirs: list[dict[str, Any]], their_names: dict[str, str],
                query: str) -> None:
    """Two pagings are the same list of the same images, link for link."""

    def layout(pages: list[dict[str, Any]],
               names: dict[str, str]) -> list[Any]:
        result = []
        for page in pages:
            images = page['images']
            nxt = page.get('next')
            marker = None
            if nxt is not None:
                params = urllib.parse.parse_qs(
                    urllib.parse.urlparse(nxt).query)
                marker = params['marker'][-1]
                assert marker == images[-1]['id'], query
                nxt = re.sub(r'marker=[^&]*', 'marker=M', nxt)
            result.append({
                'names': [names.get(i['id'], '?') for i in images],
                'images': [{k: v for k, v in i.items() if k not in VOLATILE}
                           for i in images],
                'first': page['first'], 'next': nxt,
                'schema': page['schema'], 'keys': list(page),
            })
        return result

    assert layout(ours, our_names) == layout(theirs, their_names), query


LIST_QUERIES = [
    'nova_installation_uuid={n}',
    'nova_installation_uuid={n}&sort_key=name&sort_dir=desc',
    'instance_uuid={x}',
    'instance_uuid={x}&image_type=backup&backup_type=daily',
    'image_type=backup&backup_type=daily&instance_uuid={x}&limit=200'
    '&sort_key=created_at&sort_dir=desc',
    'instance_uuid={x}&sort_key=name&sort_dir=asc',
    'instance_uuid={x}&sort=name:asc,created_at:desc',
    'instance_uuid={x}&sort_key=created_at&sort_dir=asc',
    'instance_uuid={y}&sort_key=name&sort_key=created_at&sort_dir=desc'
    '&sort_dir=asc',
    'instance_uuid={x}&image_type=backup&os_hidden=true',
    'instance_uuid={x}&visibility=community',
    'instance_uuid={x}&visibility=private&sort_dir=asc',
    'instance_uuid={x}&tag=even&disk_format=in:raw',
    'instance_uuid={x}&name=in:img-1,img-2',
    'instance_uuid={x}&protected=true',
    'instance_uuid={x}&image_type=in:backup,snapshot',
    'nova_installation_uuid={n}&image_type=snapshot&sort_key=name',
    'backup_type=daily&image_type=backup&instance_uuid={y}&limit=2',
]


@pytest.fixture(scope='module')
def oracle_sets(
        glance_server: GlanceServer) -> dict[str, Any]:
    """40 images through the stack in one project, the same 40 stored by
    bare Glance with the keys as plain properties in another."""
    project, witness = _project(), _project()
    x, y, installation = _uuid(), _uuid(), _uuid()
    stack, bare = Api(glance_server.url), Api(glance_server.bare_url)
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    pairs: dict[str, str] = {}
    try:
        for i in range(40):
            backup = i % 3 != 0
            keys = {'instance_uuid': x if i % 4 != 3 else y,
                    'image_type': 'backup' if backup else 'snapshot',
                    'nova_installation_uuid': installation,
                    'user_id': f'user-{i % 2}'}
            if backup:
                keys['backup_type'] = 'daily' if i % 2 else 'weekly'
            spec: dict[str, Any] = {
                'name': f'img-{i % 5}',
                'disk_format': 'raw' if i % 3 else 'qcow2',
                'container_format': 'bare',
                'tags': ['even'] if i % 2 == 0 else [],
                'min_ram': i,
            }
            if i % 7 == 0:
                spec['visibility'] = 'community'
            elif i % 6 == 1:
                spec['visibility'] = 'private'
            if i % 9 == 4:
                spec['os_hidden'] = True
            if i % 8 == 5:
                spec['protected'] = True
            mine = _create(stack, project, **spec, **keys)
            other = _create(bare, witness, **spec, **keys)
            label = f'{spec["name"]}#{i}'
            ours[mine['id']] = label
            theirs[other['id']] = label
            pairs[mine['id']] = other['id']
    finally:
        stack.close()
        bare.close()
    return {'project': project, 'witness': witness, 'x': x, 'y': y,
            'installation': installation, 'ours': ours, 'theirs': theirs,
            'pairs': pairs}


@pytest.mark.parametrize('query', LIST_QUERIES)
def test_list_filters_answer_as_glance_storing_the_keys(
        api: Api, bare_api: Api, oracle_sets: dict[str, Any],
        query: str) -> None:
    sets = oracle_sets
    query = query.format(x=sets['x'], y=sets['y'], n=sets['installation'])
    if 'limit=' not in query:
        query += '&limit=7'
    ours = _follow(lambda url: api.get(url, project=sets['project']),
                   f'/v2/images?{query}')
    theirs = _follow(lambda url: bare_api.get(url, project=sets['witness']),
                     f'/v2/images?{query}')
    _same_pages(ours, sets['ours'], theirs, sets['theirs'], query)
    if 'image_type=in:' not in query:
        assert ours[0]['images'], 'the query should match something'
    if query.startswith('nova_installation_uuid=') and (
            'image_type' not in query):
        # Every image but the 4 hidden ones: 36, 7 at a time.
        assert [len(page['images']) for page in ours] == [7] * 5 + [1]


def test_list_filter_with_client_ids(
        api: Api, bare_api: Api, oracle_sets: dict[str, Any]) -> None:
    sets = oracle_sets
    chosen = list(sets['pairs'])[::3]
    for template in ('instance_uuid={x}&id=in:{ids}&limit=3',
                     'id=in:{ids}&image_type=backup&sort_key=name',
                     'instance_uuid={x}&id={one}'):
        query = template.format(x=sets['x'], ids=','.join(chosen),
                                one=chosen[1])
        witness_query = template.format(
            x=sets['x'], ids=','.join(sets['pairs'][i] for i in chosen),
            one=sets['pairs'][chosen[1]])
        ours = _follow(lambda url: api.get(url, project=sets['project']),
                       f'/v2/images?{query}')
        theirs = _follow(
            lambda url: bare_api.get(url, project=sets['witness']),
            f'/v2/images?{witness_query}')
        assert [[sets['ours'][i['id']] for i in p['images']]
                for p in ours] == [
            [sets['theirs'][i['id']] for i in p['images']] for p in theirs]
        assert ours[0]['first'] == f'/v2/images?{query}'.replace(
            ',', '%2C').replace(':', '%3A')
    for bad, message in (
            ('foo:bar', "Unable to filter by unknown operator 'foo'."),
            ('in:"a,b', 'Invalid filter value "a,b. The quote is not '
                        'closed.')):
        ours_bad = api.get('/v2/images', project=sets['project'],
                           headers=JSON, params={'id': bad,
                                                 'instance_uuid': sets['x']})
        glance_bad = bare_api.get('/v2/images', project=sets['witness'],
                                  headers=JSON,
                                  params={'id': bad,
                                          'instance_uuid': sets['x']})
        assert (ours_bad.status_code, glance_bad.status_code) == (400, 400)
        assert _message(ours_bad) == _message(glance_bad)
        assert _message(ours_bad).startswith(message)


@pytest.mark.parametrize('matching', [True, False],
                         ids=['matches', 'no-match'])
@pytest.mark.parametrize('params', [
    {'visibility': 'bogus'}, {'sort_dir': 'up'}, {'limit': 'many'},
    {'member_status': 'maybe'}, {'marker': 'no-such-image'},
    {'sort_key': 'instance_uuid'}, {'os_hidden': 'maybe'},
], ids=lambda p: '-'.join(p))
def test_list_filter_errors_are_glances(
        api: Api, bare_api: Api, oracle_sets: dict[str, Any],
        params: dict[str, str], matching: bool) -> None:
    """Whatever path answers (nothing matching is answered without a
    registry list), what Glance refuses is refused in its words."""
    sets = oracle_sets
    query = {'instance_uuid': sets['x'] if matching else _uuid(), **params}
    ours = api.get('/v2/images', project=sets['project'], params=query,
                   headers=JSON)
    theirs = bare_api.get('/v2/images', project=sets['witness'],
                          params=query, headers=JSON)
    assert (ours.status_code, theirs.status_code) == (400, 400), ours.text
    assert _message(ours) == _message(theirs)


def test_a_filter_on_keys_the_caller_cannot_read_is_no_oracle(
        api: Api) -> None:
    owner, prober, instance = _project(), _project(), _uuid()
    public = _create(api, owner, roles=ADMIN, visibility='public',
                     instance_uuid=instance, image_type='backup',
                     backup_type='daily', user_id='alice')
    probes = [{'instance_uuid': instance},
              {'instance_uuid': instance, 'image_type': 'backup'},
              {'user_id': 'alice', 'id': public['id']},
              {'image_type': 'backup', 'id': f'in:{public["id"]}'}]
    for probe in probes:
        assert _listed(api, prober, **probe) == []
        assert _listed(api, prober, **probe, sort_key='name') == []
        assert _listed(api, owner, **probe) == [public['id']]
    # The image itself is there for the prober, without the keys.
    listed = api.get('/v2/images', project=prober,
                     params={'id': public['id']})
    assert _ids(listed.json()['images']) == [public['id']]
    assert _keys_of(listed.json()['images'][0]) == {}
    assert _related(api, instance, prober) == []
    # An administrator's filters span every project.
    assert public['id'] in _listed(api, _project(), roles=ADMIN,
                                   instance_uuid=instance)


# -- Nova and the SDKs -----------------------------------------------------


def test_nova_snapshot_through_glanceclient(
        glanceclient_for: Callable[..., Any], bare_api: Api) -> None:
    project, instance = _project(), _uuid()
    user = glanceclient_for(project)
    base = user.images.create(name='cirros', disk_format='raw',
                              container_format='bare', hw_disk_bus='virtio',
                              os_distro='cirros')
    user.images.upload(base['id'], io.BytesIO(os.urandom(4096)))

    # compute API: the snapshot record, with inherited properties.
    nova = glanceclient_for(project, service=True)
    inherited = {'hw_disk_bus': 'virtio', 'os_distro': 'cirros',
                 'base_image_ref': base['id'], 'owner_project_name': 'demo',
                 'owner_user_name': 'alice', 'boot_roles': 'reader,member'}
    snapshot = nova.images.create(
        name='snap', disk_format='raw', container_format='bare',
        visibility='private', instance_uuid=instance,
        user_id=f'{project}-user', image_type='snapshot', **inherited)
    assert (snapshot['instance_uuid'], snapshot['image_type']) == (
        instance, 'snapshot')
    # libvirt driver: update the properties, then upload the data.
    nova.images.update(snapshot['id'], image_location='snapshot',
                       image_state='available', owner_id=project)
    data = os.urandom(64 * 1024)
    nova.images.upload(snapshot['id'], io.BytesIO(data))

    shown = user.images.get(snapshot['id'])
    assert shown['status'] == 'active'
    assert shown['size'] == len(data)
    assert _keys_of(dict(shown)) == {
        'instance_uuid': instance, 'image_type': 'snapshot',
        'user_id': f'{project}-user', 'base_image_ref': base['id'],
        'owner_project_name': 'demo', 'owner_user_name': 'alice',
        'boot_roles': 'reader,member', 'image_location': 'snapshot',
        'image_state': 'available', 'owner_id': project}
    assert b''.join(user.images.data(snapshot['id'])) == data
    stored = _show(bare_api, snapshot['id'], project)
    assert _keys_of(stored) == {}
    assert (stored['hw_disk_bus'], stored['os_distro']) == (
        'virtio', 'cirros')
    listed = list(user.images.list(filters={'instance_uuid': instance}))
    assert [i['id'] for i in listed] == [snapshot['id']]


def test_nova_backup_rotation_through_glanceclient(
        glanceclient_for: Callable[..., Any], api: Api) -> None:
    project, instance, rotation = _project(), _uuid(), 2
    nova = glanceclient_for(project, service=True)
    backups = []
    for number in range(4):
        if number:
            time.sleep(1.05)  # backups are taken at distinct times
        backups.append(nova.images.create(
            name=f'daily-{number}', disk_format='raw',
            container_format='bare', instance_uuid=instance,
            image_type='backup', backup_type='daily',
            user_id=f'{project}-user')['id'])
    weekly = nova.images.create(name='weekly', disk_format='raw',
                                container_format='bare',
                                instance_uuid=instance, image_type='backup',
                                backup_type='weekly')['id']
    other = nova.images.create(name='other', instance_uuid=_uuid(),
                               image_type='backup', backup_type='daily')
    assert other['id'] not in backups

    def rotation_list() -> list[Any]:
        # nova.compute.manager._rotate_backups via nova.image.glance
        return list(nova.images.list(
            filters={'image_type': 'backup', 'backup_type': 'daily',
                     'instance_uuid': instance},
            sort_key='created_at', sort_dir='desc', page_size=200))

    images = rotation_list()
    assert [i['id'] for i in images] == backups[::-1]
    assert all(i['backup_type'] == 'daily' for i in images)
    for image in images[rotation:]:
        nova.images.delete(image['id'])
    assert [i['id'] for i in rotation_list()] == backups[:1:-1]
    # Paging through every match, a page at a time.
    paged = list(nova.images.list(
        filters={'image_type': 'backup', 'instance_uuid': instance},
        sort_key='created_at', sort_dir='desc', page_size=1))
    assert [i['id'] for i in paged] == [weekly, backups[3], backups[2]]

    history = _related(api, instance, project, backup_type='daily',
                       include_deleted='true')
    assert [(e['image_id'], e['status'], e['trusted']) for e in history] == [
        (backups[3], 'active', True), (backups[2], 'active', True),
        (backups[1], 'deleted', True), (backups[0], 'deleted', True)]


def test_openstacksdk_create_and_filter(
        sdk_for: Callable[..., Any], bare_api: Api) -> None:
    """openstacksdk sends only the query keys it knows (``instance_uuid``
    is not one) and filters the rest on the listed images' own attributes:
    the keys given back in list items are what it filters on."""
    project, instance = _project(), _uuid()
    conn = sdk_for(project, roles=ADMIN, service=True)
    image = conn.image.create_image(
        name='sdk-backup', disk_format='raw', container_format='bare',
        visibility='public', instance_uuid=instance, image_type='backup',
        backup_type='daily')
    assert image.instance_uuid == instance
    assert (image.properties['image_type'],
            image.properties['backup_type']) == ('backup', 'daily')
    unrelated = conn.image.create_image(name='other', instance_uuid=_uuid())

    found = list(conn.image.images(instance_uuid=instance))
    assert [i.id for i in found] == [image.id]
    assert found[0].properties['backup_type'] == 'daily'
    assert [i.id for i in conn.image.images(
        instance_uuid=unrelated.instance_uuid)] == [unrelated.id]
    fetched = conn.image.get_image(image.id)
    assert (fetched.instance_uuid, fetched.properties['image_type']) == (
        instance, 'backup')
    # Another project sees the public image, but not its relation.
    stranger = sdk_for(_project())
    assert stranger.image.get_image(image.id).instance_uuid is None
    assert list(stranger.image.images(instance_uuid=instance)) == []
    assert _keys_of(_show(bare_api, image.id, project)) == {}


# -- query API -------------------------------------------------------------


def test_query_api_filters_pages_and_orders_newest_first(api: Api) -> None:
    project, other, instance = _project(), _project(), _uuid()
    one, two = _uuid(), _uuid()

    def make(service: bool = True, **keys: str) -> str:
        return str(_create(api, project, service=service,
                           instance_uuid=instance, **keys)['id'])

    old = make(image_type='backup', backup_type='daily',
               nova_installation_uuid=one)
    daily1 = make(image_type='backup', backup_type='daily',
                  nova_installation_uuid=one)
    weekly = make(image_type='backup', backup_type='weekly',
                  nova_installation_uuid=one)
    snap = make(service=False, image_type='snapshot',
                nova_installation_uuid=two)
    daily2 = make(image_type='backup', backup_type='daily',
                  nova_installation_uuid=two.upper())
    _create(api, project, instance_uuid=_uuid(), image_type='backup')
    _create(api, other, instance_uuid=instance, image_type='backup')
    assert api.delete(f'/v2/images/{old}', project=project).status_code == 204

    newest_first = [daily2, snap, weekly, daily1]
    entries = _related(api, instance, project)
    assert _ids(entries, 'image_id') == newest_first
    stamps = [e['created_at'] for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert {e['owner'] for e in entries} == {project}
    assert [e['trusted'] for e in entries] == [True, False, True, True]
    assert entries[1] == {
        'image_id': snap, 'instance_uuid': instance,
        'installation_uuid': two, 'image_type': 'snapshot',
        'backup_type': None,
        'properties': {'instance_uuid': instance, 'image_type': 'snapshot',
                       'nova_installation_uuid': two},
        'trusted': False, 'owner': project, 'status': 'active',
        'created_at': entries[1]['created_at'], 'deleted_at': None,
        'registry_id': 'default'}

    def ids(**params: str) -> list[str]:
        return _ids(_related(api, instance, project, **params), 'image_id')

    assert ids(image_type='backup') == [daily2, weekly, daily1]
    assert ids(image_type='backup', backup_type='daily') == [daily2, daily1]
    assert ids(installation=one) == [weekly, daily1]
    assert ids(installation=two) == [daily2, snap]  # canonical UUIDs
    assert ids(image_type='snapshot', installation=one) == []
    assert ids(include_deleted='true') == [*newest_first, old]
    assert ids(include_deleted='true', backup_type='daily') == [
        daily2, daily1, old]
    assert _ids(_related(api, instance.upper(), project),
                'image_id') == newest_first

    # limit and marker, and next links repeating the query.
    path = f'/v2/instances/{instance}/images'
    pages = []
    url: str | None = f'{path}?include_deleted=true&limit=2'
    while url is not None:
        response = api.get(url, project=project)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url = pages[-1].get('next')
    assert [_ids(p['images'], 'image_id') for p in pages] == [
        [daily2, snap], [weekly, daily1], [old], ]
    assert pages[0]['first'] == f'{path}?include_deleted=true&limit=2'
    assert pages[0]['next'] == (f'{path}?include_deleted=true&limit=2'
                                f'&marker={snap}')
    assert 'next' not in pages[2]


@pytest.mark.parametrize('params,message', [
    ({'limit': '0'}, "Invalid limit '0': expected an integer from 1 to "
                     '1000.'),
    ({'limit': '1001'}, "Invalid limit '1001'"),
    ({'limit': 'all'}, "Invalid limit 'all'"),
    ({'include_deleted': 'maybe'},
     "Invalid value 'maybe' for 'include_deleted': expected true or false."),
    ({'installation': 'nope'}, "Invalid installation 'nope': not a UUID."),
    ({'marker': '4f1e3ae4-8d39-4d3e-b4a8-d2c1c3fe0e49'},
     "Marker '4f1e3ae4-8d39-4d3e-b4a8-d2c1c3fe0e49' not found."),
    ({'sort_key': 'name'}, 'Unknown query parameter(s): sort_key.'),
])
def test_query_api_bad_parameters_are_400(
        api: Api, params: dict[str, str], message: str) -> None:
    response = api.get(f'/v2/instances/{_uuid()}/images', project=_project(),
                       params=params, headers=JSON)
    assert response.status_code == 400, response.text
    assert _message(response).startswith(message)


def test_query_api_policy_and_the_relation_of_one_image(api: Api) -> None:
    project, instance = _project(), _uuid()
    image = _create(api, project, instance_uuid=instance)
    response = api.get('/v2/instances/not-a-uuid/images', project=project,
                       headers=JSON)
    assert response.status_code == 400
    assert _message(response).startswith(
        "Invalid instance UUID 'not-a-uuid': not a UUID.")
    # Without a reader role in the project: no listing, no relation.
    response = api.get(f'/v2/instances/{instance}/images', project=project,
                       roles=('observer',), headers=JSON)
    assert response.status_code == 403
    assert _message(response).startswith(
        'You are not allowed to list the images of instances.')
    assert _relation(api, image['id'], project, roles=('observer',)) is None
    assert _relation(api, image['id'], _project()) is None
    assert _relation(api, _uuid(), project) is None
    plain = _create(api, project)
    assert _relation(api, plain['id'], project) is None
    relation = _relation(api, image['id'], project, roles=('reader',))
    assert relation is not None
    assert (relation['image_id'], relation['instance_uuid']) == (
        image['id'], instance)
