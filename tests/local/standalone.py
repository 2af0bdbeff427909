"""The stack alone, in front of a remote Glance: ``serve --upstream URL``.

The standalone counterpart of :mod:`tests.local.glance`: no
Glance runs here.  The state directory holds ``instance-aware.conf``
(``[instance_aware]`` on the SQLite mapping database of the directory,
``[instance_aware_proxy] upstream``), the paste file, the database
(migrated at every start) and the log.  Lasting overrides go in
``instance-aware.conf.d/*.conf``, which is never rewritten.

The ``standalone`` pipeline (noauth) trusts identity headers and forwards
them: point it only at a Glance that trusts them as well, on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tests.local import glance

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PIPELINE = 'standalone'
#: Answered by the stack itself (oslo.middleware's healthcheck filter).
HEALTHCHECK = '/healthcheck'
PASTE_TEMPLATE = os.path.join(os.path.dirname(__file__),
                              'standalone-paste.ini')


class StandaloneState(glance.StateDir):
    """A state directory of the standalone stack (no Glance files)."""

    @property
    def config_file(self) -> str:
        return self.join('instance-aware.conf')

    @property
    def config_dir(self) -> str:
        return self.join('instance-aware.conf.d')

    @property
    def paste_file(self) -> str:
        return self.join('instance-aware-paste.ini')


def config_sections(state: StandaloneState, upstream: str, *,
                    auth_url: str | None = None, debug: bool = False,
                    proxy_options: Mapping[str, str] | None = None
                    ) -> dict[str, dict[str, str]]:
    """``instance-aware.conf`` of the standalone stack."""
    sections: dict[str, dict[str, str]] = {
        'DEFAULT': {'debug': str(debug)},
        'instance_aware': {'connection': state.instance_aware_db_url,
                           'state_path': state.path},
        'instance_aware_proxy': {'upstream': upstream,
                                 **dict(proxy_options or {})},
        # No key manager here either (see glance.config_sections).
        'instance_aware_keys': {'enabled': 'False'},
    }
    if os.path.exists(state.policy_file):
        sections['oslo_policy'] = {'policy_file': state.policy_file}
    if auth_url:
        sections['keystone_authtoken'] = glance.keystone_section(auth_url)
    return sections


def prepare(path: str | os.PathLike[str], upstream: str, *,
            flavor: str = glance.NOAUTH, auth_url: str | None = None,
            debug: bool = False,
            proxy_options: Mapping[str, str] | None = None
            ) -> StandaloneState:
    """Create or refresh a standalone state directory, migrations
    included (safe to repeat: the database is kept)."""
    if flavor not in glance.FLAVORS:
        raise glance.SetupError(f'unknown flavor {flavor!r} (one of '
                                f'{", ".join(glance.FLAVORS)})')
    if flavor == glance.KEYSTONE and not auth_url:
        raise glance.SetupError('the keystone flavor needs an auth URL')
    state = StandaloneState(os.fspath(path))
    os.makedirs(state.path, exist_ok=True)
    glance.write_config(state, config_sections(
        state, upstream, auth_url=auth_url, debug=debug,
        proxy_options=proxy_options))
    shutil.copyfile(PASTE_TEMPLATE, state.paste_file)
    glance.sync_instance_aware_db(state)
    return state


def load_app(state: StandaloneState,
             flavor: str = glance.NOAUTH) -> WSGIApplication:
    """Configure the process from ``state`` and load the pipeline.

    Uses the global ``cfg.CONF``: once per process (the gunicorn worker).
    """
    import paste.deploy
    from oslo_config import cfg
    from oslo_log import log as logging

    conf = cfg.CONF
    logging.register_options(conf)
    conf(state.config_args(), project='instance-aware',
         prog='instance-aware-standalone', default_config_files=[],
         default_config_dirs=[])
    logging.setup(conf, 'instance-aware')
    app: WSGIApplication = paste.deploy.loadapp(
        'config:' + state.paste_file,
        name=glance.pipeline_name(PIPELINE, flavor))
    return app


class PathMap:
    """Dispatch on the first segments of the path, as ``urlmap`` does.

    The longest matching prefix wins (``/`` matches everything); it moves
    from ``PATH_INFO`` to ``SCRIPT_NAME``.
    """

    def __init__(self, routes: Mapping[str, WSGIApplication]) -> None:
        self.routes = sorted(((prefix.rstrip('/'), app)
                              for prefix, app in routes.items()),
                             key=lambda route: -len(route[0]))

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get('PATH_INFO', '')
        for prefix, app in self.routes:
            if path == prefix or path.startswith(prefix + '/'):
                environ['SCRIPT_NAME'] = (environ.get('SCRIPT_NAME', '')
                                          + prefix)
                environ['PATH_INFO'] = path[len(prefix):]
                return app(environ, start_response)
        body = b'Not Found\n'
        start_response('404 Not Found', [
            ('Content-Type', 'text/plain'),
            ('Content-Length', str(len(body)))])
        return [body]


def root_factory(loader: Any, global_conf: dict[str, Any],
                 **local_conf: str) -> PathMap:
    """Paste ``composite_factory``: ``/prefix = app name`` lines."""
    return PathMap({prefix: loader.get_app(name, global_conf=global_conf)
                    for prefix, name in local_conf.items()
                    if prefix.startswith('/')})
