"""Image locations hidden and guarded by policy (issue #4), on a real Glance.

Glance here shows ``locations`` and ``direct_url`` to every reader
(``show_multiple_locations`` and ``show_image_direct_url`` are on): the
bare endpoint is the witness of what a caller would see without the stack,
and of what Glance stored after a request the stack refused.

Personas, for an image of project ``owner``:

============  ===================================  =====  ======
persona       identity                             sees   writes
============  ===================================  =====  ======
member        reader, member of ``owner``          no     no
reader        reader of ``owner``                  no     no
other         reader, member of another project    no     no
admin         admin of another project             yes    yes
service       member of ``owner``, service token   yes    yes
service-user  role ``service``, another project    yes    yes
============  ===================================  =====  ======

Images are ``community``, so that another project sees them at all.

Reads run on the session Glance (``glance_server``: a file store, so
locations are ``file://`` paths).  Writes run on a Glance of this module
that also has an ``http`` store and a local data server (:func:`web`): an
``http://`` location is the only kind Glance accepts from a client, so only
there can Nova add one, and only there does bare Glance accept a member's
location write, which is what the stack must stop (OSSN-0065).

Paths are sent byte for byte with ``http.client`` (``requests`` folds
``%69`` into ``i`` and drops ``/./``).
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import glanceclient
import glanceclient.exc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.functional.conftest import TIMEOUT, headers
from tests.local import identity
from tests.local.server import GlanceServer

pytestmark = [pytest.mark.functional, pytest.mark.timeout(300)]

PATCH21 = 'application/openstack-images-v2.1-json-patch'
PATCH20 = 'application/openstack-images-v2.0-json-patch'
#: Keys the stack hides (``loc_url``: the input of location_import tasks).
HIDDEN = ('locations', 'direct_url', 'loc_url')
ADMIN_ROLES = identity.ADMIN_ROLES
#: What the stack answers when it refuses (nothing reached Glance).
REFUSED = {
    'read': 'You are not authorized to list the locations of this image.',
    'write': 'You are not authorized to change the locations of this image.',
    'add': 'You are not authorized to add locations to this image.',
    'delete': 'You are not authorized to delete the locations of this '
              'image.',
}
DATA = b'hello'


@dataclasses.dataclass(frozen=True)
class Persona:
    """A caller, relative to the owner of the images it looks at."""

    name: str
    roles: tuple[str, ...]
    own: bool = True
    service: bool = False
    allowed: bool = False  # every instance_aware:*_image_location rule

    def project(self, scene: Scene) -> str:
        return scene.owner if self.own else scene.other

    def headers(self, scene: Scene) -> dict[str, str]:
        return headers(self.project(scene), self.roles,
                       service=self.service)


MEMBER = Persona('member', ('reader', 'member'))
READER = Persona('reader', ('reader',))
OTHER = Persona('other', ('reader', 'member'), own=False)
ADMIN = Persona('admin', ADMIN_ROLES, own=False, allowed=True)
SERVICE = Persona('service', ('reader', 'member'), service=True,
                  allowed=True)
#: A service user (role ``service``) of its own project: Glance's own
#: ``fetch_image_location`` lets it list locations, the member with a
#: service token (``SERVICE``) not.
SERVICE_USER = Persona('service-user', ('reader', 'service'), own=False,
                       allowed=True)
PERSONAS = (MEMBER, READER, OTHER, ADMIN, SERVICE)
UNAUTHORISED = tuple(p for p in PERSONAS if not p.allowed)
ANONYMOUS = None


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode('utf-8', 'replace')

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """HTTP with the path sent exactly as written."""

    def __init__(self, base_url: str) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname, parsed.port
        self.netloc = parsed.netloc.encode()

    def request(self, method: str, path: str,
                hdrs: dict[str, str] | None = None,
                body: Any = None, content_type: str | None = None
                ) -> Response:
        sent = {'Accept': 'application/json', **(hdrs or {})}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(
                body).encode('utf-8')
            sent['Content-Type'] = content_type or 'application/json'
        return self.exchange(method, path, sent, data)

    def exchange(self, method: str, path: str, sent: dict[str, str],
                 data: bytes | None) -> Response:
        """One request on a connection of its own, headers as given."""
        connection = http.client.HTTPConnection(self.host, self.port,
                                                timeout=TIMEOUT)
        try:
            connection.request(method, path, body=data, headers=sent)
            answer = connection.getresponse()
            return Response(answer.status, dict(answer.getheaders()),
                            answer.read())
        finally:
            connection.close()


@dataclasses.dataclass
class Scene:
    """Projects and images of one test; ``stack``/``bare`` endpoints."""

    stack: Raw
    bare: Raw
    owner: str = dataclasses.field(
        default_factory=lambda: uuid.uuid4().hex)
    other: str = dataclasses.field(
        default_factory=lambda: uuid.uuid4().hex)
    name: str = dataclasses.field(
        default_factory=lambda: f'loc-{uuid.uuid4().hex[:12]}')
    #: Images a property test makes once for all its examples.
    kept: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_(self, persona: Persona | None) -> dict[str, str]:
        return {} if persona is None else persona.headers(self)

    def create(self, persona: Persona | None = None, **body: Any
               ) -> dict[str, Any]:
        body = {'name': self.name, 'disk_format': 'raw',
                'container_format': 'bare', 'visibility': 'community',
                **body}
        created = self.stack.request('POST', '/v2/images',
                                     self.as_(persona or MEMBER), body)
        assert created.status == 201, created.text
        image: dict[str, Any] = created.json()
        return image

    def upload(self, image_id: str) -> None:
        uploaded = self.stack.request(
            'PUT', f'/v2/images/{image_id}/file', self.as_(MEMBER), DATA,
            'application/octet-stream')
        assert uploaded.status == 204, uploaded.text

    def active(self, **body: Any) -> dict[str, Any]:
        """An active image with data: Glance gives it a location."""
        image = self.create(**body)
        self.upload(image['id'])
        return self.stored(image['id'])

    def stored(self, image_id: str) -> dict[str, Any]:
        """The image as Glance itself shows it (locations included)."""
        shown = self.bare.request('GET', f'/v2/images/{image_id}',
                                  headers(self.owner, ADMIN_ROLES))
        assert shown.status == 200, shown.text
        image: dict[str, Any] = shown.json()
        return image

    def urls(self, image_id: str) -> list[str]:
        return [loc['url'] for loc in self.stored(image_id)['locations']]

    def patch(self, persona: Persona | None, image_id: str, ops: Any,
              media: str = PATCH21, path: str | None = None,
              bare: bool = False) -> Response:
        endpoint = self.bare if bare else self.stack
        return endpoint.request(
            'PATCH', path or f'/v2/images/{image_id}', self.as_(persona),
            ops if isinstance(ops, bytes) else json.dumps(ops).encode(),
            media)


def strip(document: Any) -> Any:
    """``document`` without any hidden key, at any depth."""
    if isinstance(document, list):
        return [strip(item) for item in document]
    if isinstance(document, dict):
        return {k: strip(v) for k, v in document.items() if k not in HIDDEN}
    return document


def hidden_keys(document: Any) -> set[str]:
    """Hidden keys present anywhere in ``document``."""
    if isinstance(document, list):
        return set().union(*(hidden_keys(item) for item in document))
    if isinstance(document, dict):
        found = {k for k in document if k in HIDDEN}
        return found.union(*(hidden_keys(v) for v in document.values()))
    return set()


def assert_no_location(response: Response, *secrets: str) -> None:
    """Nothing in ``response`` reveals a location."""
    text = response.text
    assert 'file://' not in text, text
    for secret in secrets:
        assert secret not in text, text
    if response.body and 'json' in response.headers.get('Content-Type', ''):
        assert hidden_keys(response.json()) == set(), text


def message(response: Response) -> str:
    """The explanation of an error answered as JSON, Glance's way
    (every request here accepts JSON)."""
    document = response.json()
    assert set(document) == {'message', 'code', 'title'}, document
    assert document['code'].startswith(str(response.status))
    text: str = document['message']
    return text


def assert_as_bare(scene: Scene, persona: Persona | None, method: str,
                   path: str, *secrets: str) -> tuple[Response, Response]:
    """The stack answers ``persona`` what bare Glance answers, minus
    locations unless the persona may see them, or refuses with 403.

    ``secrets`` are location URLs that must not appear when hidden.
    """
    hdrs = scene.as_(persona)
    bare = scene.bare.request(method, path, hdrs)
    through = scene.stack.request(method, path, hdrs)
    assert through.status < 500, (path, through.text)
    # Links in version documents name the endpoint that answered.
    through_body = through.body.replace(scene.stack.netloc, b'ENDPOINT')
    bare_body = bare.body.replace(scene.bare.netloc, b'ENDPOINT')
    if persona is not None and persona.allowed:
        assert (through.status, through_body) == (bare.status, bare_body), (
            method, path, through.text, bare.text)
        return through, bare
    assert_no_location(through, *secrets)
    if through.status == 403 and (method == 'HEAD' or message(
            through).startswith(tuple(REFUSED.values()))):
        # Stricter than Glance, never looser: the stack refused.
        assert bare.status < 500, (method, path, bare.text)
        return through, bare
    assert through.status == bare.status, (method, path, through.text)
    if bare.status == 200 and bare.body:
        assert through.json() == strip(bare.json()), (method, path)
    elif 'file://' not in bare.text:
        assert through_body == bare_body, (method, path, through.text)
    return through, bare


def _wait(predicate: Callable[[], bool], what: str,
          timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(interval)


def _settle(scene: Scene, image_id: str) -> list[dict[str, Any]]:
    """Wait until the image has tasks and all are over; its tasks.

    Glance runs location_import in a thread of its own.  On SQLite, a
    task list polled while that thread starts can make it fail to start
    (silently: the task stays pending), so the first look waits until a
    task has had time to finish, and later looks are spaced.
    """
    found: list[dict[str, Any]] = []
    time.sleep(0.5)

    def over() -> bool:
        found[:] = scene.bare.request(
            'GET', f'/v2/images/{image_id}/tasks',
            headers(scene.other, ADMIN_ROLES)).json()['tasks']
        return bool(found) and all(
            t['status'] in ('success', 'failure') for t in found)

    _wait(over, f'the tasks of image {image_id}', interval=0.3)
    return found


# -- the Glance of this module: an http store and its data ---------------


class _DataHandler(http.server.BaseHTTPRequestHandler):
    """Serves :data:`DATA` at every path (the ``http`` store's image)."""

    def _headers(self) -> None:
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(DATA)))
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        self._headers()
        self.wfile.write(DATA)

    def log_message(self, *args: Any) -> None:
        pass


