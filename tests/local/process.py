"""A local server under gunicorn, in a subprocess, on 127.0.0.1.

What Glance, Keystone and Barbican servers share: the state directory,
the ports (picked free, retried when taken between the pick and
gunicorn's bind), the gunicorn command line and environment, the wait
until the server answers, the log tail, the graceful stop.  Every server
stops by itself when the process that started it dies or its lifetime is
over (:mod:`tests.local.gunicorn_conf`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Self

from tests.local import envvars, statedir

HOST = '127.0.0.1'

#: Lifetime of a server started without one (tests): half an hour.
DEFAULT_MAX_LIFETIME = 1800.0

#: The checkout: gunicorn imports ``tests.local.*`` modules from it.
ROOT = str(pathlib.Path(__file__).resolve().parents[2])

_LOG_TAIL = 4000


class ServerError(Exception):
    """The server did not start; the message ends with its log."""


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


def answers(port: int, timeout: float = 2.0, path: str = '/versions',
            statuses: Sequence[int] = (200, 300),
            headers: Mapping[str, str] | None = None) -> bool:
    """Whether a server answers ``GET path`` on ``port`` with one of
    ``statuses`` (default: Glance's, or the stack's, version document)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request('GET', path, headers=dict(headers or {}))
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return status in statuses


def check_free(ports: Sequence[int | None]) -> None:
    """Refuse a taken port: a server there would answer our checks."""
    for port in ports:
        if port is not None and port_in_use(port):
            raise ServerError(f'{HOST}:{port} is already in use')


class ServerProcess:
    """A server in a subprocess of its own session, logging to a file.

    Subclasses say what to run (``_command``, ``_environment``), how to
    prepare its state (``_prepare``, ``_configure``) and when it answers
    (``_ready``); ``label`` names it in errors.
    """

    label = 'gunicorn'
    state: statedir.StateDir

    def __init__(self, state: statedir.StateDir, *,
                 port: int | None = None, python: str | None = None,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 debug: bool = False) -> None:
        self.state = state
        self._want_port = port
        self.python = python or sys.executable
        self.max_lifetime = max_lifetime
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.debug = debug
        self.port: int | None = None
        self._ports: list[int] = []
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0

    # -- what subclasses say ----------------------------------------------

    def _wanted_ports(self) -> list[int | None]:
        """The ports to bind, ``None`` for one to pick (the first is
        :attr:`port`)."""
        return [self._want_port]

    def _bind(self, ports: Sequence[int]) -> None:
        """Record the ports picked for this attempt."""
        self._ports = list(ports)
        self.port = ports[0]

    def _prepare(self) -> None:
        """Create or refresh the state directory, once per start."""
        os.makedirs(self.state.path, exist_ok=True)

    def _configure(self) -> None:
        """Write what depends on the port, before each attempt."""

    def _ready(self, port: int) -> bool:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    # -- where --------------------------------------------------------------

    @property
    def state_dir(self) -> str:
        return self.state.path

    @property
    def log_file(self) -> str:
        return self.state.log_file

    @property
    def workdir(self) -> str:
        return self.state.path

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        """Prepare the state directory, start gunicorn, wait until served.

        Free ports are picked when none were given; a port taken between
        the pick and gunicorn's bind is retried with new ones.
        """
        if self.running:
            return self
        began = time.monotonic()
        wanted = self._wanted_ports()
        check_free(wanted)
        self._prepare()
        attempts = 3 if None in wanted else 1
        for attempt in range(attempts):
            ports = [port or free_port() for port in wanted]
            self._bind(ports)
            try:
                check_free(ports)
            except ServerError:
                if attempt + 1 < attempts:
                    continue
                raise
            self._configure()
            self._spawn()
            try:
                self._wait_ready(ports)
            except ServerError as exc:
                self.stop()
                if attempt + 1 < attempts and 'in use' in str(exc):
                    continue
                raise
            break
        self.startup_seconds = time.monotonic() - began
        return self

    def _gunicorn(self, application: str, *, workers: int, threads: int,
                  timeout: int, access_log: bool = True) -> list[str]:
        """gunicorn's command line, bound to the ports of the attempt."""
        command = [
            self.python, '-m', 'gunicorn',
            '-c', 'python:tests.local.gunicorn_conf',
            '--worker-class', 'gthread',
            '--workers', str(workers), '--threads', str(threads),
            # A worker busy with a request still heartbeats (gthread);
            # only a worker stuck outside requests is killed.
            '--timeout', str(timeout),
            '--graceful-timeout', str(max(1, int(self.stop_timeout) - 2)),
            '--error-logfile', '-',
        ]
        for port in self._ports:
            command += ['--bind', f'{HOST}:{port}']
        if access_log:
            command += ['--access-logfile', '-']
        return [*command, application]

    def _environment(self) -> dict[str, str]:
        """This process's environment, the checkout importable, the
        watchdog told who to outlive and for how long."""
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            path for path in (ROOT, env.get('PYTHONPATH')) if path)
        env[envvars.PARENT_PID] = str(os.getpid())
        env[envvars.MAX_LIFETIME] = str(self.max_lifetime or 0)
        env['PYTHONUNBUFFERED'] = '1'
        return env

    def _spawn(self) -> None:
        self._log = open(self.log_file, 'ab')  # noqa: SIM115 - kept open
        self._log_start = self._log.tell()
        # A session of its own: a Ctrl-C in the terminal reaches only the
        # caller, which then stops the server gracefully.
        self._process = subprocess.Popen(
            self._command(), env=self._environment(), cwd=self.workdir,
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, ports: Sequence[int]) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        pending = list(ports)
        while pending:
            code = self._process.poll()
            if code is not None:
                raise ServerError(
                    f'{self.label} exited with code {code} before serving '
                    f'{HOST}:{pending[0]}; its log ({self.log_file}):\n'
                    f'{self.log_tail()}')
            if time.monotonic() > deadline:
                raise ServerError(
                    f'{self.label}: no answer on {HOST}:{pending[0]} within '
                    f'{self.start_timeout:g} s; log ({self.log_file}):\n'
                    f'{self.log_tail()}')
            if self._ready(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.1)

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
