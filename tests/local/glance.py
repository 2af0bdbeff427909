"""A real Glance 33 with the stack in its pipeline, built in-process.

Why this is one module: the state directory, the configuration written
into it and the Glance built from that configuration change together.

Used by ``./tools/dev serve`` and the functional tests.  Everything
lives in one *state directory*: ``glance-api.conf``, the paste file, both
SQLite databases, the image store, the staging and tasks stores, the log.

One Glance (one configuration, one database, one store) answers through
two pipelines: ``stacked`` (with the ``instance_aware`` filter) and
``bare`` (without).  :class:`PortDispatcher` picks one by the port a
request arrived on, so a test can compare what a caller sees through the
stack with what Glance itself stored.

The ``noauth`` flavor trusts identity headers (``X-Identity-Status:
Confirmed``, ``X-Roles``, ``X-Project-Id``, ``X-User-Id``): whoever reaches
the port is whoever they claim to be.  It is for tests and a developer's
machine, served on 127.0.0.1 only.  The ``keystone`` flavor puts
keystonemiddleware's ``authtoken`` in front of ``context``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import json
import logging as pylogging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from instance_aware.store import engine as store_engine
from instance_aware.store import migration
from tests.local import statedir
from tests.local.statedir import write_ini

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Pipelines of :data:`PASTE_TEMPLATE`, per flavor.
STACKED = 'stacked'
BARE = 'bare'
NOAUTH = 'noauth'
KEYSTONE = 'keystone'
FLAVORS = (NOAUTH, KEYSTONE)
#: ``noauth`` with Glance's image cache after the stack, as the deployer
#: guide's ``caching`` line: for tests, not offered by ``serve``.
CACHING = 'caching'

#: Glance's internal stores (``glance.common.wsgi_app.RESERVED_STORES``).
RESERVED_STORES = {'os_glance_staging_store': 'file',
                   'os_glance_tasks_store': 'file'}

PASTE_TEMPLATE = os.path.join(os.path.dirname(__file__), 'paste.ini')

_DB_STAMP = 'glance-db.stamp'


class SetupError(Exception):
    """The state directory could not be prepared (message says why)."""


class StateDir(statedir.StateDir):
    """Where one local Glance keeps everything."""

    @property
    def config_file(self) -> str:
        return self.join('glance-api.conf')

    @property
    def config_dir(self) -> str:
        """``*.conf`` overrides kept across regenerations (passwords...)."""
        return self.join('glance-api.conf.d')

    @property
    def paste_file(self) -> str:
        return self.join('glance-api-paste.ini')

    @property
    def policy_file(self) -> str:
        return self.join('policy.yaml')

    @property
    def glance_db(self) -> str:
        return self.join('glance.sqlite')

    @property
    def glance_db_url(self) -> str:
        return f'sqlite:///{self.glance_db}'

    @property
    def instance_aware_db_url(self) -> str:
        return f'sqlite:///{self.join("instance_aware.sqlite")}'

    def store_dir(self, name: str) -> str:
        return self.join('stores', name)

    def config_args(self) -> list[str]:
        """oslo.config arguments reading this state's files only."""
        args = ['--config-file', self.config_file]
        if os.path.isdir(self.config_dir):
            args += ['--config-dir', self.config_dir]
        return args


def keystone_section(auth_url: str) -> dict[str, str]:
    """``[keystone_authtoken]``: placeholders for the service user.

    The real password belongs in ``glance-api.conf.d/*.conf``, which
    :func:`prepare` never rewrites.
    """
    return {
        'www_authenticate_uri': auth_url,
        'auth_url': auth_url,
        'auth_type': 'password',
        'project_domain_name': 'Default',
        'user_domain_name': 'Default',
        'project_name': 'service',
        'username': 'glance',
        'password': 'GLANCE_SERVICE_PASSWORD',
    }


def config_sections(state: StateDir, *, flavor: str = NOAUTH,
                    auth_url: str | None = None,
                    debug: bool = False) -> dict[str, dict[str, str]]:
    """The content of ``glance-api.conf`` for ``state``.

    Locations are shown by Glance so that the stack, not Glance, decides
    who sees them.
    """
    sections: dict[str, dict[str, str]] = {
        'DEFAULT': {
            'debug': str(debug),
            'use_stderr': 'True',
            'bind_host': '127.0.0.1',
            'enabled_backends': 'fs:file',
            'show_multiple_locations': 'True',
            'show_image_direct_url': 'True',
            'image_cache_dir': state.join('cache'),
        },
        'database': {'connection': state.glance_db_url},
        'glance_store': {'default_backend': 'fs'},
        'fs': {'filesystem_store_datadir': state.store_dir('images')},
        'os_glance_staging_store': {
            'filesystem_store_datadir': state.store_dir('staging')},
        'os_glance_tasks_store': {
            'filesystem_store_datadir': state.store_dir('tasks')},
        'paste_deploy': {'flavor': flavor,
                         'config_file': state.paste_file},
        'oslo_concurrency': {'lock_path': state.join('locks')},
        'instance_aware': {'connection': state.instance_aware_db_url,
                           'state_path': state.path},
        # No key manager runs here: encryption properties are validated
        # and stored, secrets are left alone.  A glance-api.conf.d file
        # turns the lifecycle on against a Barbican (see the key tests).
        'instance_aware_keys': {'enabled': 'False'},
    }
    if flavor == CACHING:
        # Glance's default cache driver (centralized_db) records cached
        # images under this worker's URL; one host, so any URL does.
        sections['DEFAULT']['worker_self_reference_url'] = (
            'http://127.0.0.1')
    if os.path.exists(state.policy_file):
        sections['oslo_policy'] = {'policy_file': state.policy_file}
    if auth_url:
        sections['keystone_authtoken'] = keystone_section(auth_url)
    return sections


