"""The stack acts on exactly the request Glance acts on (issue 17).

Regression tests of findings 1, 2, 3, 6 and 7, each through Glance's
pipeline and through the standalone proxy, asserting the answer and what
Glance stored (read as an administrator on the bare endpoint); then a
property-based test over generated requests of callers without the
right to write locations or to read another project's keys.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.functional.conftest import headers
from tests.functional.test_location_policy import (
    ADMIN_ROLES,
    MEMBER,
    OTHER,
    PATCH20,
    PATCH21,
    Persona,
    Raw,
    Response,
    Scene,
    hidden_keys,
    message,
)
from tests.local.server import GlanceServer, StandaloneServer

OVERRIDE_REFUSED = "Method override ('_method' in the query string or a form"
#: Keys the stack captures (instance and encryption).
CAPTURED = ('instance_uuid', 'image_type', 'backup_type', 'user_id',
            'os_encrypt_key_id', 'os_encrypt_format', 'os_encrypt_cipher',
            'cinder_encryption_key_id')
ENDPOINTS = ['pipeline', 'standalone']


class Http(Raw):
    """:class:`Raw`, with the Content-Type sent exactly as given (or
    not at all) and bytes bodies as they are."""

    def send(self, method: str, path: str, hdrs: dict[str, str],
             body: bytes | None = None,
             content_type: str | None = None) -> Response:
        sent = {'Accept': 'application/json', **hdrs}
        if content_type is not None:
            sent['Content-Type'] = content_type
        return self.exchange(method, path, sent, body)


@pytest.fixture(scope='module')
def standalone(glance_server: GlanceServer,
               tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[StandaloneServer]:
    """The standalone stack in front of the bare Glance."""
    with StandaloneServer(tmp_path_factory.mktemp('reading'),
                          glance_server.bare_url,
                          max_lifetime=900) as server:
        yield server


@pytest.fixture(params=ENDPOINTS)
def scene(request: pytest.FixtureRequest,
          glance_server: GlanceServer) -> Scene:
    """Projects of one test, through the pipeline or the proxy."""
    url = glance_server.url if request.param == 'pipeline' else (
        request.getfixturevalue('standalone').url)
    return Scene(Http(url), Http(glance_server.bare_url))


def _http(scene: Scene) -> Http:
    assert isinstance(scene.stack, Http)
    return scene.stack


def _named(scene: Scene, name: str) -> list[dict[str, Any]]:
    """Images called ``name`` as Glance holds them (any project)."""
    found = scene.bare.request(
        'GET', '/v2/images?name=' + urllib.parse.quote(name),
        headers(scene.owner, ADMIN_ROLES))
    assert found.status == 200, found.text
    images: list[dict[str, Any]] = found.json()['images']
    return images


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


# -- 1. method overrides ------------------------------------------------

def _overrides(image_id: str, name: str) -> list[Any]:
    locations = [{'op': 'replace', 'path': '/locations',
                  'value': [{'url': 'http://127.0.0.1:9/x.img',
                             'metadata': {}}]}]
    keys = [{'op': 'add', 'path': '/instance_uuid',
             'value': str(uuid.uuid4())},
            {'op': 'add', 'path': '/os_encrypt_key_id',
             'value': 'not-a-uuid'},
            {'op': 'add', 'path': '/os_encrypt_format', 'value': 'rot13'}]
    image = f'/v2/images/{image_id}'
    return [
        pytest.param('POST', f'{image}?_method=PATCH', PATCH21,
                     _json(locations), id='post-as-patch-locations'),
        pytest.param('GET', f'{image}?_method=PATCH', PATCH21,
                     _json(locations), id='get-as-patch'),
        pytest.param('POST', f'{image}?_method=patch', PATCH21,
                     _json(keys), id='post-as-patch-keys'),
        pytest.param('POST', f'{image}?x=1&_method=PATCH&_method=PATCH',
                     PATCH20, _json([{'add': '/instance_uuid',
                                      'value': str(uuid.uuid4())}]),
                     id='repeated-v2.0'),
        pytest.param('GET', '/v2/images?_method=POST', 'application/json',
                     _json({'name': name,
                            'instance_uuid': str(uuid.uuid4())}),
                     id='get-as-create'),
        pytest.param('POST', f'{image}?_method=DELETE', None, None,
                     id='post-as-delete'),
        pytest.param('POST', image, 'application/x-www-form-urlencoded',
                     b'_method=DELETE', id='form-delete'),
        pytest.param('POST', image,
                     'multipart/form-data; boundary=b',
                     b'--b\r\nContent-Disposition: form-data; '
                     b'name="_method"\r\n\r\nDELETE\r\n--b--\r\n',
                     id='multipart-delete'),
    ]


@pytest.mark.parametrize('index', range(8))
def test_method_overrides_are_refused_and_change_nothing(
        scene: Scene, index: int) -> None:
    image = scene.active()
    before = scene.stored(image['id'])
    variant = _overrides(image['id'], scene.name + '-new')[index].values
    method, path, content_type, body = variant
    refused = _http(scene).send(method, path, scene.as_(MEMBER), body,
                                content_type)
    assert refused.status == 400, refused.text
    assert message(refused).startswith(OVERRIDE_REFUSED)
    # Glance changed nothing, created nothing, deleted nothing; the
    # stack recorded nothing.
    assert scene.stored(image['id']) == before
    assert _named(scene, scene.name + '-new') == []
    shown = scene.stack.request('GET', f'/v2/images/{image["id"]}',
                                scene.as_(MEMBER))
    assert shown.status == 200, shown.text
    assert not set(CAPTURED) & set(shown.json())


def test_an_empty_override_is_no_override(scene: Scene) -> None:
    """Routes ignores ``_method=``: so does the stack."""
    image = scene.create()
    shown = _http(scene).send('GET', f'/v2/images/{image["id"]}?_method=',
                              scene.as_(MEMBER))
    assert shown.status == 200, shown.text
    assert shown.json()['id'] == image['id']


# -- 2 and 3. bodies read whatever their Content-Type ---------------------

CONTENT_TYPES = [None, 'text/plain', 'APPLICATION/JSON',
                 'application/x-www-form-urlencoded',
                 'application/json; charset=UTF-8']


@pytest.mark.parametrize('content_type', CONTENT_TYPES)
def test_create_keys_are_validated_whatever_the_content_type(
        scene: Scene, content_type: str | None) -> None:
    body = {'name': scene.name, 'instance_uuid': str(uuid.uuid4()),
            'os_encrypt_key_id': 'not-a-uuid', 'os_encrypt_format': 'luks',
            'disk_format': 'raw', 'container_format': 'bare'}
    refused = _http(scene).send('POST', '/v2/images', scene.as_(MEMBER),
                                _json(body), content_type)
    assert refused.status == 400, refused.text
    assert message(refused).startswith(
        "Invalid value for property 'os_encrypt_key_id': 'not-a-uuid' is "
        'not a UUID.')
    assert _named(scene, scene.name) == []


@pytest.mark.parametrize('content_type', CONTENT_TYPES)
def test_create_keys_are_captured_whatever_the_content_type(
        scene: Scene, content_type: str | None) -> None:
    instance = str(uuid.uuid4())
    body = {'name': scene.name, 'instance_uuid': instance,
            'image_type': 'snapshot', 'disk_format': 'raw',
            'container_format': 'bare', 'os_distro': 'ubuntu'}
    created = _http(scene).send('POST', '/v2/images', scene.as_(MEMBER),
                                _json(body), content_type)
    assert created.status == 201, created.text
    image = created.json()
    assert (image['name'], image['instance_uuid'], image['image_type'],
            image['os_distro']) == (scene.name, instance, 'snapshot',
                                    'ubuntu')
    stored = scene.stored(image['id'])
    assert (stored['name'], stored['disk_format'], stored['os_distro']) == (
        scene.name, 'raw', 'ubuntu')
    assert not set(CAPTURED) & set(stored)
    related = scene.stack.request(
        'GET', f'/v2/instances/{instance}/images', scene.as_(MEMBER))
    assert related.status == 200, related.text
    assert [i['image_id'] for i in related.json()['images']] == [
        image['id']]


@pytest.mark.parametrize('content_type', ['text/plain', None,
                                          'application/octet-stream'])
def test_an_asserting_header_keeps_the_body(
        scene: Scene, content_type: str | None) -> None:
    instance = str(uuid.uuid4())
    body = {'name': scene.name, 'disk_format': 'raw',
            'container_format': 'bare', 'os_distro': 'ubuntu'}
    created = _http(scene).send(
        'POST', '/v2/images',
        {**scene.as_(MEMBER), 'X-Instance-UUID': instance}, _json(body),
        content_type)
    assert created.status == 201, created.text
    image = created.json()
    assert (image['name'], image['disk_format'], image['os_distro'],
            image['instance_uuid']) == (scene.name, 'raw', 'ubuntu',
                                        instance)
    stored = scene.stored(image['id'])
    assert (stored['name'], stored['disk_format'],
            stored['container_format'], stored['os_distro']) == (
        scene.name, 'raw', 'bare', 'ubuntu')
    assert 'instance_uuid' not in stored


def test_a_patch_media_type_glance_refuses_is_its_415(scene: Scene) -> None:
    image = scene.create()
    ops = [{'op': 'add', 'path': '/instance_uuid',
            'value': str(uuid.uuid4())}]
    # (A trailing space would not survive HTTP: the unit test has it.)
    for media in (PATCH21.upper(), 'application/json', 'text/plain'):
        refused = _http(scene).send('PATCH', f'/v2/images/{image["id"]}',
                                    scene.as_(MEMBER), _json(ops), media)
        assert refused.status == 415, (media, refused.text)
        assert 'Image PATCH expects Content-Type one of' in refused.text
    assert 'instance_uuid' not in scene.stored(image['id'])
    shown = scene.stack.request('GET', f'/v2/images/{image["id"]}',
                                scene.as_(MEMBER))
    assert 'instance_uuid' not in shown.json()


# -- 6. bad encodings -----------------------------------------------------

@pytest.mark.parametrize('path', [
    '/v2/images?instance_uuid=%ff', '/v2/images?os_encrypt_key_id=%ff%fe',
    f'/v2/instances/{uuid.uuid4()}/images?marker=%ff',
    f'/v2/instances/{uuid.uuid4()}/images?image_type=%ed%a0%80',
])
def test_undecodable_queries_are_400(scene: Scene, path: str) -> None:
    refused = _http(scene).send('GET', path, scene.as_(MEMBER))
    assert refused.status == 400, refused.text
    assert message(refused).startswith(
        'Error decoding your request: the query string is not valid '
        'UTF-8.')


def test_glance_also_refuses_an_undecodable_list_filter(
        scene: Scene) -> None:
    assert isinstance(scene.bare, Http)
    answer = scene.bare.send('GET', '/v2/images?instance_uuid=%ff',
                             scene.as_(MEMBER))
    assert answer.status == 400, answer.text
    assert 'could not be decoded' in message(answer)


def test_a_lone_surrogate_in_a_captured_value_is_400(scene: Scene) -> None:
    body = b'{"name": "%s", "image_type": "\\ud800"}' % scene.name.encode()
    refused = _http(scene).send('POST', '/v2/images', scene.as_(MEMBER),
                                body, 'application/json')
    assert refused.status == 400, refused.text
    assert message(refused).startswith(
        "Invalid value for property 'image_type': not valid Unicode text "
        '(a lone surrogate).')
    assert _named(scene, scene.name) == []
    image = scene.create()
    patched = scene.patch(MEMBER, image['id'], b'[{"op": "add", "path": '
                          b'"/image_type", "value": "x\\udfff"}]')
    assert patched.status == 400, patched.text
    assert 'not valid Unicode text' in message(patched)
    assert 'image_type' not in scene.stored(image['id'])


def test_a_json_array_as_create_body_is_400(scene: Scene) -> None:
    refused = _http(scene).send('POST', '/v2/images', scene.as_(MEMBER),
                                _json([{'name': scene.name}]),
                                'application/json')
    assert refused.status == 400, refused.text
    assert message(refused).startswith(
        'Request body must be a JSON object of image properties.')
    assert _named(scene, scene.name) == []


# -- the property: no caller without the right gets through ---------------

def _keys_of(document: Any, image_id: str) -> set[str]:
    """Captured keys shown anywhere in ``document`` for ``image_id``."""
    if isinstance(document, list):
        return set().union(*(_keys_of(item, image_id)
                             for item in document))
    if not isinstance(document, dict):
        return set()
    found = set(CAPTURED) & set(document) if (
        document.get('id') == image_id) else set()
    return found.union(*(_keys_of(value, image_id)
                         for value in document.values()))


#: Callers without location rights: a member of another project and the
#: owner project's member.
CALLERS = [OTHER, MEMBER]
_SPELLINGS = ['', '?_method=PATCH', '?_method=patch', '?_method=DELETE',
              '?_method=POST', '?_method=', '?x=_method&_method=PATCH']
_TYPES = [None, 'text/plain', 'APPLICATION/JSON', PATCH21, PATCH20,
          PATCH21.upper(), 'application/x-www-form-urlencoded']


def _bodies(location: str, instance: str) -> list[bytes | None]:
    value = {'url': location, 'metadata': {}}
    return [
        None, b'_method=PATCH', b'_method=DELETE',
        _json([{'op': 'replace', 'path': '/locations', 'value': [value]}]),
        _json([{'op': 'add', 'path': '/locations/-', 'value': value}]),
        _json([{'add': '/locations/-', 'value': value}]),
        _json([{'op': 'add', 'path': '/instance_uuid', 'value': instance}]),
        _json([{'op': 'add', 'path': '/os_encrypt_key_id',
                'value': 'not-a-uuid'}]),
        _json({'name': 'generated', 'instance_uuid': instance,
               'locations': [value], 'os_encrypt_format': 'rot13'}),
        _json({'name': 'generated', 'image_type': 'backup'}),
    ]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_no_generated_request_gets_past_the_boundaries(
        scene: Scene, data: st.DataObject) -> None:
    if 'owned' not in scene.kept:
        instance = str(uuid.uuid4())
        owned = scene.active(instance_uuid=instance, image_type='snapshot')
        scene.kept.update(owned=owned, instance=instance,
                          before=scene.stored(owned['id']))
    owned, instance = scene.kept['owned'], scene.kept['instance']
    before = scene.kept['before']
    caller: Persona = data.draw(st.sampled_from(CALLERS))
    method = data.draw(st.sampled_from(['GET', 'POST', 'PATCH', 'PUT',
                                        'DELETE', 'patch']))
    target = data.draw(st.sampled_from([
        f'/v2/images/{owned["id"]}', '/v2/images',
        f'/v2/images/{owned["id"]}/locations']))
    query = data.draw(st.sampled_from(_SPELLINGS))
    content_type = data.draw(st.sampled_from(_TYPES))
    body = data.draw(st.sampled_from(_bodies(
        'http://127.0.0.1:9/generated.img', str(uuid.uuid4()))))
    if method == 'DELETE' and caller is MEMBER and query in ('',
                                                             '?_method='):
        return  # the owner may delete its image: not a boundary
    answer = _http(scene).send(method, target + query, scene.as_(caller),
                               body, content_type)
    spec = (caller.name, method, target + query, content_type, body)
    assert answer.status < 500, (spec, answer.text)
    if answer.body and 'json' in answer.headers.get('Content-Type', ''):
        assert hidden_keys(answer.json()) == set(), (spec, answer.text)
    if caller is OTHER:
        assert instance not in answer.text, (spec, answer.text)
        if answer.body and 'json' in answer.headers.get('Content-Type',
                                                        ''):
            assert not _keys_of(answer.json(), owned['id']), spec
    # Glance holds no captured key and no location the caller wrote.
    stored = scene.stored(owned['id'])
    assert stored['locations'] == before['locations'], spec
    assert not set(CAPTURED) & set(stored), spec
    created = _named(scene, 'generated')
    for image in created:
        assert not set(CAPTURED) & set(image), spec
        assert image['locations'] == [], spec


# -- 7. inputs Glance accepts -------------------------------------------

#: Uploads image data from a generator (``wsgi.input`` without
#: ``read()``, as Glance's own functional tests do, with their ``aki``
#: disk format) to the stacked pipeline, the standalone proxy (in front
#: of the bare endpoint) and the bare pipeline; and as ``raw``, which
#: Glance's format inspector fails on (500) unless the stack gave the
#: input a file interface.  In a fresh process: Glance's configuration
#: is global.
_ITERABLE_UPLOADS = '''
import json, sys
import webob
from instance_aware import proxy
from tests.local import glance, identity
apps = glance.load_apps(glance.StateDir(sys.argv[1]))
apps['standalone'] = proxy.app_factory({}, upstream=sys.argv[2])
hdrs = identity.identity_headers(sys.argv[3])
found = {}
for name, disk in [('stacked', 'aki'), ('standalone', 'aki'),
                   ('bare', 'aki'), ('stacked', 'raw'),
                   ('standalone', 'raw'), ('bare', 'raw')]:
    created = webob.Request.blank(
        '/v2/images', method='POST', headers=hdrs,
        json={'name': 'iterable-' + name, 'disk_format': disk,
              'container_format': disk if disk == 'aki' else 'bare'}
    ).get_response(apps[name])
    image = created.json
    put = webob.Request.blank('/v2/images/%s/file' % image['id'],
                              method='PUT', headers=hdrs)
    put.content_type = 'application/octet-stream'
    put.body_file = (chunk for chunk in [b'x' * 1000, b'', b'y' * 24])
    uploaded = put.get_response(apps[name])
    found[name + '-' + disk] = [image['id'], uploaded.status_int,
                                uploaded.text]
print(json.dumps(found))
'''


def test_an_iterable_input_is_uploaded_as_glance_uploads_it(
        glance_server: GlanceServer) -> None:
    import hashlib
    import subprocess
    import sys

    project = uuid.uuid4().hex
    result = subprocess.run(
        [sys.executable, '-c', _ITERABLE_UPLOADS, glance_server.state_dir,
         glance_server.bare_url, project],
        capture_output=True, text=True, timeout=180, check=True)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    data = b'x' * 1000 + b'y' * 24
    bare = Http(glance_server.bare_url)
    stack = Http(glance_server.url)
    bare_raw = found.pop('bare-raw')
    assert bare_raw[1] == 500  # Glance's own limit, not the stack's
    for name, (image_id, status, text) in found.items():
        assert (status, text) == (204, ''), (name, text)
        stored = bare.send('GET', f'/v2/images/{image_id}',
                           headers(project, ADMIN_ROLES)).json()
        assert (stored['status'], stored['size']) == ('active', 1024), name
        assert stored['os_hash_value'] == hashlib.sha512(data).hexdigest()
        # Downloaded through the stack: its recorded digest matches.
        downloaded = stack.send('GET', f'/v2/images/{image_id}/file',
                                headers(project))
        assert (downloaded.status, downloaded.body) == (200, data), name
