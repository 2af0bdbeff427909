"""Run the local Glance under gunicorn in a subprocess, on 127.0.0.1.

One gunicorn (``gthread`` workers, one Glance per worker) listens on two
ports: the stack port serves the ``stacked`` pipeline, the bare port the
``bare`` one (see :mod:`tests.local.glance`).  :class:`StandaloneServer`
runs the stack alone in front of a remote Glance instead
(:mod:`tests.local.standalone`).  What every local server shares (ports,
gunicorn, the graceful stop) is :class:`~tests.local.process.ServerProcess`.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Mapping, Sequence

from tests.local import envvars, glance, standalone
from tests.local.process import (
    DEFAULT_MAX_LIFETIME,
    HOST,
    ServerError,
    ServerProcess,
    answers,
    free_port,
    port_in_use,
)

__all__ = ['DEFAULT_MAX_LIFETIME', 'HOST', 'GlanceServer', 'ServerError',
           'StandaloneServer', 'answers', 'free_port', 'port_in_use']


class GlanceServer(ServerProcess):
    """A local Glance with the stack, for tests and ``./tools/dev serve``.

    ::

        with GlanceServer(tmp_path) as server:
            requests.get(server.url + '/v2/images', headers=...)
    """

    state: glance.StateDir

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 port: int | None = None, bare: bool = True,
                 bare_port: int | None = None, workers: int = 1,
                 threads: int = 4, flavor: str = glance.NOAUTH,
                 auth_url: str | None = None,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 access_log: bool = True, debug: bool = False) -> None:
        super().__init__(glance.StateDir(os.fspath(state_dir)), port=port,
                         max_lifetime=max_lifetime,
                         start_timeout=start_timeout,
                         stop_timeout=stop_timeout, debug=debug)
        self.bare = bare or bare_port is not None
        self._want_bare_port = bare_port
        self.workers = workers
        self.threads = threads
        self.flavor = flavor
        self.auth_url = auth_url
        self.access_log = access_log
        self.bare_port: int | None = None

    @property
    def url(self) -> str:
        """The endpoint through the stack."""
        if self.port is None:
            raise ServerError('the server is not started')
        return f'http://{HOST}:{self.port}'

    @property
    def bare_url(self) -> str:
        """The endpoint of the same Glance without the stack."""
        if self.bare_port is None:
            raise ServerError('the server does not serve the bare pipeline')
        return f'http://{HOST}:{self.bare_port}'

    def _wanted_ports(self) -> list[int | None]:
        if self.bare:
            return [self._want_port, self._want_bare_port]
        return [self._want_port]

    def _bind(self, ports: Sequence[int]) -> None:
        super()._bind(ports)
        self.bare_port = ports[1] if self.bare else None

    def _prepare(self) -> None:
        """Create or refresh the state directory (migrations included)."""
        glance.prepare(self.state.path, flavor=self.flavor,
                       auth_url=self.auth_url, debug=self.debug)

    def _ready(self, port: int) -> bool:
        return answers(port, timeout=1.0)

    def _command(self) -> list[str]:
        return self._gunicorn('tests.local.wsgi:application',
                              workers=self.workers, threads=self.threads,
                              timeout=120, access_log=self.access_log)

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env[envvars.STATE_DIR] = self.state.path
        env[envvars.STACK_PORT] = str(self.port)
        env.pop(envvars.BARE_PORT, None)
        env.pop(envvars.STANDALONE, None)
        if self.bare_port is not None:
            env[envvars.BARE_PORT] = str(self.bare_port)
        return env


class StandaloneServer(GlanceServer):
    """The stack alone, forwarding to a remote Glance at ``upstream``.

    For tests and ``./tools/dev serve --upstream``: no local Glance,
    one port; the mapping database is SQLite in the state directory.
    ``proxy_options`` go to ``[instance_aware_proxy]``;
    ``max_concurrent_transfers`` is ``threads`` less one unless given.
    ::

        with StandaloneServer(tmp_path, 'http://127.0.0.1:9292') as stack:
            requests.get(stack.url + '/v2/images', headers=...)
    """

    def __init__(self, state_dir: str | os.PathLike[str], upstream: str,
                 *, port: int | None = None, workers: int = 1,
                 threads: int = 4, flavor: str = glance.NOAUTH,
                 auth_url: str | None = None,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 access_log: bool = True, debug: bool = False,
                 proxy_options: Mapping[str, str] | None = None) -> None:
        super().__init__(state_dir, port=port, bare=False, workers=workers,
                         threads=threads, flavor=flavor, auth_url=auth_url,
                         max_lifetime=max_lifetime,
                         start_timeout=start_timeout,
                         stop_timeout=stop_timeout, access_log=access_log,
                         debug=debug)
        self.state = standalone.StandaloneState(os.fspath(state_dir))
        self.upstream = upstream
        # One thread of each worker stays free for health checks and the
        # stack's own API, whatever the upstream does.
        self.proxy_options = {
            'max_concurrent_transfers': str(max(1, threads - 1)),
            **dict(proxy_options or {})}

    def _prepare(self) -> None:
        standalone.prepare(self.state.path, self.upstream,
                           flavor=self.flavor, auth_url=self.auth_url,
                           debug=self.debug,
                           proxy_options=self.proxy_options)

    def _ready(self, port: int) -> bool:
        # Answered by the stack itself, whether the upstream is up or not.
        return answers(port, timeout=1.0, path=standalone.HEALTHCHECK)

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env[envvars.STANDALONE] = self.flavor
        return env

    def _command(self) -> list[str]:
        # gunicorn would take X-Forwarded-Proto from 127.0.0.1 callers as
        # the scheme: whether to trust it is [instance_aware_proxy]
        # trust_forwarded_headers' decision.
        *command, application = super()._command()
        return [*command, '--forwarded-allow-ips', '', application]

    def upstream_status(self, timeout: float = 5.0) -> int | None:
        """Status of ``GET /versions`` through the stack (502 or 504:
        the upstream does not answer); ``None`` if the stack did not."""
        if self.port is None:
            return None
        connection = http.client.HTTPConnection(HOST, self.port,
                                                timeout=timeout)
        try:
            connection.request('GET', '/versions')
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