def write_config(state: StateDir, sections: Mapping[str, Mapping[str, str]]
                 ) -> None:
    """Write ``glance-api.conf`` (no interpolation: values are literal)."""
    header = ('# Written by tests.local; regenerated on every start.\n'
              '# Put lasting overrides in '
              f'{os.path.basename(state.config_dir)}/*.conf.\n\n')
    write_ini(state.config_file, sections, header)


def _glance_manage() -> str:
    """The ``glance-manage`` of the running interpreter's environment."""
    candidate = os.path.join(os.path.dirname(sys.executable), 'glance-manage')
    if os.path.exists(candidate):
        return candidate
    found = shutil.which('glance-manage')
    if found is None:
        raise SetupError('glance-manage not found: install glance==33.0.0 '
                         "(extra 'test') in this environment")
    return found


def _alembic_heads(path: str) -> list[str]:
    """Revisions recorded in an SQLite database (cheap: no alembic)."""
    if not os.path.exists(path):
        return []
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            'SELECT version_num FROM alembic_version').fetchall()
    except sqlite3.Error:
        return []
    finally:
        connection.close()
    return sorted(str(row[0]) for row in rows)


def _glance_stamp(state: StateDir) -> dict[str, Any]:
    return {'glance': importlib.metadata.version('glance'),
            'heads': _alembic_heads(state.glance_db)}


def sync_glance_db(state: StateDir, timeout: float = 120) -> bool:
    """Create or upgrade Glance's schema; ``False`` when already done.

    ``glance-manage db_sync`` takes seconds even with nothing to do, and
    finding Glance's head revision in-process imports half of Glance: a
    stamp (Glance version and the revisions found after the last sync)
    makes the second start instant.
    """
    stamp_path = os.path.join(state.path, _DB_STAMP)
    try:
        with open(stamp_path, encoding='utf-8') as stream:
            stamp = json.load(stream)
    except (OSError, ValueError):
        stamp = None
    current = _glance_stamp(state)
    if stamp == current and current['heads']:
        return False
    command = [_glance_manage(), *state.config_args(), 'db_sync']
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout,
            check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f'glance-manage db_sync did not finish in '
                         f'{timeout} s') from exc
    if result.returncode != 0:
        raise SetupError(f'glance-manage db_sync failed '
                         f'({result.returncode}):\n{result.stdout}'
                         f'{result.stderr}')
    with open(stamp_path, 'w', encoding='utf-8') as stream:
        json.dump(_glance_stamp(state), stream)
    return True


def sync_instance_aware_db(state: StateDir) -> None:
    """Create or upgrade the mapping database (idempotent, fast)."""
    engine = store_engine.create_engine(state.instance_aware_db_url)
    try:
        migration.upgrade(engine)
    finally:
        engine.dispose()


def prepare(path: str | os.PathLike[str], *, flavor: str = NOAUTH,
            auth_url: str | None = None,
            debug: bool = False) -> StateDir:
    """Create or refresh a state directory, migrations included.

    Safe to repeat: the configuration and paste files are rewritten, the
    databases and stores are kept.
    """
    if flavor not in (*FLAVORS, CACHING):
        raise SetupError(f'unknown flavor {flavor!r} (one of '
                         f'{", ".join((*FLAVORS, CACHING))})')
    if flavor == KEYSTONE and not auth_url:
        raise SetupError('the keystone flavor needs an auth URL')
    state = StateDir(os.fspath(path))
    for directory in (state.path, state.store_dir('images'),
                      state.store_dir('staging'), state.store_dir('tasks'),
                      state.join('cache'), state.join('locks')):
        os.makedirs(directory, exist_ok=True)
    write_config(state, config_sections(state, flavor=flavor,
                                        auth_url=auth_url, debug=debug))
    shutil.copyfile(PASTE_TEMPLATE, state.paste_file)
    sync_glance_db(state)
    sync_instance_aware_db(state)
    return state


