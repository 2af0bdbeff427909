"""The stack's one reading of a request against Glance's own.

Glance's real v2 router (routes' ``RoutesMiddleware`` over the mapper
``glance.api.v2.router.API`` builds, with stub controllers) and its real
request deserializers read a generated corpus of requests: methods,
``_method`` in the query and in form bodies, path spellings, content
types and their case, bodies, framings and encodings.  Wherever Glance
would act on a request the stack's reading must agree with it: same
method, same route, same body; a request Glance would dispatch on an
overridden method is one the stack refuses.
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import webob
import webob.dec
import webob.exc
from hypothesis import example, given, settings
from hypothesis import strategies as st

from instance_aware.http import reading
from instance_aware.http.request import PATCH_V20, PATCH_V21, Request

IMG = '6e1b3a5c-2f4e-4b8a-9c1d-0a1b2c3d4e5f'
LIMIT = 1_000_000

#: Glance's (resource, action) -> the stack's route name.
ROUTE_OF = {
    ('images', 'create'): 'images', ('images', 'index'): 'images',
    ('images', 'show'): 'image', ('images', 'update'): 'image',
    ('images', 'delete'): 'image',
    ('images', 'import_image'): 'image_import',
    ('image_data', 'upload'): 'image_file',
    ('image_data', 'download'): 'image_file',
    ('image_data', 'stage'): 'image_stage',
    ('images', 'get_task_info'): 'image_tasks',
    ('images', 'add_location'): 'image_locations',
    ('images', 'get_locations'): 'image_locations',
}
#: Actions whose deserializer reads a JSON body.
BODY_ACTIONS = {('images', 'create'), ('images', 'update'),
                ('images', 'import_image')}
_RESOURCES = ('schemas', 'metadef_resource_types', 'metadef_namespaces',
              'metadef_properties', 'metadef_objects', 'metadef_tags',
              'images', 'image_actions', 'image_data', 'image_members',
              'image_tags', 'tasks', 'discovery', 'cached_images')


class _Stub:
    """A controller that says which action the router chose."""

    #: (resource, action) of every dispatch, in order.
    dispatched: list[tuple[str, str]] = []
    #: What the deserializer made of the body, where it reads one.
    bodies: list[tuple[str, Any]] = []
    #: Glance's images ``RequestDeserializer``.
    deserializer: Any = None

    def __init__(self, name: str) -> None:
        self.name = name

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> webob.Response:
        action = req.environ['wsgiorg.routing_args'][1].get('action')
        self.dispatched.append((self.name, action))
        if (self.name, action) in BODY_ACTIONS:
            # Read here, after the router: routes may have parsed a form.
            self.bodies.append(_glance_body(
                self.deserializer, (self.name, action), req.environ))
        return webob.Response()



def _import_glance() -> None:
    """Import Glance's API once (it imports eventlet, which warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        importlib.import_module('glance.api.v2.router')


@pytest.fixture(scope='module')
def glance_router(deserializer: Any) -> Iterator[tuple[Any, list[str]]]:
    _import_glance()
    _Stub.deserializer = deserializer
    from glance.api.v2 import router
    from glance.common import wsgi

    matched: list[str] = []

    class Mapper(wsgi.APIMapper):  # type: ignore[misc]
        def routematch(self, url: Any = None, environ: Any = None) -> Any:
            # routes' singleton config sets the mapper's environ first.
            env = environ if environ is not None else self.environ
            matched.append(env['REQUEST_METHOD'])
            return super().routematch(url, environ)

    with mock.patch.object(router.images, 'load_custom_properties',
                           dict):
        patches = []
        for name in _RESOURCES:
            module = importlib.import_module(f'glance.api.v2.{name}')
            if hasattr(module, 'create_resource'):
                patches.append(mock.patch.object(
                    module, 'create_resource',
                    lambda *a, _n=name, **k: _Stub(_n)))
        for patch in patches:
            patch.start()
        try:
            api = router.API(Mapper())
        finally:
            for patch in patches:
                patch.stop()
    yield api, matched


@pytest.fixture(scope='module')
def deserializer() -> Any:
    _import_glance()
    from glance.api.v2 import images
    with mock.patch.object(images, 'load_custom_properties', dict):
        return images.RequestDeserializer()


METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'post',
           'patch', 'Delete']
