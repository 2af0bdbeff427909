"""The ``location_policy`` filter in front of a fake registry.

The fake (:class:`FakeGlance`) answers whatever a test tells it to, on any
path, and records what reached it.  Its PATCH handling is Glance's own
request deserializer (``glance.api.v2.images.RequestDeserializer``), so
"a location change reached the registry" means exactly what Glance would
have applied, however the document spelled it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import webob
import webob.dec
import webob.exc
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_config import cfg

from instance_aware.filters import location_policy
from instance_aware.filters.location_policy import LocationPolicyFilter
from instance_aware.http import reading
from tests.local.identity import identity_headers

with warnings.catch_warnings():  # eventlet, imported by Glance, warns
    warnings.simplefilter('ignore')
    glance_images = pytest.importorskip('glance.api.v2.images')
    glance_wsgi = pytest.importorskip('glance.common.wsgi')

IMG = '6e1b3a5c-2f4e-4b8a-9c1d-0a1b2c3d4e5f'
OWNER = 'owner-project'
OTHER = 'other-project'
SECRET = 'rbd://fsid/pool/6e1b3a5c/snap'
HTTP_SECRET = 'http://10.0.0.5:8080/images/6e1b3a5c'
PATCH21 = 'application/openstack-images-v2.1-json-patch'
PATCH20 = 'application/openstack-images-v2.0-json-patch'

#: Callers: (project, roles, service token), and whether the default rules
#: let them see and change locations.
CALLERS: dict[str, tuple[str | None, tuple[str, ...], bool, bool]] = {
    'member': (OWNER, ('reader', 'member'), False, False),
    'reader': (OWNER, ('reader',), False, False),
    'other': (OTHER, ('reader', 'member'), False, False),
    'anonymous': (None, (), False, False),
    'admin': (OTHER, ('admin',), False, True),
    'service': (OWNER, ('reader', 'member'), True, True),
    'service-user': ('service', ('service',), False, True),
}
UNAUTHORISED = [name for name, c in CALLERS.items() if not c[3]]
AUTHORISED = [name for name, c in CALLERS.items() if c[3]]

#: Configuration of the property tests (one enforcer for all examples).
_CONF = cfg.ConfigOpts()
_CONF([], project='glance')


def image(owner: str | None = OWNER, image_id: str = IMG,
          url: str = SECRET) -> dict[str, Any]:
    return {'id': image_id, 'name': 'snap', 'owner': owner,
            'status': 'active', 'direct_url': url,
            'locations': [{'url': url, 'metadata': {'store': 'ceph'}}],
            'self': f'/v2/images/{image_id}'}


class FakeGlance:
    """A registry that answers :attr:`reply` to everything but the owner
    lookup (``GET /v2/images/{id}`` of a known image)."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {IMG: image()}
        self.reply: tuple[int, str | None, bytes] = (
            200, 'application/json', json.dumps(image()).encode())
        self.calls: list[tuple[str, str, bytes]] = []
        self.location_changes: list[Any] = []

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> webob.Response:
        body = req.body
        self.calls.append((req.method, req.path_info, body))
        if req.method == 'GET' and req.path_info.startswith('/v2/images/'):
            found = self.images.get(req.path_info[len('/v2/images/'):])
            if found is not None and self._is_lookup(req):
                return webob.Response(json=found)
        if req.method.upper() == 'PATCH':
            self._apply(req.content_type, body)
        status, content_type, reply = self.reply
        response = webob.Response(status=status, body=reply)
        if content_type is None:
            del response.content_type
        else:
            response.content_type = content_type
        return response

    @staticmethod
    def _is_lookup(req: webob.Request) -> bool:
        """The filter's own subrequest (a fresh environ), not the
        caller's request."""
        return reading.ENVIRON_KEY not in req.environ

    def _apply(self, content_type: str, body: bytes) -> None:
        """Record the location changes Glance would apply."""
        glance_req = glance_wsgi.Request.blank('/v2/images/x',
                                               method='PATCH')
        glance_req.content_type = content_type
        glance_req.body = body
        try:
            changes = glance_images.RequestDeserializer().update(
                glance_req)['changes']
        except (webob.exc.HTTPException, AttributeError, TypeError):
            return  # Glance refuses it (with a 4xx, or a 500)
        self.location_changes += [c for c in changes
                                  if c['path'][0] == 'locations']


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    c([], project='glance')
    return c


