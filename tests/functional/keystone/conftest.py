"""A real Keystone 30, and a Glance with the stack that trusts only it.

``keystone_server`` starts one Keystone for the session (fernet tokens,
SQLite, 127.0.0.1, stops by itself; see
:mod:`tests.local.keystone`) and provisions its accounts:
``admin``, the ``glance`` and ``nova`` service users, and the
``alpha``/``beta`` projects with a member and a reader each.
``keystone_glance`` is Glance in its ``keystone`` flavor with
``authtoken`` against it: ``url`` through the stack, ``bare_url``
without.  Keystone must be installed (``keystone==30.0.0``, see
``upper-constraints.txt``); without it the tests skip, except with
``CI=true``, where they fail.

:class:`TokenApi` sends real tokens: ``api.get(path, user='alpha-member',
via_nova=True)`` sends that user's token and Nova's service token.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.functional.conftest import SESSION_LIFETIME, serving, unavailable
from tests.local import glance, keystone
from tests.local.server import GlanceServer

TIMEOUT = 30
#: Lifetime of the tokens of :func:`short_keystone`, in seconds.
SHORT_EXPIRATION = 5


@pytest.fixture(scope='session')
def keystone_server(
        tmp_path_factory: pytest.TempPathFactory
) -> Iterator[keystone.KeystoneServer]:
    """One local Keystone for the session."""
    if not keystone.available():
        unavailable('keystone is not installed in this environment: '
                    'pip install -c upper-constraints.txt keystone==30.0.0')
    with serving(keystone.KeystoneServer(
            tmp_path_factory.mktemp('keystone'),
            max_lifetime=SESSION_LIFETIME), optional='Keystone') as server:
        yield server


@pytest.fixture(scope='session')
def directory(keystone_server: keystone.KeystoneServer
              ) -> keystone.Directory:
    """The provisioned accounts."""
    return keystone.provision(keystone_server)


@pytest.fixture(scope='session')
def short_keystone(
        tmp_path_factory: pytest.TempPathFactory,
        keystone_server: keystone.KeystoneServer,
        directory: keystone.Directory,
) -> Iterator[keystone.KeystoneServer]:
    """A second Keystone on the same database and keys whose tokens
    expire after :data:`SHORT_EXPIRATION` seconds."""
    with serving(keystone.KeystoneServer(
            tmp_path_factory.mktemp('keystone-short'),
            source=keystone_server.state, token_expiration=SHORT_EXPIRATION,
            max_lifetime=600), optional='Keystone') as server:
        yield server


@pytest.fixture(scope='session')
def keystone_glance(tmp_path_factory: pytest.TempPathFactory,
                    keystone_server: keystone.KeystoneServer,
                    directory: keystone.Directory
                    ) -> Iterator[GlanceServer]:
    """Glance in the ``keystone`` flavor: ``url`` (stack), ``bare_url``."""
    server = GlanceServer(tmp_path_factory.mktemp('glance-keystone'),
                          flavor=glance.KEYSTONE,
                          auth_url=keystone_server.url,
                          max_lifetime=SESSION_LIFETIME)
    keystone.configure_glance(server.state, directory)
    with serving(server):
        keystone.register_image_endpoints(directory, server.url,
                                          server.bare_url)
        yield server


class TokenApi:
    """``requests`` on one endpoint with real tokens, one per user.

    Tokens are issued once per user and kept: a new one per request would
    only measure Keystone.
    """

    def __init__(self, base_url: str, directory: keystone.Directory,
                 tokens: dict[str, str]) -> None:
        self.base_url = base_url
        self.directory = directory
        self.tokens = tokens
        self.session = requests.Session()

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = self.directory.token(user)
        return self.tokens[user]

    def request(self, method: str, path: str, *, user: str | None = None,
                token: str | None = None, via_nova: bool = False,
                **kwargs: Any) -> requests.Response:
        """As ``user`` (or with ``token``); ``via_nova`` adds Nova's
        service token as ``X-Service-Token``."""
        sent = dict(kwargs.pop('headers', None) or {})
        if user is not None:
            token = self.token(user)
        if token is not None:
            sent.setdefault('X-Auth-Token', token)
        if via_nova:
            sent.setdefault('X-Service-Token', self.token(keystone.NOVA_USER))
        kwargs.setdefault('timeout', TIMEOUT)
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

    def close(self) -> None:
        self.session.close()


@pytest.fixture(scope='session')
def token_cache() -> dict[str, str]:
    return {}


@pytest.fixture
def api(keystone_glance: GlanceServer, directory: keystone.Directory,
        token_cache: dict[str, str]) -> Iterator[TokenApi]:
    """Real tokens through the stack."""
    client = TokenApi(keystone_glance.url, directory, token_cache)
    yield client
    client.close()


@pytest.fixture
def bare_api(keystone_glance: GlanceServer, directory: keystone.Directory,
             token_cache: dict[str, str]) -> Iterator[TokenApi]:
    """Real tokens to the same Glance without the stack."""
    client = TokenApi(keystone_glance.bare_url, directory, token_cache)
    yield client
    client.close()


def new_uuid() -> str:
    return str(uuid.uuid4())
