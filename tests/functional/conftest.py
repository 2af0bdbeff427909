"""A real Glance with the stack for the whole session, and its clients.

``glance_server`` starts one gunicorn (see
:class:`tests.local.server.GlanceServer`) serving the same Glance
twice: ``url`` through the stack, ``bare_url`` without it.  It runs in a
temporary state directory, binds 127.0.0.1 only and stops by itself if
this process dies.  :func:`serving` runs every session server of the
tests (Glance, Keystone) the same way.

Callers are whoever they claim to be (the ``noauth`` flavor): every
helper takes ``project``, ``roles``, ``user`` and ``service``.

Every test in this directory is marked ``functional``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import glanceclient
import openstack.connection
import pytest
import requests

from tests.dbbackends import in_ci
from tests.local import identity
from tests.local.process import ServerError, ServerProcess
from tests.local.server import GlanceServer

#: Seconds any single HTTP call of a test may take.
TIMEOUT = 30
#: Lifetime of a session's servers: none outlives a test run for long.
SESSION_LIFETIME = 1800

Server = TypeVar('Server', bound=ServerProcess)

Roles = Sequence[str]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if 'tests/functional/' in item.nodeid:
            item.add_marker(pytest.mark.functional)


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail with ``CI=true``: a CI run never skips a server."""
    if in_ci():
        pytest.fail(f'{reason} (CI=true: these tests must run)')
    pytest.skip(reason)


@contextlib.contextmanager
def serving(server: Server, optional: str | None = None
            ) -> Iterator[Server]:
    """``server`` started for the ``with`` block, stopped after it.

    ``optional`` names a server the tests may go without (``Keystone``):
    one that does not start is :func:`unavailable`.
    """
    try:
        server.start()
    except ServerError as exc:
        if optional is None:
            raise
        unavailable(f'{optional} did not start: {exc}')
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='session')
def glance_server(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    """One Glance with the stack (``url``) and without (``bare_url``)."""
    with serving(GlanceServer(tmp_path_factory.mktemp('glance'),
                              max_lifetime=SESSION_LIFETIME)) as server:
        yield server


def headers(project: str, roles: Roles = identity.DEFAULT_ROLES,
            user: str | None = None,
            service: bool = False) -> dict[str, str]:
    """Identity headers of ``user`` (default ``<project>-user``)."""
    return identity.identity_headers(project, roles, user, service)


@pytest.fixture(name='headers')
def headers_fixture() -> Callable[..., dict[str, str]]:
    """:func:`headers`, as a fixture."""
    return headers


class Api:
    """``requests`` on one endpoint, as a caller given per request.

    ``api.get('/v2/images', project='a')`` sends the identity headers of a
    member of ``a``; ``project=None`` sends none (anonymous).
    """

    def __init__(self, base_url: str, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.session = requests.Session()

    def request(self, method: str, path: str, *,
                project: str | None = None,
                roles: Roles = identity.DEFAULT_ROLES,
                user: str | None = None, service: bool = False,
                **kwargs: Any) -> requests.Response:
        sent = dict(kwargs.pop('headers', None) or {})
        if project is not None:
            sent = {**headers(project, roles, user, service), **sent}
        kwargs.setdefault('timeout', self.timeout)
        return self.session.request(method, self.base_url + path,
                                    headers=sent, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request('GET', path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request('POST', path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request('PUT', path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request('PATCH', path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request('DELETE', path, **kwargs)

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def api(glance_server: GlanceServer) -> Iterator[Api]:
    """Requests through the stack."""
    client = Api(glance_server.url)
    yield client
    client.close()


@pytest.fixture
def bare_api(glance_server: GlanceServer) -> Iterator[Api]:
    """Requests to the same Glance without the stack."""
    client = Api(glance_server.bare_url)
    yield client
    client.close()


@pytest.fixture
def glanceclient_for(
        glance_server: GlanceServer) -> Callable[..., Any]:
    """``glanceclient_for(project, roles=..., user=None, service=False,
    bare=False)``: a python-glanceclient v2 client acting as that caller.

    A keystoneauth session sends the identity headers:
    glanceclient's ``identity_headers=`` percent-encodes the comma of
    ``X-Roles`` (``reader%2Cmember``), which Glance reads as one role.
    """

    def build(project: str, roles: Roles = identity.DEFAULT_ROLES,
              user: str | None = None, service: bool = False,
              bare: bool = False) -> Any:
        endpoint = glance_server.bare_url if bare else glance_server.url
        session = identity.session_for(project, roles, user, service,
                                       timeout=TIMEOUT)
        return glanceclient.Client('2', session=session,
                                   endpoint_override=endpoint)

    return build


@pytest.fixture
def sdk_for(glance_server: GlanceServer) -> Iterator[Callable[..., Any]]:
    """``sdk_for(project, roles=..., user=None, service=False,
    bare=False)``: an openstacksdk connection acting as that caller."""
    connections: list[openstack.connection.Connection] = []

    def build(project: str, roles: Roles = identity.DEFAULT_ROLES,
              user: str | None = None, service: bool = False,
              bare: bool = False) -> openstack.connection.Connection:
        endpoint = glance_server.bare_url if bare else glance_server.url
        session = identity.session_for(project, roles, user, service,
                                       timeout=TIMEOUT)
        connection = openstack.connection.Connection(
            session=session, image_endpoint_override=endpoint,
            image_api_version='2')
        connections.append(connection)
        return connection

    yield build
    for connection in connections:
        connection.close()