@dataclasses.dataclass
class Web:
    url: str
    bare_url: str
    data_url: str
    state_dir: str

    def location(self) -> str:
        """A fresh ``http://`` location Glance accepts."""
        return f'{self.data_url}/{uuid.uuid4().hex}.img'


@pytest.fixture(scope='module')
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """A Glance with the stack and an ``http`` store next to ``fs``."""
    data = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _DataHandler)
    thread = threading.Thread(target=data.serve_forever, daemon=True)
    thread.start()
    port = data.server_address[1]
    state = tmp_path_factory.mktemp('glance-web')
    overrides = state / 'glance-api.conf.d'
    overrides.mkdir()
    (overrides / 'web.conf').write_text(
        '[DEFAULT]\nenabled_backends = fs:file, web:http\n'
        '[import_filtering_opts]\n'
        f'allowed_hosts = [127.0.0.1]\nallowed_ports = [{port}]\n')
    try:
        with GlanceServer(state, max_lifetime=900) as server:
            yield Web(server.url, server.bare_url,
                      f'http://127.0.0.1:{port}/data', server.state_dir)
    finally:
        data.shutdown()
        data.server_close()


@pytest.fixture
def scene(glance_server: GlanceServer) -> Scene:
    return Scene(Raw(glance_server.url), Raw(glance_server.bare_url))


