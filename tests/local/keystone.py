"""A real Keystone 30 on 127.0.0.1, for the functional tests and ``serve``.

Why this is one module: the server, its bootstrap and the accounts it
serves share the state directory and change together.

Everything lives in one state directory: ``keystone.conf``, the SQLite
database, the fernet and credential key repositories, the log, and the
password of the local accounts (made once, mode 0600).  Tokens are
fernet tokens; Keystone runs under gunicorn through
:mod:`tests.local.keystone_wsgi` and stops by itself when the
process that started it dies or its lifetime is over
(:mod:`tests.local.gunicorn_conf`).

:func:`provision` makes the accounts a Glance deployment has: the
bootstrap ``admin``, a ``service`` project with the ``glance`` and
``nova`` service users (``service`` role), and two user projects
(:data:`PROJECTS`) each with a ``member`` and a ``reader`` user.
:func:`register_image_endpoints` puts Glance in the catalog.

A second server can share the database and keys of a first one with
another ``[token] expiration``: the functional tests get tokens that
expire in seconds from it, valid for the first one until then.
"""

from __future__ import annotations

import dataclasses
import grp
import importlib.util
import os
import pwd
import secrets
import subprocess
from collections.abc import Mapping
from typing import Any

import requests

from tests.local import glance as local_glance
from tests.local import statedir
from tests.local.process import (
    DEFAULT_MAX_LIFETIME,
    HOST,
    ServerError,
    ServerProcess,
    answers,
)
from tests.local.statedir import secret_file, write_ini

REGION = 'RegionOne'
#: The catalog region of the Glance without the stack (``bare`` port).
BARE_REGION = 'Bare'
DOMAIN = 'Default'
ADMIN = 'admin'
SERVICE_PROJECT = 'service'
SERVICE_ROLE = 'service'
#: Service users of the ``service`` project.
GLANCE_USER = 'glance'
NOVA_USER = 'nova'
#: User projects; each has ``<project>-member`` and ``<project>-reader``.
PROJECTS = ('alpha', 'beta')

_TIMEOUT = 30


class SetupError(ServerError):
    """Keystone could not be prepared or provisioned (message says why)."""


def available() -> bool:
    """Whether Keystone is importable by this interpreter."""
    return importlib.util.find_spec('keystone') is not None


class StateDir(statedir.StateDir):
    """Where one local Keystone keeps everything."""

    @property
    def config_file(self) -> str:
        return self.join('keystone.conf')

    @property
    def database(self) -> str:
        return self.join('keystone.sqlite')

    @property
    def fernet_keys(self) -> str:
        return self.join('fernet-keys')

    @property
    def credential_keys(self) -> str:
        return self.join('credential-keys')

    @property
    def password_file(self) -> str:
        return self.join('password')

    @property
    def bootstrap_stamp(self) -> str:
        return self.join('bootstrapped')


def password(state: StateDir) -> str:
    """The password of every local account (made once per state)."""
    return secret_file(state.password_file,
                       lambda: secrets.token_urlsafe(18))


def write_config(state: StateDir, *, expiration: int = 3600,
                 source: StateDir | None = None,
                 debug: bool = False) -> None:
    """``keystone.conf``; ``source``'s database and keys when given."""
    data = source or state
    write_ini(state.config_file, {
        'DEFAULT': {'debug': str(debug), 'use_stderr': 'True'},
        'database': {'connection': f'sqlite:///{data.database}'},
        'token': {'provider': 'fernet', 'expiration': str(expiration)},
        'fernet_tokens': {'key_repository': data.fernet_keys},
        'fernet_receipts': {'key_repository': data.fernet_keys},
        'credential': {'key_repository': data.credential_keys},
        # Local accounts only: the cheapest hash bcrypt accepts.
        'identity': {'password_hash_rounds': '4'},
    }, '# Written by tests.local.keystone on every start.\n\n')


def _keystone_manage(python: str) -> str:
    candidate = os.path.join(os.path.dirname(python), 'keystone-manage')
    if not os.path.exists(candidate):
        raise SetupError(f'keystone-manage not found next to {python}: '
                         'pip install -c upper-constraints.txt '
                         'keystone==30.0.0')
    return candidate