PATHS = [
    '/v2/images', '/v2/images/', '/v2//images', '/v2/IMAGES',
    '/v2.1/images', f'/v2/images/{IMG}', f'/v2/images/{IMG}/',
    f'/v2/Images/{IMG}', f'/v2/images/{IMG}/import',
    f'/v2/images/{IMG}/file', f'/v2/images/{IMG}/stage',
    f'/v2/images/{IMG}/locations', f'/v2/images/{IMG}/tasks',
]
QUERIES = [
    '', '_method=PATCH', '_method=patch', '_method=', '_method=DELETE',
    'a=1&_method=POST', '_method=POST&_method=', '_method=%ff',
    '_method=%ff&x=1', 'x=_method', '_Method=PATCH', '%5Fmethod=PATCH',
    '_method=GET', 'instance_uuid=%ff', 'name=%C3%A9', '_method',
]
CONTENT_TYPES = [
    None, '', 'application/json', 'APPLICATION/JSON', 'text/plain',
    'application/x-www-form-urlencoded',
    'Application/X-WWW-Form-Urlencoded',
    'application/x-www-form-urlencoded; charset=UTF-8',
    'application/x-www-form-urlencoded; charset=latin-1',
    'multipart/form-data; boundary=b', PATCH_V21, PATCH_V20,
    PATCH_V21.upper(), PATCH_V21 + '; charset=UTF-8', PATCH_V21 + ' ',
]
_LOCATIONS = [{'op': 'replace', 'path': '/locations', 'value': []}]
BODIES = [
    None, b'', b'{"name": "x"}', b'_method=PATCH', b'_method=DELETE&a=b',
    b'_method=', json.dumps(_LOCATIONS).encode(), b'[]', b'"text"',
    b'42', b'\xff\xfe', b'{"image_type": "\\ud800"}',
    '{"name": "\u00e9"}'.encode('utf-16'), b'\xef\xbb\xbf{}',
    b'{"instance_uuid": "x", "os_encrypt_key_id": "y"}', b'{"a": NaN}',
    b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\n'
    b'DELETE\r\n--b--\r\n',
]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
bodies = st.sampled_from(BODIES) | _json.map(
    lambda doc: json.dumps(doc).encode())


def _environ(method: str, path: str, query: str, content_type: str | None,
             body: bytes | None, framing: str) -> dict[str, Any]:
    """A fresh environ (each reader consumes its own body)."""
    environ = webob.Request.blank('/').environ
    environ.update(REQUEST_METHOD=method, PATH_INFO=path,
                   QUERY_STRING=query)
    environ.pop('CONTENT_LENGTH', None)
    environ.pop('CONTENT_TYPE', None)
    if content_type is not None:
        environ['CONTENT_TYPE'] = content_type
    data = body or b''
    if framing == 'iterable':
        environ['wsgi.input'] = iter([data[:3], data[3:]])
    else:
        environ['wsgi.input'] = io.BytesIO(data)
    if framing == 'length' and body is not None:
        environ['CONTENT_LENGTH'] = str(len(data))
    if framing == 'chunked':
        environ['HTTP_TRANSFER_ENCODING'] = 'chunked'
    return environ


def _glance_path(path: str) -> str | None:
    """PATH_INFO the v2 router sees (urlmap and version negotiation)."""
    for prefix in ('/v2.1/', '/v2/'):
        if path.startswith(prefix):
            return '/' + path[len(prefix):]
    return None


def _glance_route(api: Any, matched: list[str], environ: dict[str, Any]
                  ) -> tuple[tuple[str, str] | None, str | None]:
    """(resource, action) Glance dispatches to, and the method its
    router matched with (``None`` when routing failed)."""
    path = _glance_path(environ['PATH_INFO'])
    if path is None:
        return None, None
    environ['PATH_INFO'] = path
    matched.clear()
    _Stub.dispatched.clear()
    _Stub.bodies.clear()
    try:
        response = webob.Request(environ).get_response(api)
    except Exception:  # routes fails on it (a form it cannot parse)
        return None, 'failed'
    method = matched[0] if matched else None
    if response.status_int != 200 or not _Stub.dispatched:
        return None, method
    return _Stub.dispatched[0], method


def _glance_body(deserializer: Any, action: tuple[str, str],
                 environ: dict[str, Any]) -> tuple[str, Any]:
    """What Glance's deserializer makes of the body: ``('body', doc)``,
    ``('none', None)`` when it reads none, ``('refused', status)``."""
    from glance.common import wsgi
    req = wsgi.Request(environ)
    if action == ('images', 'update') and req.content_type not in (
            PATCH_V20, PATCH_V21):
        return 'none', None  # 415 before the body is read
    try:
        found = deserializer.default(req)
    except webob.exc.HTTPException as exc:
        return 'refused', exc.status_int
    except UnicodeDecodeError:
        return 'refused', 400  # Glance's Resource answers 400
    if 'body' not in found:
        return 'none', None
    return 'body', found['body']