@pytest.fixture
def web_scene(web: Web) -> Scene:
    return Scene(Raw(web.url), Raw(web.bare_url))


def _client(url: str, project: str, roles: tuple[str, ...],
            service: bool = False) -> Any:
    session = identity.session_for(project, roles, service=service,
                                   timeout=TIMEOUT)
    return glanceclient.Client('2', session=session, endpoint_override=url)


# == reads ================================================================

SHOW = [
    '/v2/images/{i}', '/v2.0/images/{i}', '/v2.1/images/{i}',
    '/v2.18/images/{i}', '//v2//images//{i}', '/v2/%69mages/{i}',
    '/v2/images%2F{i}', '/v2/images/{i}?x=1&fields=locations',
    # Spellings Glance does not answer with the image:
    '/v2/images/{i}/', '/V2/images/{i}', '/v2/IMAGES/{i}',
    '/v2/./images/{i}', '/v2.99/images/{i}',
]
LIST = [
    '/v2/images?{q}', '/v2.1/images?{q}', '//v2//images?{q}',
    '/v2/%69mages?{q}', '/v2/images?{q}&sort_key=name&sort_dir=asc',
    '/v2/images/?{q}', '/V2/images?{q}',
]
TASKS = [
    '/v2/images/{i}/tasks', '/v2.1/images/{i}/tasks',
    '//v2/images/{i}//tasks', '/v2/images/{i}/%74asks',
]
LOCATIONS = [
    '/v2/images/{i}/locations', '/v2.1/images/{i}/locations',
    '//v2/images/{i}//locations', '/v2/images/{i}/%6cocations',
    '/v2/images/{i}/locations?x=1', '/v2/images/{i}/LOCATIONS',
    '/v2/images/{i}/locations/',
]

PATCH_PATHS = ['/v2/images/{i}', '/v2.1/images/{i}', '//v2//images/{i}',
               '/v2/%69mages/{i}', '/v2/images/{i}?x=1']


@pytest.mark.parametrize('persona', PERSONAS, ids=lambda p: p.name)
def test_show_hides_locations_through_every_spelling(
        scene: Scene, persona: Persona) -> None:
    image = scene.active()
    url = image['direct_url']
    assert [loc['url'] for loc in image['locations']] == [url]
    assert url.startswith('file://')

    for spelling in SHOW:
        path = spelling.format(i=image['id'])
        for method in ('GET', 'HEAD'):
            assert_as_bare(scene, persona, method, path, url)

    canonical = scene.stack.request('GET', f'/v2/images/{image["id"]}',
                                    scene.as_(persona))
    assert canonical.status == 200, canonical.text
    shown = canonical.json()
    if persona.allowed:
        assert (shown['direct_url'], shown['locations']) == (
            url, [{'url': url, 'metadata': {'store': 'fs'}}])
        assert shown == image
    else:
        assert 'locations' not in shown and 'direct_url' not in shown
        assert shown == strip(image)