@pytest.fixture
def glance() -> FakeGlance:
    return FakeGlance()


@pytest.fixture
def stack(glance: FakeGlance, conf: cfg.ConfigOpts) -> LocationPolicyFilter:
    return LocationPolicyFilter(glance, {}, conf)


def policy_conf(tmp_path: Any, rules: dict[str, str]) -> cfg.ConfigOpts:
    policy = tmp_path / 'policy.yaml'
    policy.write_text(''.join(f'"{k}": "{v}"\n' for k, v in rules.items()))
    conf_file = tmp_path / 'glance-api.conf'
    conf_file.write_text(f'[oslo_policy]\npolicy_file = {policy}\n')
    c = cfg.ConfigOpts()
    c(['--config-file', str(conf_file)], project='glance')
    return c


def call(app: Callable[..., Iterable[bytes]], caller: str, method: str,
         path: str, body: Any = None, content_type: str | None = None,
         **extra: str) -> webob.Response:
    """``method path`` as ``caller``; ``path`` is PATH_INFO as the server
    gives it (already percent-decoded once), query string after ``?``."""
    req = webob.Request.blank('/', method=method)
    path_info, _, query = path.partition('?')
    req.environ['PATH_INFO'] = path_info
    req.environ['QUERY_STRING'] = query
    project, roles, service, _ = CALLERS[caller]
    if project is not None:
        req.headers.update(identity_headers(project, roles,
                                            service=service))
    req.headers.update(extra)
    if body is not None:
        req.body = body if isinstance(body, bytes) else json.dumps(
            body).encode()
        req.content_type = content_type or 'application/json'
    return req.get_response(app)


def leaks(response: webob.Response, *secrets: str) -> bool:
    text = response.body.decode('utf-8', 'replace')
    return any(secret in text for secret in (SECRET, HTTP_SECRET, *secrets))


def hidden_keys(document: Any) -> set[str]:
    if isinstance(document, list):
        return set().union(*(hidden_keys(item) for item in document))
    if isinstance(document, dict):
        found = {k for k in document if k in location_policy.HIDDEN_KEYS}
        return found.union(*(hidden_keys(v) for v in document.values()))
    return set()


# -- reads -----------------------------------------------------------------

SHAPES: dict[str, Any] = {
    'show': image(),
    'list': {'images': [image(), image(image_id='other', url=HTTP_SECRET)],
             'first': '/v2/images', 'schema': '/v2/schemas/images'},
    'task': {'tasks': [{'id': 't', 'type': 'location_import',
                        'owner': OWNER, 'input': {
                            'image_id': IMG, 'loc_url': HTTP_SECRET,
                            'validation_data': {}}}]},
    'unknown-wrapper': {'x': [{'y': {'z': image()}}]},
    'loc_url-anywhere': {'result': {'loc_url': SECRET}},
    'direct_url-only': {'id': IMG, 'direct_url': SECRET},
    'top-level-list': [image(), {'direct_url': HTTP_SECRET}],
    'no-owner': image(owner=None),
}


@pytest.mark.parametrize('shape', sorted(SHAPES))
@pytest.mark.parametrize('content_type', [
    'application/json', 'application/json; charset=UTF-8',
    'application/vnd.openstack.images-v2+json', 'text/plain', None])
@pytest.mark.parametrize('caller', sorted(CALLERS))
def test_every_body_is_scrubbed_whatever_its_media_type(
        stack: LocationPolicyFilter, glance: FakeGlance, shape: str,
        content_type: str | None, caller: str) -> None:
    document = SHAPES[shape]
    raw = json.dumps(document).encode()
    glance.reply = (200, content_type, raw)
    response = call(stack, caller, 'GET', f'/v2/images/{IMG}')
    assert response.status_int == 200
    if CALLERS[caller][3]:
        assert response.body == raw
    else:
        assert not leaks(response)
        scrubbed = json.loads(response.body)
        assert hidden_keys(scrubbed) == set()
        assert scrubbed == _strip(document)


