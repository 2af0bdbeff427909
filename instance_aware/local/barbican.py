"""A real Barbican 23 key manager on 127.0.0.1, for the key lifecycle tests.

Barbican ships no WSGI script usable outside ``/etc/barbican``
(``barbican.wsgi.api`` hard-codes ``/etc/barbican/barbican-api-paste.ini``),
and its crypto plugins parse their configuration *without* command-line
arguments, from oslo.config's default places only.  So a state directory
holds everything, and the server runs with ``HOME`` pointing into it:

* ``home/.barbican/barbican.conf``: SQLite database, ``db_auto_create``,
  the ``simple_crypto`` plugin with a key-encryption key made for this
  state directory (so secrets never outlive it), logs on stderr;
* ``barbican-api-paste.ini``: the stock file with the ``/v1`` pipeline
  replaced by ``cors request_id http_proxy_to_wsgi context microversion
  apiapp``: Barbican's own ``context`` filter *without* ``authtoken``.  It
  trusts ``X-Identity-Status: Confirmed``, ``X-Project-Id``, ``X-User-Id``
  and ``X-Roles``: whoever reaches the port is whoever they claim to be.
  (The stock unauthenticated pipeline fails with 500 since Barbican 22.)

gunicorn serves it with one worker and one thread: Barbican on SQLite gives
"database is locked" errors under concurrent writers.  The watchdog of
:mod:`instance_aware.local.gunicorn_conf` stops it when the process that
started it dies or its lifetime is over, so a killed test run never leaves
a key manager behind.
"""

from __future__ import annotations

import base64
import configparser
import dataclasses
import http.client
import importlib.util
import os
import secrets
import sys
import sysconfig
import time

from instance_aware.local import envvars
from instance_aware.local.server import (
    HOST,
    ServerError,
    ServerProcess,
    free_port,
    port_in_use,
    write_ini,
)

#: The paste file :mod:`instance_aware.local.barbican_wsgi` loads.
PASTE_ENV = 'INSTANCE_AWARE_BARBICAN_PASTE'

#: The ``/v1`` pipeline: Barbican's context filter, no ``authtoken``.
TRUSTING_PIPELINE = ('cors request_id http_proxy_to_wsgi context '
                     'microversion apiapp')

#: Lifetime of a server started without one (tests): half an hour.
DEFAULT_MAX_LIFETIME = 1800.0

_LOG_TAIL = 4000


def available() -> bool:
    """Whether Barbican is importable by this interpreter."""
    return importlib.util.find_spec('barbican') is not None


def stock_paste_file() -> str:
    """``etc/barbican/barbican-api-paste.ini`` of the installed Barbican.

    The wheel installs it as data under the environment's prefix, not in
    the package.
    """
    candidates = [os.path.join(sysconfig.get_path('data'), 'etc',
                               'barbican', 'barbican-api-paste.ini'),
                  os.path.join(sys.prefix, 'etc', 'barbican',
                               'barbican-api-paste.ini')]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise ServerError('barbican-api-paste.ini not found under '
                      f'{sys.prefix}/etc/barbican: install barbican==23.0.0')


@dataclasses.dataclass(frozen=True)
class StateDir:
    """Where one local Barbican keeps everything; paths are absolute."""

    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, 'path', os.path.abspath(self.path))

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def home(self) -> str:
        """``HOME`` of the server: oslo.config finds the file below."""
        return self.join('home')

    @property
    def config_file(self) -> str:
        return self.join('home', '.barbican', 'barbican.conf')

    @property
    def paste_file(self) -> str:
        return self.join('barbican-api-paste.ini')

    @property
    def database(self) -> str:
        return self.join('barbican.sqlite')

    @property
    def kek_file(self) -> str:
        return self.join('kek')

    @property
    def log_file(self) -> str:
        return self.join('server.log')


def _kek(state: StateDir) -> str:
    """The key-encryption key of this state directory (made once)."""
    try:
        with open(state.kek_file, encoding='ascii') as stream:
            return stream.read().strip()
    except FileNotFoundError:
        pass
    kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode('ascii')
    fd = os.open(state.kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='ascii') as stream:
        stream.write(kek + '\n')
    return kek