@pytest.mark.parametrize('persona', PERSONAS, ids=lambda p: p.name)
def test_list_items_and_every_page_hide_locations(
        scene: Scene, persona: Persona) -> None:
    images = [scene.active() for _ in range(3)]
    urls = [image['direct_url'] for image in images]
    query = urllib.parse.urlencode({'name': scene.name,
                                    'visibility': 'community'})
    for spelling in LIST:
        assert_as_bare(scene, persona, 'GET', spelling.format(q=query),
                       *urls)

    # Paging: every page, followed by its ``next`` link, is scrubbed.
    seen: list[dict[str, Any]] = []
    path: str | None = f'/v2/images?{query}&limit=1'
    while path:
        through, bare = assert_as_bare(scene, persona, 'GET', path, *urls)
        assert through.status == 200, through.text
        page = through.json()
        assert page['first'] == bare.json()['first']
        seen += page['images']
        path = page.get('next')
    assert len(seen) == 3
    by_id = {image['id']: image for image in images}
    for item in seen:
        expected = by_id[item['id']]
        assert item == (expected if persona.allowed else strip(expected))


@pytest.mark.parametrize('persona', PERSONAS, ids=lambda p: p.name)
def test_create_and_update_responses_hide_locations(
        scene: Scene, persona: Persona) -> None:
    project = persona.project(scene)
    for spelling in ('/v2/images', '/v2.1/images', '//v2//%69mages'):
        created = scene.stack.request(
            'POST', spelling, scene.as_(persona),
            {'name': scene.name, 'disk_format': 'raw',
             'container_format': 'bare'})
        if persona is READER:
            assert created.status == 403, created.text  # Glance's add_image
            continue
        assert created.status == 201, (spelling, created.text)
        body = created.json()
        assert body['owner'] == project
        stored = scene.stored(body['id'])
        assert stored['locations'] == []  # Glance shows the (empty) list
        assert body == (stored if persona.allowed else strip(stored))
    if persona is READER:
        return

    # Data, so that the image has a location, then updates.
    uploaded = scene.stack.request(
        'PUT', f'/v2/images/{body["id"]}/file', scene.as_(persona), DATA,
        'application/octet-stream')
    assert uploaded.status == 204, uploaded.text
    updates: list[tuple[str, str, Any]] = [
        (spelling, PATCH21, [{'op': 'replace', 'path': '/name',
                              'value': f'{scene.name}-{n}'}])
        for n, spelling in enumerate(PATCH_PATHS)]
    updates.append(('/v2/images/{i}', PATCH20,
                    [{'replace': '/name', 'value': scene.name + '-v2.0'}]))
    for spelling, media, document in updates:
        updated = scene.patch(persona, body['id'], document, media,
                              path=spelling.format(i=body['id']))
        assert updated.status == 200, (spelling, updated.text)
        stored = scene.stored(body['id'])
        assert stored['name'] == document[0]['value']
        assert stored['direct_url'].startswith('file://')
        if persona.allowed:
            assert updated.json() == stored
        else:
            assert updated.json() == strip(stored)
            assert_no_location(updated, stored['direct_url'])


@pytest.mark.parametrize('persona', [*PERSONAS, SERVICE_USER],
                         ids=lambda p: p.name)
def test_locations_api_needs_fetch_image_location(
        scene: Scene, persona: Persona) -> None:
    image = scene.active()
    url = image['direct_url']
    for spelling in LOCATIONS:
        path = spelling.format(i=image['id'])
        for method in ('GET', 'HEAD'):
            assert_as_bare(scene, persona, method, path, url)

    through, bare = assert_as_bare(
        scene, persona, 'GET', f'/v2/images/{image["id"]}/locations', url)
    if persona is ADMIN or persona is SERVICE_USER:
        assert through.json() == [{'url': url,
                                   'metadata': {'store': 'fs'}}]
    elif persona is SERVICE:
        # Passed by the stack; Glance's own fetch_image_location wants
        # the service *role*, not a service token.
        assert through.status == 403
        assert message(through) == (
            'You are not authorized to complete fetch_image_location '
            'action.<br /><br />\n\n\n')
    else:
        assert through.status == 403
        assert message(through).startswith(REFUSED['read'])
        assert bare.status == 403  # Glance refuses them too: no oracle


@pytest.mark.parametrize('persona', [*PERSONAS, ANONYMOUS],
                         ids=lambda p: p.name if p else 'anonymous')