def _strip(document: Any) -> Any:
    if isinstance(document, list):
        return [_strip(item) for item in document]
    if isinstance(document, dict):
        return {k: _strip(v) for k, v in document.items()
                if k not in location_policy.HIDDEN_KEYS}
    return document


def test_keys_spelled_with_json_escapes_are_scrubbed(
        stack: LocationPolicyFilter, glance: FakeGlance) -> None:
    raw = (b'{"id": "x", "\\u006cocations": [{"url": "' + SECRET.encode()
           + b'"}], "direct\\u005furl": "' + SECRET.encode() + b'"}')
    glance.reply = (200, 'application/json', raw)
    response = call(stack, 'member', 'GET', f'/v2/images/{IMG}')
    assert json.loads(response.body) == {'id': 'x'}


def test_a_body_that_is_not_json_is_redacted_as_text(
        stack: LocationPolicyFilter, glance: FakeGlance) -> None:
    raw = (f'locations: {SECRET}\n'
           f"{{'url': '{HTTP_SECRET}', 'loc_url': 'x'}}").encode()
    glance.reply = (200, 'text/plain', raw)
    member = call(stack, 'member', 'GET', '/v2/whatever')
    assert member.text == ("locations: [location hidden]\n"
                           "{'url': '[location hidden]', "
                           "'loc_url': '[location hidden]'}")
    assert call(stack, 'admin', 'GET', '/v2/whatever').body == raw


_ERROR_TEMPLATES = {
    'glance-repr': ('application/json',
                    '{{"message": "Original locations is not empty: '
                    '[{{\'id\': 9, \'url\': \'{url}\', \'metadata\': '
                    '{{}}}}]", "code": "400"}}'),
    'json-quoted': ('application/json',
                    '{{"message": "\\"url\\": \\"{url}\\""}}'),
    'html': ('text/html', '<h1>400</h1> &#x27;url&#x27;: &#x27;{url}&#x27;, '
                          '&quot;direct_url&quot;: &quot;{url}&quot;'),
    'bare-url': ('text/plain', 'Image at {url} is broken'),
}
_ERROR_URLS = [SECRET, HTTP_SECRET, 'file:///var/lib/glance/images/x',
               'swift+https://h/v1/c/o', 's3+http://key:secret@h/bucket/o']


@pytest.mark.parametrize('shape,url', [
    (shape, url) for shape in _ERROR_TEMPLATES for url in _ERROR_URLS
    # An http URL is a location only where it stands as one.
    if not (shape == 'bare-url' and url == HTTP_SECRET)])
def test_error_bodies_lose_locations(
        stack: LocationPolicyFilter, glance: FakeGlance,
        shape: str, url: str) -> None:
    content_type, template = _ERROR_TEMPLATES[shape]
    raw = template.format(url=url).encode()
    glance.reply = (400, content_type, raw)
    member = call(stack, 'member', 'PATCH', f'/v2/images/{IMG}', b'[]',
                  PATCH21)
    assert member.status_int == 400
    assert url not in member.text
    assert '[location hidden]' in member.text
    if 'json' in content_type:
        json.loads(member.body)  # still valid JSON
    for caller in AUTHORISED:
        answer = call(stack, caller, 'PATCH', f'/v2/images/{IMG}', b'[]',
                      PATCH21)
        assert answer.body == raw


def test_schemas_are_left_alone(stack: LocationPolicyFilter,
                                glance: FakeGlance) -> None:
    schema = {'name': 'image', 'properties': {
        'locations': {'type': 'array'}, 'direct_url': {'type': 'string'}}}
    glance.reply = (200, 'application/json', json.dumps(schema).encode())
    for path in ('/v2/schemas/image', '/v2.1/schemas/image',
                 '/v2/schemas/images'):
        assert json.loads(call(stack, 'member', 'GET', path).body) == schema
    # A path that only starts like one is scrubbed.
    assert hidden_keys(json.loads(call(
        stack, 'member', 'GET', '/v2/schemasx/image').body)) == set()


def test_image_data_passes_untouched(stack: LocationPolicyFilter,
                                     glance: FakeGlance) -> None:
    data = json.dumps(image()).encode()  # data that looks like an image
    glance.reply = (200, 'application/octet-stream', data)
    for path in (f'/v2/images/{IMG}/file', f'//v2.1/images/{IMG}//file'):
        assert call(stack, 'member', 'GET', path).body == data