def prepare(state: StateDir, port: int, *, debug: bool = False) -> None:
    """Write the configuration and paste file for a server on ``port``.

    Regenerated on every start (``host_href`` names the port); the
    database and the key-encryption key are kept.
    """
    os.makedirs(os.path.dirname(state.config_file), exist_ok=True)
    write_ini(state.config_file, {
        'DEFAULT': {
            'host_href': f'http://{HOST}:{port}',
            'db_auto_create': 'True',
            'debug': str(debug),
            'use_stderr': 'True',
        },
        'database': {'connection': f'sqlite:///{state.database}'},
        'secretstore': {'enabled_secretstore_plugins': 'store_crypto'},
        'crypto': {'enabled_crypto_plugins': 'simple_crypto'},
        'simple_crypto_plugin': {'kek': _kek(state)},
    }, '# Written by instance_aware.local.barbican on every start.\n\n')
    stock = configparser.RawConfigParser()
    stock.optionxform = str  # type: ignore[assignment,method-assign]
    stock.read(stock_paste_file(), encoding='utf-8')
    stock.set('pipeline:barbican-api-keystone', 'pipeline',
              TRUSTING_PIPELINE)
    # Nothing may read /etc/barbican of the machine.
    stock.set('app:healthcheck', 'disable_by_file_path',
              state.join('healthcheck_disable'))
    with open(state.paste_file, 'w', encoding='utf-8') as stream:
        stream.write('# Barbican\'s paste file, /v1 without authtoken '
                     '(instance_aware.local.barbican).\n\n')
        stock.write(stream)


def answers(port: int, timeout: float = 2.0) -> bool:
    """Whether Barbican answers its version document on ``port``."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request('GET', '/', headers={'Accept':
                                                'application/json'})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return status in (200, 300)


class BarbicanServer(ServerProcess):
    """A local, header-trusting Barbican under gunicorn.

    ::

        with BarbicanServer(tmp_path) as barbican:
            requests.get(barbican.url + '/v1/secrets', headers=...)

    ``python`` is the interpreter that runs it (default: this one); it
    needs ``barbican``, ``gunicorn`` and ``instance_aware`` importable.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 port: int | None = None, python: str | None = None,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 debug: bool = False) -> None:
        super().__init__(stop_timeout)
        self.state = StateDir(os.fspath(state_dir))
        self._want_port = port
        self.python = python or sys.executable
        self.max_lifetime = max_lifetime
        self.start_timeout = start_timeout
        self.debug = debug
        self.port: int | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError('the key manager is not started')
        return f'http://{HOST}:{self.port}'

    @property
    def log_file(self) -> str:
        return self.state.log_file

    @property
    def workdir(self) -> str:
        return self.state.path

    def start(self) -> BarbicanServer:
        """Prepare the state directory, start gunicorn, wait until served.

        A restart keeps the port of the first start, so the endpoint that
        clients were configured with stays valid.  A port taken between
        the pick and gunicorn's bind is retried with a new one (first
        start without a given port only).
        """
        if self.running:
            return self
        began = time.monotonic()
        os.makedirs(self.state.path, exist_ok=True)
        fixed = self._want_port or self.port
        attempts = 1 if fixed else 3
        for attempt in range(attempts):
            self.port = fixed or free_port()
            if port_in_use(self.port):
                if attempt + 1 < attempts:
                    continue
                raise ServerError(f'{HOST}:{self.port} is already in use')
            prepare(self.state, self.port, debug=self.debug)
            self._spawn()
            try:
                self._wait_ready()
            except ServerError as exc:
                self.stop()
                if attempt + 1 < attempts and 'in use' in str(exc):
                    continue
                raise
            break
        self.startup_seconds = time.monotonic() - began
        return self

    def _command(self) -> list[str]:
        assert self.port is not None
        return [
            self.python, '-m', 'gunicorn',
            '-c', 'python:instance_aware.local.gunicorn_conf',
            '--worker-class', 'gthread', '--workers', '1', '--threads', '1',
            '--timeout', '60',
            '--graceful-timeout', str(max(1, int(self.stop_timeout) - 2)),
            '--error-logfile', '-', '--access-logfile', '-',
            '--bind', f'{HOST}:{self.port}',
            'instance_aware.local.barbican_wsgi:application',
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env['HOME'] = self.state.home
        env[PASTE_ENV] = self.state.paste_file
        env[envvars.PARENT_PID] = str(os.getpid())
        env[envvars.MAX_LIFETIME] = str(self.max_lifetime or 0)
        env['PYTHONUNBUFFERED'] = '1'
        # No proxy may stand between the tests and 127.0.0.1.
        env['NO_PROXY'] = env['no_proxy'] = HOST
        return env

    def _wait_ready(self) -> None:
        assert self._process is not None and self.port is not None
        deadline = time.monotonic() + self.start_timeout
        while not answers(self.port, timeout=1.0):
            code = self._process.poll()
            if code is not None:
                raise ServerError(
                    f'Barbican (gunicorn) exited with code {code} before '
                    f'serving {HOST}:{self.port}; its log '
                    f'({self.log_file}):\n{self.log_tail()}')
            if time.monotonic() > deadline:
                raise ServerError(
                    f'Barbican: no answer on {HOST}:{self.port} within '
                    f'{self.start_timeout:g} s; log ({self.log_file}):\n'
                    f'{self.log_tail()}')
            time.sleep(0.1)