def test_task_input_hides_loc_url(scene: Scene,
                                  persona: Persona | None) -> None:
    source = scene.active()
    url = source['direct_url']
    queued = scene.create()
    # Nova's 2.17 call: Glance accepts it and runs a location_import task
    # (which fails here: Glance takes no file:// location from a client).
    added = scene.stack.request('POST',
                                f'/v2/images/{queued["id"]}/locations',
                                scene.as_(SERVICE), {'url': url})
    assert added.status == 202, added.text
    tasks = _settle(scene, queued['id'])
    assert [t['type'] for t in tasks] == ['location_import']
    assert tasks[0]['input']['loc_url'] == url

    for spelling in TASKS:
        through, _ = assert_as_bare(
            scene, persona, 'GET', spelling.format(i=queued['id']), url)
        if persona is None:
            assert through.status == 401
            continue
        assert through.status == 200, through.text
        if persona is OTHER:
            # Glance shows a project only its own tasks.
            assert through.json() == {'tasks': []}
            continue
        task = through.json()['tasks'][0]
        if persona.allowed:
            assert task['input']['loc_url'] == url
        else:
            assert task['input'] == {'image_id': queued['id'],
                                     'validation_data': {}}


def test_error_bodies_carry_no_location(scene: Scene) -> None:
    image = scene.active()
    url = image['direct_url']
    replace = [{'op': 'replace', 'path': '/locations',
                'value': [{'url': 'http://example.com/x', 'metadata': {}}]}]

    # Bare Glance lets a member try, and its 400 quotes the location.
    leaked = scene.patch(MEMBER, image['id'], replace, bare=True)
    assert leaked.status == 400
    assert url in leaked.text and 'Original locations is not empty' in (
        leaked.text)
    refused = scene.patch(MEMBER, image['id'], replace)
    assert refused.status == 403
    assert_no_location(refused, url)
    assert message(refused).startswith(REFUSED['write'])
    # An allowed caller gets Glance's answer unchanged.
    for persona in (ADMIN, SERVICE):
        through = scene.patch(persona, image['id'], replace)
        assert (through.status, through.body) == (400, leaked.body)

    # Glance echoes a bad value; a store URL in it is redacted for
    # callers who may not see locations.
    echo = [{'op': 'add', 'path': '/echo', 'value': {'url': url}}]
    bare = scene.patch(MEMBER, image['id'], echo, bare=True)
    assert bare.status == 400 and url in bare.text
    through = scene.patch(MEMBER, image['id'], echo)
    assert through.status == 400
    assert_no_location(through, url)
    assert '[location hidden]' in through.text
    assert through.text == bare.text.replace(url, '[location hidden]')
    assert scene.patch(ADMIN, image['id'], echo).body == bare.body
    assert scene.urls(image['id']) == [url]


def test_images_built_by_the_stack_hide_locations(scene: Scene) -> None:
    """The list answered from the stack's own store (instance keys)."""
    instance = str(uuid.uuid4())
    image = scene.active(instance_uuid=instance, image_type='snapshot')
    url = image['direct_url']
    query = f'/v2/images?instance_uuid={instance}&image_type=snapshot'
    for persona in PERSONAS:
        listed = scene.stack.request('GET', query + '&visibility=community',
                                     scene.as_(persona))
        assert listed.status == 200, listed.text
        items = listed.json()['images']
        if persona is OTHER:
            # Instance relations are the owner's: none for another project.
            assert items == []
            continue
        assert [i['id'] for i in items] == [image['id']]
        item = items[0]
        assert item['instance_uuid'] == instance
        if persona.allowed:
            assert (item['direct_url'], item['locations']) == (
                url, image['locations'])
        else:
            assert_no_location(listed, url)


# == writes ===============================================================

def _location_ops(location: str) -> list[tuple[str, str, Any]]:
    """(what, media type, document) of every way to write a location."""
    value = {'url': location, 'metadata': {}}
    return [
        ('add', PATCH21, [{'op': 'add', 'path': '/locations/-',
                           'value': value}]),
        ('add-0', PATCH21, [{'op': 'add', 'path': '/locations/0',
                             'value': value}]),
        ('add-v2.0', PATCH20, [{'add': '/locations/-', 'value': value}]),
        ('replace', PATCH21, [{'op': 'replace', 'path': '/locations',
                               'value': [value]}]),
        ('replace-v2.0', PATCH20, [{'replace': '/locations',
                                    'value': [value]}]),
        ('remove', PATCH21, [{'op': 'remove', 'path': '/locations/0'}]),
        ('remove-v2.0', PATCH20, [{'remove': '/locations/0'}]),
        # Pointers Glance decodes to /locations/...:
        ('doubled-slash', PATCH21, [{'op': 'add', 'path': '//locations/-',
                                     'value': value}]),
        ('padded', PATCH21, [{'op': 'add', 'path': '/ locations\t/-',
                              'value': value}]),
        ('after-benign-op', PATCH21, [
            {'op': 'add', 'path': '/benign', 'value': 'x'},
            {'op': 'remove', 'path': '/\u00a0locations/0'}]),
    ]