def _stack_body(environ: dict[str, Any]) -> tuple[str, Any]:
    reading.of(environ)  # at the entry, as in the stack (forms parsed)
    req = Request(environ)
    try:
        document = req.json_body(LIMIT)
    except webob.exc.HTTPException as exc:
        return 'refused', exc.status_int
    return ('none', None) if document is None else ('body', document)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=1000, deadline=None)
@example(method='POST', path='/v2/images', query='',
         content_type='application/x-www-form-urlencoded',
         body=b'{"name": "x"}', framing='length')
@given(method=st.sampled_from(METHODS), path=st.sampled_from(PATHS),
       query=st.sampled_from(QUERIES),
       content_type=st.sampled_from(CONTENT_TYPES), body=bodies,
       framing=st.sampled_from(['length', 'chunked', 'iterable', 'none']))
def test_the_stack_reads_what_glance_acts_on(
        glance_router: tuple[Any, list[str]], deserializer: Any,
        method: str, path: str, query: str, content_type: str | None,
        body: bytes | None, framing: str) -> None:
    spec = (method, path, query, content_type, body, framing)
    ours = reading.of(_environ(*spec))
    api, matched = glance_router
    action, glance_method = _glance_route(api, matched, _environ(*spec))

    if glance_method == 'failed':
        return  # Glance's router fails on it (500): anything is better
    if glance_method not in (None, method):
        # Glance's router would act on an override: refused at the entry.
        assert ours.refusal is not None, spec
        assert ours.refusal.status_int == 400
        return
    if ours.refusal is not None:
        return  # refused: nothing reaches Glance
    if action is None or action not in ROUTE_OF:
        return  # Glance answers it itself (404, 405), or not ours
    assert ours.route.name == ROUTE_OF[action], spec
    assert ours.method == glance_method, spec
    if action in BODY_ACTIONS:
        theirs = _Stub.bodies[0]
        mine = _stack_body(_environ(*spec))
        if theirs[0] == 'body':
            assert mine[0] == 'body' and _same(mine[1], theirs[1]), spec
        elif theirs[0] == 'none':
            assert mine == ('none', None), spec
        else:
            assert mine[0] == 'refused' and mine[1] == theirs[1], spec


@pytest.mark.parametrize('query,content_type,body,refused', [
    pytest.param('_method=PATCH', None, None, True, id='query'),
    pytest.param('_method=patch', None, None, True, id='lower-case'),
    pytest.param('_method=', None, None, False, id='empty'),
    pytest.param('_method=%ff', None, None, False, id='undecodable'),
    pytest.param('%5Fmethod=PATCH', None, None, False, id='escaped-name'),
    pytest.param('', 'application/x-www-form-urlencoded',
                 b'_method=DELETE', True, id='form'),
    pytest.param('x=_method', 'application/x-www-form-urlencoded',
                 b'_method=DELETE', False, id='form-after-query-mention'),
    pytest.param('', 'APPLICATION/X-WWW-FORM-URLENCODED',
                 b'_method=DELETE', False, id='form-upper-case'),
    pytest.param('', 'text/plain', b'_method=DELETE', False,
                 id='not-a-form'),
])
def test_method_overrides_are_refused_where_routes_acts(
        query: str, content_type: str | None, body: bytes | None,
        refused: bool) -> None:
    environ = _environ('POST', f'/v2/images/{IMG}', query, content_type,
                       body, 'length')
    found = reading.of(environ)
    assert (found.refusal is not None) is refused
    if refused:
        assert found.refusal is not None
        response = webob.Request(environ).get_response(found.refusal)
        assert response.status_int == 400
        assert "Method override ('_method'" in response.text
    # Whatever happened, the body is still there for the registry.
    assert webob.Request(environ).body == (body or b'')


def test_an_iterable_input_gets_a_file_interface() -> None:
    environ = _environ('PUT', f'/v2/images/{IMG}/file', '',
                       'application/octet-stream', None, 'none')
    environ['wsgi.input'] = (chunk for chunk in [b'ab', b'', b'c\nde'])
    reading.of(environ)
    stream = environ['wsgi.input']
    assert 'HTTP_TRANSFER_ENCODING' not in environ
    assert stream.read(1) == b'a'
    assert stream.readline() == b'bc\n'
    assert stream.read() == b'de'
    assert stream.read() == b''


def test_a_rewritten_request_is_read_again() -> None:
    environ = _environ('GET', '/v2/images', 'a=1', None, None, 'none')
    first = reading.of(environ)
    assert reading.of(environ) is first
    environ['QUERY_STRING'] = '_method=DELETE'
    again = reading.of(environ)
    assert again is not first and again.refusal is not None
