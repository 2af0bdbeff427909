"""A real Barbican 23 for the key lifecycle tests, and helpers around it.

``barbican_server`` starts one header-trusting Barbican for the session
(:class:`tests.local.barbican.BarbicanServer`: 127.0.0.1 only,
SQLite, a key-encryption key of its own, stops by itself).  Barbican must
be installed in the test environment (``barbican==23.0.0``, see
``upper-constraints.txt``); without it the tests skip, except with
``CI=true``, where they fail: a CI run that never met a key manager would
pass for the wrong reason.

:class:`BarbicanApi` talks to Barbican directly, as a project member, to
arrange secrets and to check what the lifecycle did to them.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import pytest
import requests
from oslo_config import cfg
from oslo_context import context as oslo_context

from instance_aware.keys import lifecycle
from instance_aware.store import engine as ia_engine
from instance_aware.store import migration, models
from tests.dbbackends import in_ci, sqlite_url
from tests.local import barbican

TIMEOUT = 30
REGISTRY = 'default'
MEMBER = ('reader', 'member')


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail with ``CI=true`` (never skip the key manager there)."""
    if in_ci():
        pytest.fail(f'{reason} (CI=true: the Barbican tests must run)')
    pytest.skip(reason)


@pytest.fixture(scope='session')
def barbican_server(
        tmp_path_factory: pytest.TempPathFactory
) -> Iterator[barbican.BarbicanServer]:
    """One local Barbican for the session."""
    if not barbican.available():
        unavailable('barbican is not installed in this environment: '
                    'pip install -c upper-constraints.txt barbican==23.0.0')
    server = barbican.BarbicanServer(tmp_path_factory.mktemp('barbican'),
                                     max_lifetime=1800)
    try:
        server.start()
    except barbican.ServerError as exc:
        unavailable(f'Barbican did not start: {exc}')
    try:
        yield server
    finally:
        server.stop()


def identity(project: str, user: str | None = None,
             roles: Sequence[str] = MEMBER) -> dict[str, str]:
    return {'X-Identity-Status': 'Confirmed', 'X-Project-Id': project,
            'X-User-Id': user or f'{project}-user',
            'X-Roles': ','.join(roles)}


class BarbicanApi:
    """Barbican's REST API, as a given project (arrange and assert)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def request(self, method: str, path: str, project: str,
                user: str | None = None, roles: Sequence[str] = MEMBER,
                **kwargs: Any) -> requests.Response:
        headers = {'Accept': 'application/json',
                   # Consumers appear in secret metadata from 1.1 on.
                   'OpenStack-API-Version': 'key-manager 1.2',
                   **identity(project, user, roles)}
        return self.session.request(method, self.url + path,
                                    headers=headers, timeout=TIMEOUT,
                                    **kwargs)

    def create_secret(self, project: str, user: str | None = None) -> str:
        response = self.request(
            'POST', '/v1/secrets', project, user,
            json={'name': 'luks', 'payload': uuid.uuid4().hex,
                  'payload_content_type': 'text/plain'})
        assert response.status_code == 201, response.text
        return str(response.json()['secret_ref'].rsplit('/', 1)[1])

    def secret(self, secret_id: str, project: str) -> requests.Response:
        return self.request('GET', f'/v1/secrets/{secret_id}', project)

    def consumers(self, secret_id: str, project: str) -> list[dict[str, Any]]:
        response = self.request('GET', f'/v1/secrets/{secret_id}/consumers',
                                project)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body['total'] == len(body['consumers'])
        return [{k: c[k] for k in ('service', 'resource_type',
                                   'resource_id')}
                for c in body['consumers']]

    def add_consumer(self, secret_id: str, project: str, service: str,
                     resource_type: str, resource_id: str) -> None:
        response = self.request(
            'POST', f'/v1/secrets/{secret_id}/consumers', project,
            json={'service': service, 'resource_type': resource_type,
                  'resource_id': resource_id})
        assert response.status_code == 200, response.text

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def barbican_api(
        barbican_server: barbican.BarbicanServer) -> Iterator[BarbicanApi]:
    client = BarbicanApi(barbican_server.url)
    yield client
    client.close()


def key_conf(directory: pathlib.Path, endpoint: str,
             timeout: float | None = None) -> cfg.ConfigOpts:
    """The service's configuration, from a file as a deployer writes it."""
    lines = ['[key_manager]', 'backend = barbican', '',
             '[barbican]', f'barbican_endpoint = {endpoint}', '',
             '[instance_aware_keys]', 'auth_mode = trusted_headers']
    if timeout is not None:
        lines.append(f'timeout = {timeout}')
    path = directory / f'glance-api-{uuid.uuid4().hex[:8]}.conf'
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(path)], project='glance')
    return conf


@pytest.fixture
def conf(tmp_path: pathlib.Path,
         barbican_server: barbican.BarbicanServer) -> cfg.ConfigOpts:
    return key_conf(tmp_path, barbican_server.url)


@pytest.fixture
def db(tmp_path: pathlib.Path) -> Iterator[ia_engine.Database]:
    """A migrated SQLite mapping store of its own."""
    engine = ia_engine.create_engine(sqlite_url(tmp_path))
    migration.upgrade(engine)
    yield ia_engine.Database(engine)
    engine.dispose()


@pytest.fixture
def keys(conf: cfg.ConfigOpts,
         db: ia_engine.Database) -> lifecycle.KeyLifecycle:
    return lifecycle.KeyLifecycle(conf, db, REGISTRY)


def caller(project: str, user: str | None = None,
           roles: Sequence[str] = MEMBER) -> oslo_context.RequestContext:
    """The context the filter would build for this caller."""
    return oslo_context.RequestContext(
        user_id=user or f'{project}-user', project_id=project,
        roles=list(roles), overwrite=False)


def add_image(db: ia_engine.Database, project: str,
              state: str = models.ACTIVE) -> str:
    """The ``ia_images`` row the filter writes; the new image id."""
    image_id = str(uuid.uuid4())
    with db.session(write=True) as session:
        session.add(models.Image(registry_id=REGISTRY, image_id=image_id,
                                 project_id=project, state=state))
    return image_id


def set_image_state(db: ia_engine.Database, image_id: str,
                    state: str) -> None:
    with db.session(write=True) as session:
        image = session.query(models.Image).filter_by(
            registry_id=REGISTRY, image_id=image_id).one()
        image.state = state


def key_row(db: ia_engine.Database, image_id: str,
            key_property: str | None = None) -> dict[str, Any] | None:
    """The image's ``ia_encryption_keys`` row of ``key_property`` (by
    default its only row, or the standard pair's), as a dict."""
    with db.session() as session:
        image = session.query(models.Image).filter_by(
            registry_id=REGISTRY, image_id=image_id).one()
        rows = sorted(image.encryption_keys, key=lambda r: (
            r.key_property != lifecycle.STANDARD_KEY))
        row = next((r for r in rows if key_property in (
            None, r.key_property)), None)
        if row is None:
            return None
        return {'key_id': row.key_id,
                'deletion_policy': row.deletion_policy,
                'lifecycle_state': row.lifecycle_state,
                'attempts': row.attempts, 'last_error': row.last_error}