@pytest.mark.parametrize('persona', UNAUTHORISED, ids=lambda p: p.name)
def test_location_writes_are_refused_and_never_reach_glance(
        web: Web, web_scene: Scene, persona: Persona) -> None:
    scene = web_scene
    image = scene.active()
    before = scene.stored(image['id'])
    queued = scene.create()
    location = web.location()

    for what, media, document in _location_ops(location):
        for spelling in PATCH_PATHS:
            path = spelling.format(i=image['id'])
            refused = scene.patch(persona, image['id'], document, media,
                                  path=path)
            assert refused.status == 403, (what, path, refused.text)
            assert message(refused).startswith(REFUSED['write']), what
            assert_no_location(refused, location, before['direct_url'])

    for spelling in ('/v2/images/{i}/locations', '/v2.1/images/{i}/locations',
                     '//v2/images/{i}//locations',
                     '/v2/images/{i}/%6cocations'):
        refused = scene.stack.request(
            'POST', spelling.format(i=queued['id']), scene.as_(persona),
            {'url': location, 'validation_data': {}})
        assert refused.status == 403, refused.text
        assert message(refused).startswith(REFUSED['add'])

    for spelling in ('/v2/stores/fs/{i}', '//v2/stores//fs/{i}',
                     '/v2.1/stores/fs/{i}'):
        refused = scene.stack.request(
            'DELETE', spelling.format(i=image['id']), scene.as_(persona))
        assert refused.status == 403, refused.text
        assert message(refused).startswith(REFUSED['delete'])

    # Glance changed nothing, and was never asked (no task, no update).
    after = scene.stored(image['id'])
    assert after == before
    assert 'benign' not in after
    assert scene.stored(queued['id'])['status'] == 'queued'
    tasks = scene.bare.request('GET', f'/v2/images/{queued["id"]}/tasks',
                               scene.as_(MEMBER)).json()
    assert tasks == {'tasks': []}


def test_bare_glance_lets_a_member_write_locations(
        web: Web, web_scene: Scene) -> None:
    """Why the stack matters: Glance's defaults let project members swap
    locations (OSSN-0065)."""
    scene = web_scene
    image = scene.active()
    location = web.location()
    added = scene.patch(MEMBER, image['id'],
                        [{'op': 'add', 'path': '/locations/-',
                          'value': {'url': location, 'metadata': {}}}],
                        bare=True)
    assert added.status == 200, added.text
    assert scene.urls(image['id']) == [image['direct_url'], location]
    queued = scene.create()
    posted = scene.bare.request('POST',
                                f'/v2/images/{queued["id"]}/locations',
                                scene.as_(MEMBER), {'url': location})
    assert posted.status == 202, posted.text
    assert [t['status'] for t in _settle(scene, queued['id'])] == [
        'success']
    assert scene.urls(queued['id']) == [location]


@pytest.mark.parametrize('persona', [ADMIN, SERVICE], ids=lambda p: p.name)
def test_allowed_callers_write_locations(
        web: Web, web_scene: Scene, persona: Persona) -> None:
    scene = web_scene
    image = scene.active()
    first = image['direct_url']
    added: list[str] = []
    for media, spelling in ((PATCH21, '/v2.1/images/{i}'),
                            (PATCH20, '//v2/images/{i}')):
        location = web.location()
        document: Any = (
            [{'op': 'add', 'path': '/locations/-',
              'value': {'url': location, 'metadata': {}}}]
            if media == PATCH21 else
            [{'add': '/locations/-',
              'value': {'url': location, 'metadata': {}}}])
        answer = scene.patch(persona, image['id'], document, media,
                             path=spelling.format(i=image['id']))
        assert answer.status == 200, answer.text
        added.append(location)
        assert answer.json() == scene.stored(image['id'])
        assert [loc['url'] for loc in answer.json()['locations']] == [
            first, *added]

    # Replace (metadata only, as Glance allows on an active image).
    stored = scene.stored(image['id'])
    value = [{'url': loc['url'], 'metadata': {'n': str(i)}}
             for i, loc in enumerate(stored['locations'])]
    replaced = scene.patch(persona, image['id'],
                           [{'op': 'replace', 'path': '/locations',
                             'value': value}])
    assert replaced.status == 200, replaced.text
    assert [loc['metadata'] for loc in replaced.json()['locations']] == [
        {'n': '0', 'store': 'fs'}, {'n': '1', 'store': 'web'},
        {'n': '2', 'store': 'web'}]

    removed = scene.patch(persona, image['id'],
                          [{'op': 'remove', 'path': '/locations/2'}])
    if persona is ADMIN:
        assert removed.status == 200, removed.text
        assert scene.urls(image['id']) == [first, added[0]]
    else:
        # Passed by the stack; Glance's delete_image_location is admin
        # only by default.
        assert removed.status == 403
        assert message(removed).startswith(
            'You are not authorized to complete delete_image_location')
        assert scene.urls(image['id']) == [first, *added]

    # The 2.17 API on a queued image.
    queued = scene.create()
    location = web.location()
    posted = scene.stack.request('POST',
                                 f'/v2.1/images/{queued["id"]}/locations',
                                 scene.as_(persona), {'url': location})
    assert posted.status == 202, posted.text
    assert [(t['status'], t['input']['loc_url'])
            for t in _settle(scene, queued['id'])] == [('success', location)]
    assert scene.stored(queued['id'])['status'] == 'active'
    assert scene.urls(queued['id']) == [location]
    shown = scene.stack.request('GET', f'/v2/images/{queued["id"]}',
                                scene.as_(persona)).json()
    assert shown['direct_url'] == location
    assert shown == scene.stored(queued['id'])