@pytest.mark.parametrize('rule', [
    'role:member and project_id:%(project_id)s',
    'role:member and project_id:%(owner)s',
])
def test_owner_rules_are_applied_per_image(
        tmp_path: Any, glance: FakeGlance, rule: str) -> None:
    conf = policy_conf(tmp_path, {
        'instance_aware:get_image_location': rule})
    stack = LocationPolicyFilter(glance, {}, conf)
    mine, theirs = image(), image(owner=OTHER, url=HTTP_SECRET)
    task = {'id': 't', 'owner': OWNER, 'input': {'loc_url': SECRET}}
    glance.reply = (200, 'application/json', json.dumps(
        {'images': [mine, theirs], 'tasks': [task]}).encode())
    listed = json.loads(call(stack, 'member', 'GET', '/v2/images').body)
    assert listed == {'images': [mine, _strip(theirs)], 'tasks': [task]}
    other = json.loads(call(stack, 'other', 'GET', '/v2/images').body)
    assert other == {'images': [_strip(mine), theirs],
                     'tasks': [_strip(task)]}


# -- writes ----------------------------------------------------------------

LOCATION = {'url': HTTP_SECRET, 'metadata': {}}
WRITES: list[tuple[str, str, str, Any, str]] = [
    # (name, method, path, body, media type)
    ('patch-add', 'PATCH', f'/v2/images/{IMG}',
     [{'op': 'add', 'path': '/locations/-', 'value': LOCATION}], PATCH21),
    ('patch-add-v2.0', 'PATCH', f'/v2/images/{IMG}',
     [{'add': '/locations/0', 'value': LOCATION}], PATCH20),
    ('patch-replace', 'PATCH', f'/v2/images/{IMG}',
     [{'op': 'replace', 'path': '/locations', 'value': [LOCATION]}],
     PATCH21),
    ('patch-remove', 'PATCH', f'/v2/images/{IMG}',
     [{'op': 'remove', 'path': '/locations/0'}], PATCH21),
    ('patch-remove-v2.0', 'PATCH', f'/v2/images/{IMG}',
     [{'remove': '/locations/0'}], PATCH20),
    ('patch-padded-pointer', 'PATCH', f'/v2.1/images/{IMG}',
     [{'op': 'add', 'path': '//\u3000locations /-', 'value': LOCATION}],
     PATCH21),
    ('patch-charset', 'PATCH', f'/v2/images/{IMG}',
     [{'op': 'add', 'path': '/locations/-', 'value': LOCATION}],
     PATCH21 + '; charset=UTF-8'),
    ('patch-lowercase-method', 'patch', f'/v2/images/{IMG}',
     [{'op': 'add', 'path': '/locations/-', 'value': LOCATION}], PATCH21),
    ('post-locations', 'POST', f'//v2/IMAGES/{IMG}/Locations/',
     {'url': HTTP_SECRET}, 'application/json'),
    ('delete-from-store', 'DELETE', f'/v2/stores/ceph/{IMG}', None, ''),
    ('create-with-locations', 'POST', '/v2/images',
     {'name': 'x', 'locations': [LOCATION]}, 'application/json'),
]


@pytest.mark.parametrize('caller', ['member', 'reader', 'other'])
@pytest.mark.parametrize('write', WRITES, ids=[w[0] for w in WRITES])
def test_location_writes_are_refused_before_the_registry(
        stack: LocationPolicyFilter, glance: FakeGlance, caller: str,
        write: tuple[str, str, str, Any, str]) -> None:
    _, method, path, body, media = write
    response = call(stack, caller, method, path, body, media or None)
    assert response.status_int == 403, response.text
    assert 'You are not authorized to' in response.text
    # At most the owner lookup reached the registry.
    assert all(c[0] == 'GET' for c in glance.calls), glance.calls
    assert glance.location_changes == []


