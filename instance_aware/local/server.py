"""Run the local Glance under gunicorn in a subprocess, on 127.0.0.1.

One gunicorn (``gthread`` workers, one Glance per worker) listens on two
ports: the stack port serves the ``stacked`` pipeline, the bare port the
``bare`` one (see :mod:`instance_aware.local.glance`).
:class:`StandaloneServer` runs the stack alone in front of a remote Glance
instead (:mod:`instance_aware.local.standalone`).  The server stops by
itself when the process that started it dies or its lifetime is over
(:mod:`instance_aware.local.gunicorn_conf`).
"""

from __future__ import annotations

import configparser
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Self

from instance_aware.local import envvars, glance, standalone

HOST = '127.0.0.1'

#: Lifetime of a server started without one (tests): half an hour.
DEFAULT_MAX_LIFETIME = 1800.0

_LOG_TAIL = 4000


class ServerError(Exception):
    """The server did not start; the message ends with its log."""


def write_ini(path: str, sections: Mapping[str, Mapping[str, str]],
              header: str = '') -> None:
    """Write an INI file of ``sections`` (``DEFAULT`` included), keys
    kept in their case, after ``header`` (comment lines)."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    for name, values in sections.items():
        if name != 'DEFAULT':
            parser.add_section(name)
        for key, value in values.items():
            parser.set(name, key, value)
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(header)
        parser.write(stream)


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something already listens on ``port`` (or may not bind).

    ``SO_REUSEADDR`` as gunicorn sets it: connections of a stopped server
    left in TIME_WAIT do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def answers(port: int, timeout: float = 2.0,
            path: str = '/versions') -> bool:
    """Whether Glance (or the stack) answers ``GET path`` on ``port``."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request('GET', path)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return status in (200, 300)