def test_nova_works_through_glanceclient(web: Web, web_scene: Scene) -> None:
    """Nova, a member's token plus a service token, through glanceclient:
    sees locations, adds them both ways; the member alone does not."""
    scene = web_scene
    nova = _client(web.url, scene.owner, SERVICE.roles, service=True)
    user = _client(web.url, scene.owner, MEMBER.roles)
    bare = _client(web.bare_url, scene.owner, ADMIN_ROLES)

    # Snapshot with a location added by PATCH (add /locations/-).
    snapshot = nova.images.create(name=scene.name, disk_format='raw',
                                  container_format='bare')
    location = web.location()
    updated = nova.images.add_location(snapshot['id'], location, {})
    assert updated['status'] == 'active'
    assert updated['direct_url'] == location
    assert [loc['url'] for loc in updated['locations']] == [location]
    assert dict(nova.images.get(snapshot['id'])) == dict(
        bare.images.get(snapshot['id']))

    # The 2.17 API (POST /v2/images/{id}/locations).
    second = nova.images.create(name=scene.name, disk_format='raw',
                                container_format='bare')
    location2 = web.location()
    shown = nova.images.add_image_location(second['id'], location2)
    assert shown['id'] == second['id']
    _settle(scene, second['id'])
    fetched = nova.images.get(second['id'])
    assert fetched['direct_url'] == location2
    assert fetched['size'] == len(DATA)
    tasks = nova.images.get_associated_image_tasks(second['id'])['tasks']
    assert [(t['type'], t['status'], t['input']['loc_url'])
            for t in tasks] == [('location_import', 'success', location2)]
    listed = {i['id']: i for i in nova.images.list(
        filters={'name': scene.name})}
    assert listed[snapshot['id']]['direct_url'] == location
    assert b''.join(nova.images.data(second['id'])) == DATA

    # The user alone: no location anywhere, no way to add one.
    for image_id in (snapshot['id'], second['id']):
        image = user.images.get(image_id)
        assert 'locations' not in image and 'direct_url' not in image
        assert image['id'] == image_id
    for item in user.images.list(filters={'name': scene.name}):
        assert 'locations' not in item and 'direct_url' not in item
    user_tasks = user.images.get_associated_image_tasks(second['id'])
    assert 'loc_url' not in user_tasks['tasks'][0]['input']
    third = user.images.create(name=scene.name, disk_format='raw',
                               container_format='bare')
    with pytest.raises(glanceclient.exc.HTTPForbidden, match='not author'):
        user.images.add_location(third['id'], web.location(), {})
    with pytest.raises(glanceclient.exc.HTTPForbidden, match='not author'):
        user.images.add_image_location(third['id'], web.location())
    with pytest.raises(glanceclient.exc.HTTPForbidden, match='not author'):
        user.images.get_image_locations(snapshot['id'])
    assert bare.images.get(third['id'])['status'] == 'queued'
    assert list(bare.images.get(third['id'])['locations']) == []


# == properties ===========================================================

_VERSIONS = st.sampled_from(['v2'] * 4 + ['v2.0', 'v2.1', 'v2.17', 'v2.18',
                                            'V2', 'v2.99'])
_SLASH = st.sampled_from(['/'] * 6 + ['//', '/./'])


def _encode_some(draw: st.DrawFn, segment: str) -> str:
    """``segment`` with some characters percent-encoded, some cased."""
    chars = []
    for char in segment:
        how = draw(st.sampled_from(['keep'] * 12 + ['quote', 'upper']))
        if how == 'quote':
            chars.append(f'%{ord(char):02X}')
        elif how == 'upper':
            chars.append(char.upper())
        else:
            chars.append(char)
    return ''.join(chars)


@st.composite
def spellings(draw: st.DrawFn, *segments: str) -> str:
    """A spelling of ``/v2/<segments>`` (ids kept as they are)."""
    path = draw(_SLASH).replace('.', '') + draw(_VERSIONS)
    for segment in segments:
        if segment.startswith('{'):
            path += draw(_SLASH) + segment
        else:
            path += draw(_SLASH) + _encode_some(draw, segment)
    path += draw(st.sampled_from(['', '', '', '/', '?x=1',
                                  '?fields=locations']))
    return path


_READ_ROUTES = [('images', '{i}'), ('images', '{i}', 'locations'),
                ('images', '{i}', 'tasks'), ('images',),
                ('images', '{i}', 'members')]