@pytest.mark.parametrize('caller', AUTHORISED)
@pytest.mark.parametrize('write', WRITES, ids=[w[0] for w in WRITES])
def test_location_writes_of_allowed_callers_reach_the_registry(
        stack: LocationPolicyFilter, glance: FakeGlance, caller: str,
        write: tuple[str, str, str, Any, str]) -> None:
    _, method, path, body, media = write
    sent = json.dumps(body).encode() if body is not None else b''
    response = call(stack, caller, method, path, body, media or None)
    assert response.status_int == 200
    assert glance.calls == [(method, path.partition('?')[0], sent)]


@pytest.mark.parametrize('document', [
    [{'op': 'add', 'path': 5, 'value': 'x'}],
    [{'op': 'add', 'path': None, 'value': 'x'}],
    [{'op': 'replace', 'path': ['/locations'], 'value': 'x'}],
    [{'add': {'p': 1}, 'value': 'x'}],
    [{'op': 'add', 'path': '/name', 'value': 'x'},
     {'remove': False}],
])
def test_pointers_glance_would_crash_on_are_refused_with_400(
        stack: LocationPolicyFilter, glance: FakeGlance,
        document: list[Any]) -> None:
    media = PATCH20 if any('op' not in op for op in document) else PATCH21
    for caller in ('member', 'admin'):
        response = call(stack, caller, 'PATCH', f'/v2/images/{IMG}',
                        document, media, Accept='application/json')
        assert response.status_int == 400
        assert 'is not a string' in response.json['message']
    assert glance.calls == []


def test_json_nested_too_deeply_is_a_400(stack: LocationPolicyFilter,
                                         glance: FakeGlance) -> None:
    deep = b'[' * 100_000 + b']' * 100_000
    for path, media in ((f'/v2/images/{IMG}', PATCH21),
                        ('/v2/images', 'application/json')):
        response = call(stack, 'member', 'PATCH' if media == PATCH21
                        else 'POST', path, deep, media)
        assert response.status_int == 400
        assert 'nested too deeply' in response.text
    assert glance.calls == []


def test_ordinary_patches_pass(stack: LocationPolicyFilter,
                               glance: FakeGlance) -> None:
    document = [{'op': 'replace', 'path': '/name', 'value': 'x'},
                {'op': 'add', 'path': '/locations~1x', 'value': 'a'},
                {'op': 'add', 'path': '/loc~0ations', 'value': 'b'}]
    response = call(stack, 'member', 'PATCH', f'/v2/images/{IMG}',
                    document, PATCH21)
    assert response.status_int == 200
    assert glance.calls == [('PATCH', f'/v2/images/{IMG}',
                             json.dumps(document).encode())]


@pytest.mark.parametrize('caller,lookup_status,expected', [
    ('member', 404, 404), ('anonymous', 401, 401), ('member', 500, 404),
])
def test_a_caller_who_cannot_see_the_image_gets_glances_answer(
        glance: FakeGlance, conf: cfg.ConfigOpts, caller: str,
        lookup_status: int, expected: int) -> None:
    glance.images = {}
    glance.reply = (lookup_status, 'application/json',
                    b'{"message": "No image found"}')
    stack = LocationPolicyFilter(glance, {}, conf)
    response = call(stack, caller, 'POST', f'/v2/images/{IMG}/locations',
                    {'url': HTTP_SECRET})
    assert response.status_int == expected
    assert [c[0] for c in glance.calls] == ['GET']


def test_owner_rules_for_writes_look_the_owner_up(
        tmp_path: Any, glance: FakeGlance) -> None:
    conf = policy_conf(tmp_path, {
        'instance_aware:add_image_location':
            'role:member and project_id:%(project_id)s'})
    stack = LocationPolicyFilter(glance, {}, conf)
    image_id = 'x#y'  # quoted in the lookup: never the image 'x'
    glance.images = {IMG: image(), image_id: image(image_id=image_id),
                     'x': image(owner=OTHER, image_id='x')}
    allowed = call(stack, 'member', 'POST', f'/v2/images/{IMG}/locations',
                   {'url': HTTP_SECRET})
    assert allowed.status_int == 200
    assert [c[:2] for c in glance.calls] == [
        ('GET', f'/v2/images/{IMG}'), ('POST', f'/v2/images/{IMG}/locations')]
    glance.calls.clear()
    refused = call(stack, 'other', 'POST', f'/v2/images/{IMG}/locations',
                   {'url': HTTP_SECRET})
    assert refused.status_int == 403
    assert [c[:2] for c in glance.calls] == [('GET', f'/v2/images/{IMG}')]
    glance.calls.clear()
    odd = call(stack, 'member', 'POST', f'/v2/images/{image_id}/locations',
               {'url': HTTP_SECRET})
    assert glance.calls[0][:2] == ('GET', f'/v2/images/{image_id}')
    assert odd.status_int == 200


