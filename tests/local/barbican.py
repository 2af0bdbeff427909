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
:mod:`tests.local.gunicorn_conf` stops it when the process that
started it dies or its lifetime is over, so a killed test run never leaves
a key manager behind.
"""

from __future__ import annotations

import base64
import configparser
import importlib.util
import os
import secrets
import sys
import sysconfig

from tests.local import statedir
from tests.local.process import (
    DEFAULT_MAX_LIFETIME,
    HOST,
    ServerError,
    ServerProcess,
    answers,
)
from tests.local.statedir import secret_file, write_ini

#: The paste file :mod:`tests.local.barbican_wsgi` loads.
PASTE_ENV = 'INSTANCE_AWARE_BARBICAN_PASTE'

#: The ``/v1`` pipeline: Barbican's context filter, no ``authtoken``.
TRUSTING_PIPELINE = ('cors request_id http_proxy_to_wsgi context '
                     'microversion apiapp')

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


class StateDir(statedir.StateDir):
    """Where one local Barbican keeps everything."""

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


def _kek(state: StateDir) -> str:
    """The key-encryption key of this state directory (made once)."""
    return secret_file(state.kek_file, lambda: base64.urlsafe_b64encode(
        secrets.token_bytes(32)).decode('ascii'))


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
    }, '# Written by tests.local.barbican on every start.\n\n')
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
                     '(tests.local.barbican).\n\n')
        stock.write(stream)


class BarbicanServer(ServerProcess):
    """A local, header-trusting Barbican under gunicorn.

    ::

        with BarbicanServer(tmp_path) as barbican:
            requests.get(barbican.url + '/v1/secrets', headers=...)

    ``python`` is the interpreter that runs it (default: this one); it
    needs ``barbican``, ``gunicorn`` and ``instance_aware`` importable
    (``tests.local`` comes from the checkout, on ``PYTHONPATH``).
    """

    label = 'Barbican (gunicorn)'
    state: StateDir

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 port: int | None = None, python: str | None = None,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 debug: bool = False) -> None:
        super().__init__(StateDir(os.fspath(state_dir)), port=port,
                         python=python, max_lifetime=max_lifetime,
                         start_timeout=start_timeout,
                         stop_timeout=stop_timeout, debug=debug)

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError('the key manager is not started')
        return f'http://{HOST}:{self.port}'

    def _wanted_ports(self) -> list[int | None]:
        # A restart keeps the port of the first start, so the endpoint
        # that clients were configured with stays valid.
        return [self._want_port or self.port]

    def _configure(self) -> None:
        assert self.port is not None
        prepare(self.state, self.port, debug=self.debug)

    def _ready(self, port: int) -> bool:
        return answers(port, timeout=1.0, path='/',
                       headers={'Accept': 'application/json'})

    def _command(self) -> list[str]:
        # One thread: Barbican on SQLite says "database is locked" to
        # concurrent writers.
        return self._gunicorn('tests.local.barbican_wsgi:application',
                              workers=1, threads=1, timeout=60)

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env['HOME'] = self.state.home
        env[PASTE_ENV] = self.state.paste_file
        # No proxy may stand between the tests and 127.0.0.1.
        env['NO_PROXY'] = env['no_proxy'] = HOST
        return env