def pipeline_name(pipeline: str, flavor: str) -> str:
    """The paste app name of ``pipeline`` (stacked/bare) in ``flavor``."""
    return pipeline if flavor == NOAUTH else f'{pipeline}-{flavor}'


class _CinderDriverFilter(pylogging.Filter):
    """Drops stevedore's errors about glance_store's cinder driver.

    glance_store imports every driver to list their options, whatever the
    enabled backends; the cinder one needs os-brick (glance_store's
    ``cinder`` extra), which a Glance on the file store does not.  Only
    that ``No module named 'os_brick'`` is dropped: any other driver that
    fails to load is still logged.
    """

    def filter(self, record: pylogging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(arg, ModuleNotFoundError)
                       and arg.name == 'os_brick' for arg in args)


@contextlib.contextmanager
def _without_cinder_driver_errors() -> Iterator[None]:
    logger = pylogging.getLogger('stevedore.extension')
    dropped = _CinderDriverFilter()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


def load_apps(state: StateDir,
              pipelines: Iterable[str] = (STACKED, BARE)
              ) -> dict[str, WSGIApplication]:
    """Configure Glance from ``state`` and load the named pipelines.

    Glance keeps its configuration in the global ``cfg.CONF``: call this
    once per process (the gunicorn worker), never in a test runner.
    """
    # Registers [paste_deploy] and the other options; wsgi_app must be
    # imported before CONF() is called (it imports more option groups).
    import glance.async_
    import glance_store
    import paste.deploy
    from glance.api import common as api_common
    from glance.common import config as glance_config
    from glance.common import wsgi_app
    from oslo_config import cfg
    from oslo_log import log as logging

    conf = cfg.CONF
    glance_config.set_config_defaults()
    conf(state.config_args(), project='glance', prog='glance-api',
         default_config_files=[], default_config_dirs=[])
    logging.setup(conf, 'glance')
    glance.async_.set_threadpool_model('native')
    api_common.DEFAULT_POOL_SIZE = conf.wsgi.task_pool_threads
    with _without_cinder_driver_errors():
        glance_store.register_store_opts(conf,
                                         reserved_stores=RESERVED_STORES)
        glance_store.create_multi_stores(conf,
                                         reserved_stores=RESERVED_STORES)
    glance_store.verify_store()
    flavor = conf.paste_deploy.flavor or NOAUTH
    apps: dict[str, WSGIApplication] = {}
    for pipeline in pipelines:
        apps[pipeline] = paste.deploy.loadapp(
            'config:' + state.paste_file,
            name=pipeline_name(pipeline, flavor))
    atexit.register(_drain_workers, api_common, wsgi_app)
    return apps


def _drain_workers(api_common: Any, wsgi_app: Any) -> None:
    """Let running import tasks finish when the worker exits.

    Glance's ``drain_workers`` creates the pool it drains when no request
    ever did, and creating one during interpreter shutdown fails.
    """
    if getattr(api_common, '_CACHED_THREAD_POOL', None):
        wsgi_app.drain_workers()


class PortDispatcher:
    """Serve the pipeline bound to the port a request arrived on.

    gunicorn sets ``SERVER_PORT`` from the listening socket, never from
    the ``Host`` header, so a caller cannot pick the pipeline.
    """

    def __init__(self, routes: Mapping[int, WSGIApplication]) -> None:
        self.routes = {str(port): app for port, app in routes.items()}

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        app = self.routes.get(str(environ.get('SERVER_PORT', '')))
        if app is None:
            body = b'No pipeline is served on this port.\n'
            start_response('421 Misdirected Request', [
                ('Content-Type', 'text/plain'),
                ('Content-Length', str(len(body)))])
            return [body]
        return app(environ, start_response)


def build_dispatcher(state: StateDir, stack_port: int,
                     bare_port: int | None = None) -> PortDispatcher:
    """The WSGI application of one server: ``stacked`` (and ``bare``)."""
    pipelines = [STACKED] if bare_port is None else [STACKED, BARE]
    apps = load_apps(state, pipelines)
    routes = {stack_port: apps[STACKED]}
    if bare_port is not None:
        routes[bare_port] = apps[BARE]
    return PortDispatcher(routes)


def _next(app: Any) -> Any:
    """The application ``app`` hands requests to, or ``None``."""
    applications = getattr(app, 'applications', None)
    if isinstance(applications, list):  # paste.urlmap.URLMap
        for (_domain, path), inner in applications:
            if path in ('', '/'):
                return inner
        return None
    for attr in ('application', 'app', '_app'):
        inner = getattr(app, attr, None)
        if inner is not None and callable(inner):
            return inner
    return None


def pipeline(app: Any) -> Iterator[Any]:
    """Walk a loaded pipeline outermost first (root paths of URL maps).

    Lets a test see which objects a request really crosses.
    """
    seen: set[int] = set()
    while app is not None and id(app) not in seen:
        seen.add(id(app))
        yield app
        app = _next(app)