# -- properties ------------------------------------------------------------

_VERSION = st.sampled_from(['v2', 'v2.0', 'v2.1', 'v2.17', 'V2', 'v2.18'])
_SEP = st.sampled_from(['/', '/', '//', '/./', '///'])


@st.composite
def spelled(draw: st.DrawFn, *segments: str) -> str:
    """A spelling of ``/v2/<segments>`` as PATH_INFO: case, doubled and
    dot segments, percent-escapes (once or twice), a trailing slash."""
    path = draw(_SEP) + draw(_VERSION)
    for segment in segments:
        chars = []
        for char in segment:
            how = draw(st.sampled_from(['keep', 'keep', 'upper', 'quote',
                                        'quote2']))
            if how == 'upper' and segment != IMG:
                chars.append(char.upper())
            elif how == 'quote':
                chars.append(f'%{ord(char):02x}')
            elif how == 'quote2' and segment != IMG:
                chars.append(f'%25{ord(char):02X}')
            else:
                chars.append(char)
        path += draw(_SEP) + ''.join(chars)
    return path + draw(st.sampled_from(['', '/', '?a=b', '?fields=x']))


_READS = [('images',), ('images', IMG), ('images', IMG, 'tasks'),
          ('images', IMG, 'locations'), ('images', IMG, 'members'),
          ('instances', IMG, 'images'), ('whatever',), ()]


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_property_no_spelling_reads_a_location(data: st.DataObject) -> None:
    glance = FakeGlance()
    stack = LocationPolicyFilter(glance, {}, _CONF)
    segments = data.draw(st.sampled_from(_READS))
    path = data.draw(spelled(*segments))
    caller = data.draw(st.sampled_from(sorted(CALLERS)))
    method = data.draw(st.sampled_from(['GET', 'HEAD', 'OPTIONS']))
    document = data.draw(st.sampled_from(sorted(SHAPES)))
    glance.reply = (data.draw(st.sampled_from([200, 201, 300, 400, 404])),
                    data.draw(st.sampled_from(['application/json', None])),
                    json.dumps(SHAPES[document]).encode())
    response = call(stack, caller, method, path)
    assert response.status_int < 500
    if not CALLERS[caller][3]:
        assert not leaks(response), (path, response.text)
    elif response.status_int != 403:
        assert response.body == glance.reply[2] or method == 'HEAD'


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(['id', 'owner', 'input', 'images', 'x', 'result',
                         'tasks', 'name']), children, max_size=3),
    max_leaves=12)


@st.composite
def planted(draw: st.DrawFn) -> Any:
    """Any JSON with hidden keys planted at any depth."""
    document = draw(_ANY_JSON)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(location_policy.HIDDEN_KEYS))
        value = draw(st.sampled_from([SECRET, [{'url': HTTP_SECRET}],
                                      {'url': SECRET}]))
        document = _plant(draw, document, key, value)
    return document


def _plant(draw: st.DrawFn, node: Any, key: str, value: Any) -> Any:
    if isinstance(node, dict) and node and draw(st.booleans()):
        inner = draw(st.sampled_from(sorted(node)))
        return {**node, inner: _plant(draw, node[inner], key, value)}
    if isinstance(node, list) and node and draw(st.booleans()):
        index = draw(st.integers(0, len(node) - 1))
        return [*node[:index], _plant(draw, node[index], key, value),
                *node[index + 1:]]
    if isinstance(node, dict):
        return {**node, key: value}
    return {'wrapped': node, key: value}


@settings(max_examples=300, deadline=None, database=None)
@given(document=planted(), caller=st.sampled_from(sorted(CALLERS)),
       status=st.sampled_from([200, 201, 202, 400, 403, 404, 409]),
       content_type=st.sampled_from(['application/json', 'text/plain',
                                     None, 'text/html; charset=UTF-8']),
       ascii_only=st.booleans())