def _manage(state: StateDir, python: str, *args: str,
            timeout: float = 120) -> None:
    command = [_keystone_manage(python), '--config-file', state.config_file,
               *args]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout,
            check=False, stdin=subprocess.DEVNULL, cwd=state.path)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f'keystone-manage {args[0]} did not finish in '
                         f'{timeout} s') from exc
    if result.returncode != 0:
        raise SetupError(f'keystone-manage {args[0]} failed '
                         f'({result.returncode}):\n{result.stdout}'
                         f'{result.stderr[-4000:]}')


def bootstrap(state: StateDir, port: int, python: str) -> None:
    """Schema, keys and the ``admin`` account; repeated on every start
    (each step is idempotent), so the identity endpoint follows ``port``.
    """
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    owner = ('--keystone-user', user, '--keystone-group', group)
    _manage(state, python, 'db_sync')
    if not os.path.isdir(state.fernet_keys):
        _manage(state, python, 'fernet_setup', *owner)
    if not os.path.isdir(state.credential_keys):
        _manage(state, python, 'credential_setup', *owner)
    url = f'http://{HOST}:{port}/v3'
    _manage(state, python, 'bootstrap',
            # One token: a password may start with '-', which argparse
            # would take for an option.
            f'--bootstrap-password={password(state)}',
            '--bootstrap-username', ADMIN,
            '--bootstrap-project-name', ADMIN,
            '--bootstrap-role-name', ADMIN,
            '--bootstrap-region-id', REGION,
            '--bootstrap-admin-url', url,
            '--bootstrap-internal-url', url,
            '--bootstrap-public-url', url)


class KeystoneServer(ServerProcess):
    """A local Keystone under gunicorn, fernet tokens, SQLite.

    ::

        with KeystoneServer(tmp_path) as keystone:
            directory = provision(keystone)

    ``source`` (another server's state) makes a second server on the same
    database and keys, with its own ``token_expiration``: no bootstrap.
    ``python`` is the interpreter that runs it (default: this one); it
    needs ``keystone``, ``gunicorn`` and ``instance_aware`` importable
    (``tests.local`` comes from the checkout, on ``PYTHONPATH``).
    """

    label = 'Keystone (gunicorn)'
    state: StateDir

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 port: int | None = None, python: str | None = None,
                 token_expiration: int = 3600,
                 source: StateDir | None = None, threads: int = 2,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 debug: bool = False) -> None:
        super().__init__(StateDir(os.fspath(state_dir)), port=port,
                         python=python, max_lifetime=max_lifetime,
                         start_timeout=start_timeout,
                         stop_timeout=stop_timeout, debug=debug)
        self.token_expiration = token_expiration
        self.source = source
        self.threads = threads

    @property
    def url(self) -> str:
        """The identity endpoint, ``.../v3`` (``OS_AUTH_URL``)."""
        if self.port is None:
            raise ServerError('Keystone is not started')
        return f'http://{HOST}:{self.port}/v3'

    @property
    def password(self) -> str:
        """The password of every local account."""
        return password(self.source or self.state)

    def _wanted_ports(self) -> list[int | None]:
        # A restart keeps the port of the first start: the catalog names
        # it.
        return [self._want_port or self.port]

    def _configure(self) -> None:
        """Configuration and, unless sharing ``source``'s database, the
        bootstrap (the identity endpoint follows the port)."""
        assert self.port is not None
        write_config(self.state, expiration=self.token_expiration,
                     source=self.source, debug=self.debug)
        if self.source is None:
            bootstrap(self.state, self.port, self.python)

    def _ready(self, port: int) -> bool:
        return answers(port, timeout=1.0, path='/v3', statuses=(200,))

    def _command(self) -> list[str]:
        return self._gunicorn('tests.local.keystone_wsgi:application',
                              workers=1, threads=self.threads, timeout=60)

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env['OS_KEYSTONE_CONFIG_FILES'] = self.state.config_file
        env.pop('OS_KEYSTONE_CONFIG_DIR', None)
        env['NO_PROXY'] = env['no_proxy'] = HOST
        return env