@pytest.mark.timeout(240)
@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_property_no_spelling_shows_a_location_to_the_unauthorised(
        scene: Scene, data: st.DataObject) -> None:
    if not scene.kept:
        scene.kept['image'] = scene.active()
        scene.kept['queued'] = scene.create()
        added = scene.stack.request(
            'POST', f'/v2/images/{scene.kept["queued"]["id"]}/locations',
            scene.as_(SERVICE), {'url': scene.kept['image']['direct_url']})
        assert added.status == 202, added.text
        _settle(scene, scene.kept['queued']['id'])
    image, queued = scene.kept['image'], scene.kept['queued']
    route = data.draw(st.sampled_from(_READ_ROUTES))
    path = data.draw(spellings(*route)).format(
        i=data.draw(st.sampled_from([image['id'], queued['id']])))
    if route == ('images',):
        path += ('&' if '?' in path else '?') + urllib.parse.urlencode(
            {'name': scene.name, 'visibility': 'community'})
    persona = data.draw(st.sampled_from([*PERSONAS, SERVICE_USER,
                                         ANONYMOUS]))
    method = data.draw(st.sampled_from(['GET', 'GET', 'HEAD']))
    assert_as_bare(scene, persona, method, path, image['direct_url'])


_SPACE = st.sampled_from(['', '', ' ', '\t', '\u00a0', '\u3000', '\n'])


@st.composite
def pointers(draw: st.DrawFn) -> Any:
    """JSON pointers, most of them to ``/locations`` however spelled."""
    kind = draw(st.sampled_from(['locations'] * 6 + ['other', 'junk']))
    if kind == 'junk':
        return draw(st.one_of(st.none(), st.integers(), st.lists(
            st.text(max_size=3), max_size=2), st.text(max_size=8)))
    root = 'locations' if kind == 'locations' else draw(st.sampled_from(
        ['benign', 'name', 'loc~0ations', 'locations~1-', 'tags']))
    pointer = draw(st.sampled_from(['/', '/', '//', '///'])) + (
        draw(_SPACE) + root + draw(_SPACE))
    tail = draw(st.sampled_from(['', '-', '0', '1', '5', 'x', '-1']))
    if tail or draw(st.booleans()):
        pointer += '/' + draw(_SPACE) + tail
    return pointer


@st.composite
def patch_documents(draw: st.DrawFn, location: str) -> tuple[str, Any]:
    media = draw(st.sampled_from([PATCH21, PATCH20]))
    value = st.one_of(
        st.just({'url': location, 'metadata': {}}),
        st.just([{'url': location, 'metadata': {}}]),
        st.text(alphabet='abcxyz', max_size=4),
        st.just({'url': location}), st.none())
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(['add', 'replace', 'remove']))
        pointer = draw(pointers())
        raw: dict[str, Any] = (
            {'op': op, 'path': pointer} if media == PATCH21
            else {op: pointer})
        if op != 'remove' or draw(st.booleans()):
            raw['value'] = draw(value)
        ops.append(raw)
    return media, ops


def _glance_root(raw: Any, media: str) -> Any:
    """The first path element Glance decodes from an operation
    (``RequestDeserializer._decode_json_pointer``), ``None`` if none."""
    if not isinstance(raw, dict):
        return None
    if media == PATCH21:
        pointer = raw.get('path')
    else:
        found = [k for k in ('add', 'remove', 'replace') if k in raw]
        pointer = raw[found[0]] if len(found) == 1 else None
    if not isinstance(pointer, str) or not pointer.startswith('/'):
        return None
    return pointer.lstrip('/').split('/')[0].replace(
        '~1', '/').replace('~0', '~').strip()


@pytest.mark.timeout(240)
@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_property_no_patch_lets_the_unauthorised_touch_a_location(
        web: Web, web_scene: Scene, data: st.DataObject) -> None:
    scene = web_scene
    if not scene.kept:
        scene.kept['image'] = image = scene.active()
        scene.kept['urls'] = scene.urls(image['id'])
    image = scene.kept['image']
    location = web.location()
    media, ops = data.draw(patch_documents(location))
    persona = data.draw(st.sampled_from([*UNAUTHORISED, ANONYMOUS]))
    path = data.draw(spellings('images', '{i}')).format(i=image['id'])
    answer = scene.patch(persona, image['id'], ops, media, path=path)

    assert answer.status < 500, (path, ops, answer.text)
    assert_no_location(answer, location, image['direct_url'])
    touches = any(_glance_root(raw, media) == 'locations' for raw in ops)
    if touches and persona is not None:
        # Refused: by the stack (403), or before it (Glance's version
        # negotiation answers /V2/ with 300), or as malformed (400, 404).
        assert answer.status in (300, 400, 403, 404), (path, ops,
                                                       answer.text)
        if answer.status == 403:
            assert message(answer).startswith(REFUSED['write'])
    assert scene.urls(image['id']) == scene.kept['urls']