def test_property_no_body_shape_leaks(document: Any, caller: str,
                                      status: int, content_type: str | None,
                                      ascii_only: bool) -> None:
    glance = FakeGlance()
    stack = LocationPolicyFilter(glance, {}, _CONF)
    raw = json.dumps(document, ensure_ascii=ascii_only).encode()
    glance.reply = (status, content_type, raw)
    response = call(stack, caller, 'GET', f'/v2/images/{IMG}/members')
    assert response.status_int == status
    if CALLERS[caller][3]:
        assert response.body == raw
    else:
        assert not leaks(response), (document, response.text)


_SPACE = st.sampled_from(['', '', '', ' ', '\t', '\u00a0', '\u3000', '\n'])


def _spell(draw: st.DrawFn, root: str, tail: str | None) -> str:
    """``/root[/tail]`` as Glance still decodes it: leading slashes,
    whitespace around each part."""
    pointer = draw(st.sampled_from(['/', '/', '//'])) + (
        draw(_SPACE) + root + draw(_SPACE))
    if tail is not None:
        pointer += '/' + draw(_SPACE) + tail + draw(_SPACE)
    return pointer


@st.composite
def operations(draw: st.DrawFn, media: str) -> Any:
    """Mostly operations Glance applies (most of them on locations),
    sometimes noise Glance refuses."""
    op = draw(st.sampled_from(['add', 'add', 'replace', 'remove']))
    value: Any
    if draw(st.integers(0, 4)) == 0:  # noise
        pointer = draw(st.one_of(
            st.none(), st.integers(), st.booleans(),
            st.lists(st.text(max_size=2), max_size=2), st.text(max_size=6),
            st.sampled_from(['///locations/0', '/locations/', '/~2'])))
        op = draw(st.sampled_from([op, 'move', 'ADD']))
        value = draw(st.sampled_from([LOCATION, None, 'x']))
    elif draw(st.integers(0, 3)):  # a location operation
        tail = {'add': draw(st.sampled_from(['-', '0', '1'])),
                'remove': draw(st.sampled_from(['0', '1'])),
                'replace': None}[op]
        pointer = _spell(draw, 'locations', tail)
        value = {'add': LOCATION, 'remove': None,
                 'replace': [LOCATION]}[op]
    else:  # a property that only looks like one
        op = 'add'
        pointer = _spell(draw, draw(st.sampled_from(
            ['name', 'loc~0ations', 'locations~1-', 'Locations', 'x'])),
            None)
        value = 'x'
    raw: dict[str, Any] = ({'op': op, 'path': pointer} if media == PATCH21
                           else {op: pointer})
    if op != 'remove':
        raw['value'] = value
    return raw


@st.composite
def patches(draw: st.DrawFn) -> tuple[str, bytes]:
    media = draw(st.sampled_from([PATCH21, PATCH20]))
    ops = draw(st.lists(operations(media), max_size=3))
    document: Any = ops if draw(st.integers(0, 19)) else {'ops': ops}
    return media, json.dumps(document).encode()


@settings(max_examples=250, deadline=None, database=None)
@given(patch=patches(), caller=st.sampled_from(sorted(CALLERS)),
       path=spelled('images', IMG))
def test_property_no_patch_changes_a_location_unless_allowed(
        patch: tuple[str, bytes], caller: str, path: str) -> None:
    media, body = patch
    glance = FakeGlance()
    stack = LocationPolicyFilter(glance, {}, _CONF)
    response = call(stack, caller, 'PATCH', path, body, media)
    assert response.status_int < 500
    if not CALLERS[caller][3]:
        assert glance.location_changes == [], (path, body)
        assert not leaks(response)


def test_the_oracle_sees_what_glance_would_apply() -> None:
    """The fake's oracle is Glance itself: a pointer Glance decodes to
    ``/locations`` counts, whatever its spelling."""
    glance = FakeGlance()
    glance._apply(PATCH21, json.dumps([
        {'op': 'add', 'path': '//\tlocations/-', 'value': LOCATION},
        {'op': 'add', 'path': '/name', 'value': 'x'}]).encode())
    assert [c['path'] for c in glance.location_changes] == [
        ['locations', '-']]