# -- accounts ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Account:
    """A user and the project its tokens are scoped to."""

    username: str
    password: str
    project: str
    user_id: str
    project_id: str
    roles: tuple[str, ...]

    def environ(self, auth_url: str,
                region: str = REGION) -> dict[str, str]:
        """``OS_*`` variables for openstackclient, glanceclient, the SDK."""
        return {
            'OS_AUTH_TYPE': 'password',
            'OS_AUTH_URL': auth_url,
            'OS_IDENTITY_API_VERSION': '3',
            'OS_USERNAME': self.username,
            'OS_PASSWORD': self.password,
            'OS_USER_DOMAIN_NAME': DOMAIN,
            'OS_PROJECT_NAME': self.project,
            'OS_PROJECT_DOMAIN_NAME': DOMAIN,
            'OS_REGION_NAME': region,
            'OS_INTERFACE': 'public',
            'OS_IMAGE_API_VERSION': '2',
        }


@dataclasses.dataclass(frozen=True)
class Directory:
    """The accounts :func:`provision` made, by user name."""

    auth_url: str
    accounts: Mapping[str, Account]

    def __getitem__(self, username: str) -> Account:
        return self.accounts[username]

    @property
    def admin(self) -> Account:
        return self.accounts[ADMIN]

    @property
    def glance(self) -> Account:
        return self.accounts[GLANCE_USER]

    @property
    def nova(self) -> Account:
        return self.accounts[NOVA_USER]

    def token(self, username: str, url: str | None = None) -> str:
        """A new token of ``username``, scoped to its project (from the
        Keystone at ``url``, default this directory's)."""
        return issue_token(url or self.auth_url, self.accounts[username])


def _password_auth(account: Account) -> dict[str, Any]:
    domain = {'name': DOMAIN}
    return {'auth': {
        'identity': {'methods': ['password'], 'password': {'user': {
            'name': account.username, 'domain': domain,
            'password': account.password}}},
        'scope': {'project': {'name': account.project, 'domain': domain}},
    }}


def issue_token(auth_url: str, account: Account) -> str:
    """A project-scoped token of ``account`` from ``auth_url``."""
    response = requests.post(f'{auth_url}/auth/tokens',
                             json=_password_auth(account), timeout=_TIMEOUT)
    if response.status_code != 201:
        raise SetupError(f'no token for {account.username}: '
                         f'{response.status_code} {response.text}')
    return response.headers['X-Subject-Token']


def revoke_token(auth_url: str, token: str) -> None:
    """``DELETE /v3/auth/tokens``: the token revokes itself."""
    response = requests.delete(
        f'{auth_url}/auth/tokens', timeout=_TIMEOUT,
        headers={'X-Auth-Token': token, 'X-Subject-Token': token})
    if response.status_code != 204:
        raise SetupError(f'revocation refused: {response.status_code} '
                         f'{response.text}')


class _Admin:
    """Keystone's REST API as the bootstrap admin, create-if-missing."""

    def __init__(self, auth_url: str, admin: Account) -> None:
        self.url = auth_url
        self.session = requests.Session()
        self.session.headers['X-Auth-Token'] = issue_token(auth_url, admin)

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,),
             **kwargs: Any) -> Any:
        response = self.session.request(method, self.url + path,
                                        timeout=_TIMEOUT, **kwargs)
        if response.status_code not in expect:
            raise SetupError(f'{method} {path}: {response.status_code} '
                             f'{response.text}')
        return response.json() if response.content else None

    def ensure(self, collection: str, kind: str, query: Mapping[str, str],
               body: Mapping[str, Any]) -> dict[str, Any]:
        found = self.call('GET', f'/{collection}', params=query)[collection]
        if found:
            entity: dict[str, Any] = found[0]
            return entity
        created: dict[str, Any] = self.call(
            'POST', f'/{collection}', expect=(201,),
            json={kind: dict(body)})[kind]
        return created

    def grant(self, project_id: str, user_id: str, role_id: str) -> None:
        self.call('PUT', f'/projects/{project_id}/users/{user_id}/roles/'
                  f'{role_id}', expect=(204,))

    def close(self) -> None:
        self.session.close()