class ServerProcess:
    """A server in a subprocess of its own session, logging to a file.

    Subclasses say what to run (``_command``, ``_environment``), where
    (``workdir``, ``log_file``) and how to start it (``start``); the
    spawning, the log tail and the graceful stop are shared.
    """

    stop_timeout: float

    def __init__(self, stop_timeout: float) -> None:
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0

    @property
    def workdir(self) -> str:
        raise NotImplementedError

    @property
    def log_file(self) -> str:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _spawn(self) -> None:
        self._log = open(self.log_file, 'ab')  # noqa: SIM115 - kept open
        self._log_start = self._log.tell()
        # A session of its own: a Ctrl-C in the terminal reaches only the
        # caller, which then stops the server gracefully.
        self._process = subprocess.Popen(  # noqa: S603 - our own argv
            self._command(), env=self._environment(), cwd=self.workdir,
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self) -> str:
        """The end of what the current (or last) server wrote."""
        try:
            with open(self.log_file, 'rb') as stream:
                stream.seek(self._log_start)
                data = stream.read()
        except OSError:
            return ''
        return data[-_LOG_TAIL:].decode('utf-8', 'replace')

    def stop(self) -> int | None:
        """SIGTERM (graceful), then SIGKILL; the exit code, if started."""
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                code = process.wait(self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


class GlanceServer(ServerProcess):
    """A local Glance with the stack, for tests and ``instance-aware serve``.

    ::

        with GlanceServer(tmp_path) as server:
            requests.get(server.url + '/v2/images', headers=...)
    """

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 port: int | None = None, bare: bool = True,
                 bare_port: int | None = None, workers: int = 1,
                 threads: int = 4, flavor: str = glance.NOAUTH,
                 auth_url: str | None = None,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 access_log: bool = True, debug: bool = False) -> None:
        super().__init__(stop_timeout)
        self.state = glance.StateDir(os.fspath(state_dir))
        self._want_port = port
        self.bare = bare or bare_port is not None
        self._want_bare_port = bare_port
        self.workers = workers
        self.threads = threads
        self.flavor = flavor
        self.auth_url = auth_url
        self.max_lifetime = max_lifetime
        self.start_timeout = start_timeout
        self.access_log = access_log
        self.debug = debug
        self.port: int | None = None
        self.bare_port: int | None = None
        self.startup_seconds: float | None = None

    # -- where ------------------------------------------------------------

    @property
    def state_dir(self) -> str:
        return self.state.path

    @property
    def log_file(self) -> str:
        """gunicorn's and Glance's output (appended across starts)."""
        return self.state.log_file

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

    @property
    def workdir(self) -> str:
        return self.state.path

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> GlanceServer:
        """Prepare the state directory, start gunicorn, wait until served.

        Free ports are picked when none were given; a port taken between
        the pick and gunicorn's bind is retried with new ones.
        """
        if self.running:
            return self
        began = time.monotonic()
        given = [p for p in (self._want_port, self._want_bare_port)
                 if p is not None]
        self._check_free(given)
        self._prepare()
        retry = len(given) < (2 if self.bare else 1)
        for attempt in range(3 if retry else 1):
            self.port = self._want_port or free_port()
            self.bare_port = None
            if self.bare:
                self.bare_port = self._want_bare_port or free_port()
            try:
                self._check_free([self.port, self.bare_port])
            except ServerError:
                if attempt < 2 and retry:
                    continue
                raise
            self._spawn()
            try:
                self._wait_ready()
            except ServerError as exc:
                self.stop()
                if attempt < 2 and retry and 'in use' in str(exc):
                    continue
                raise
            break
        self.startup_seconds = time.monotonic() - began
        return self

    def _prepare(self) -> None:
        """Create or refresh the state directory (migrations included)."""
        glance.prepare(self.state.path, flavor=self.flavor,
                       auth_url=self.auth_url, debug=self.debug)

    def _ready(self, port: int) -> bool:
        """Whether the server answers on ``port`` yet."""
        return answers(port, timeout=1.0)

    @staticmethod
    def _check_free(ports: Sequence[int | None]) -> None:
        """Refuse a taken port: a server there would answer our checks."""
        for port in ports:
            if port is not None and port_in_use(port):
                raise ServerError(f'{HOST}:{port} is already in use')

    def _command(self) -> list[str]:
        assert self.port is not None
        command = [
            sys.executable, '-m', 'gunicorn',
            '-c', 'python:instance_aware.local.gunicorn_conf',
            '--worker-class', 'gthread',
            '--workers', str(self.workers),
            '--threads', str(self.threads),
            # A worker busy with a request still heartbeats (gthread);
            # only a worker stuck outside requests is killed.
            '--timeout', '120',
            '--graceful-timeout', str(max(1, int(self.stop_timeout) - 2)),
            '--error-logfile', '-',
            '--bind', f'{HOST}:{self.port}',
        ]
        if self.bare_port is not None:
            command += ['--bind', f'{HOST}:{self.bare_port}']
        if self.access_log:
            command += ['--access-logfile', '-']
        return [*command, 'instance_aware.local.wsgi:application']

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env[envvars.STATE_DIR] = self.state.path
        env[envvars.STACK_PORT] = str(self.port)
        env.pop(envvars.BARE_PORT, None)
        env.pop(envvars.STANDALONE, None)
        if self.bare_port is not None:
            env[envvars.BARE_PORT] = str(self.bare_port)
        env[envvars.PARENT_PID] = str(os.getpid())
        env[envvars.MAX_LIFETIME] = str(self.max_lifetime or 0)
        env['PYTHONUNBUFFERED'] = '1'
        return env

    def _wait_ready(self) -> None:
        assert self._process is not None and self.port is not None
        ports = [self.port]
        if self.bare_port is not None:
            ports.append(self.bare_port)
        deadline = time.monotonic() + self.start_timeout
        pending = list(ports)
        while pending:
            code = self._process.poll()
            if code is not None:
                raise ServerError(
                    f'gunicorn exited with code {code} before serving '
                    f'{HOST}:{pending[0]}; its log ({self.log_file}):\n'
                    f'{self.log_tail()}')
            if time.monotonic() > deadline:
                raise ServerError(
                    f'no answer on {HOST}:{pending[0]} within '
                    f'{self.start_timeout:g} s; log ({self.log_file}):\n'
                    f'{self.log_tail()}')
            if self._ready(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.1)

class StandaloneServer(GlanceServer):
    """The stack alone, forwarding to a remote Glance at ``upstream``.

    For tests and ``instance-aware serve --upstream``: no local Glance,
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