def provision(server: KeystoneServer) -> Directory:
    """Make (or find) the local accounts; idempotent."""
    secret = server.password
    domain = {'domain_id': DOMAIN.lower()}
    bootstrap_admin = Account(ADMIN, secret, ADMIN, '', '', (ADMIN,))
    client = _Admin(server.url, bootstrap_admin)
    try:
        roles = {name: client.ensure('roles', 'role', {'name': name},
                                     {'name': name})['id']
                 for name in (ADMIN, 'member', 'reader', SERVICE_ROLE)}

        def project(name: str) -> str:
            return str(client.ensure('projects', 'project',
                                     {'name': name, **domain},
                                     {'name': name, **domain})['id'])

        def user(name: str, project_id: str) -> str:
            user_id = str(client.ensure(
                'users', 'user', {'name': name, **domain},
                {'name': name, 'password': secret,
                 'default_project_id': project_id, **domain})['id'])
            return user_id

        accounts: dict[str, Account] = {}
        admin_project_id = project(ADMIN)
        admin_id = user(ADMIN, admin_project_id)
        accounts[ADMIN] = Account(ADMIN, secret, ADMIN, admin_id,
                                  admin_project_id,
                                  (ADMIN, 'member', 'reader'))
        service_id = project(SERVICE_PROJECT)
        for name in (GLANCE_USER, NOVA_USER):
            user_id = user(name, service_id)
            client.grant(service_id, user_id, roles[SERVICE_ROLE])
            accounts[name] = Account(name, secret, SERVICE_PROJECT, user_id,
                                     service_id, (SERVICE_ROLE,))
        for name in PROJECTS:
            project_id = project(name)
            for role, implied in (('member', ('member', 'reader')),
                                  ('reader', ('reader',))):
                username = f'{name}-{role}'
                user_id = user(username, project_id)
                client.grant(project_id, user_id, roles[role])
                accounts[username] = Account(username, secret, name,
                                             user_id, project_id, implied)
    finally:
        client.close()
    return Directory(server.url, accounts)


def register_image_endpoints(directory: Directory, url: str,
                             bare_url: str | None = None, *,
                             region: str = REGION) -> None:
    """Glance in the catalog: ``url`` in ``region``, ``bare_url`` (the
    same Glance without the stack) in :data:`BARE_REGION`.  Existing
    endpoints are moved to the given URLs; another ``region`` leaves the
    other Glances of the session where they are."""
    client = _Admin(directory.auth_url, directory.admin)
    try:
        service = client.ensure('services', 'service', {'type': 'image'},
                                {'type': 'image', 'name': 'glance'})
        wanted = {region: url}
        if bare_url is not None:
            wanted[BARE_REGION] = bare_url
        for region, endpoint_url in wanted.items():
            found = client.call('GET', f'/regions/{region}',
                                expect=(200, 404))
            if 'region' not in (found or {}):
                client.call('POST', '/regions', expect=(201,),
                            json={'region': {'id': region}})
            for interface in ('public', 'internal', 'admin'):
                endpoint = client.ensure(
                    'endpoints', 'endpoint',
                    {'service_id': service['id'], 'interface': interface,
                     'region_id': region},
                    {'service_id': service['id'], 'interface': interface,
                     'region_id': region, 'url': endpoint_url})
                if endpoint['url'] != endpoint_url:
                    client.call('PATCH', f"/endpoints/{endpoint['id']}",
                                json={'endpoint': {'url': endpoint_url}})
    finally:
        client.close()


def authtoken_options(directory: Directory) -> dict[str, str]:
    """``[keystone_authtoken]`` of a Glance validating this Keystone's
    tokens as the ``glance`` user (in-process token cache: no memcached).
    """
    glance = directory.glance
    return {
        'www_authenticate_uri': directory.auth_url,
        'auth_url': directory.auth_url,
        'auth_type': 'password',
        'project_domain_name': DOMAIN,
        'user_domain_name': DOMAIN,
        'project_name': glance.project,
        'username': glance.username,
        'password': glance.password,
        'region_name': REGION,
        'service_token_roles': SERVICE_ROLE,
        'service_token_roles_required': 'True',
    }


def configure_glance(state: local_glance.StateDir,
                     directory: Directory) -> str:
    """Write ``glance-api.conf.d/keystone.conf`` (kept across Glance's
    regenerations) with :func:`authtoken_options`; its path."""
    os.makedirs(state.config_dir, exist_ok=True)
    path = os.path.join(state.config_dir, 'keystone.conf')
    write_ini(path, {'keystone_authtoken': authtoken_options(directory)},
               '# Written by tests.local.keystone.\n\n')
    os.chmod(path, 0o600)
    return path
