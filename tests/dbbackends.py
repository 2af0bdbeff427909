"""Throw-away databases on SQLite, PostgreSQL and MariaDB/MySQL for tests.

Every test that takes :func:`db_url` runs once per backend on a brand-new
empty database that is dropped afterwards, so tests never share state and
can run in any order.  PostgreSQL runs twice: with psycopg (3), the driver
the documentation recommends, and with psycopg2, what many Glance
deployments already have.  Servers default to the local ones; point the tests
elsewhere with server-level URLs (no database) in
``INSTANCE_AWARE_TEST_POSTGRESQL_URL`` / ``INSTANCE_AWARE_TEST_MYSQL_URL``.

A server that cannot be reached skips its tests with the reason, except in
CI (``CI=true``), where it fails them: a CI run that silently tested only
SQLite would pass for the wrong reason.

Import the fixtures into a ``conftest.py`` to use them::

    from tests.dbbackends import db_engine, db_url, migrated_engine
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
from collections.abc import Iterator
from typing import NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from instance_aware.store import engine as ia_engine
from instance_aware.store import migration

SQLITE = 'sqlite'
POSTGRESQL = 'postgresql'
MYSQL = 'mysql'
BACKENDS = (SQLITE, POSTGRESQL, MYSQL)

ENV_URLS = {POSTGRESQL: 'INSTANCE_AWARE_TEST_POSTGRESQL_URL',
            MYSQL: 'INSTANCE_AWARE_TEST_MYSQL_URL'}

#: Tried in order when the environment names no server: the local
#: PostgreSQL trusts ``postgres`` on most hosts, ``root`` on some.
DEFAULT_URLS = {
    POSTGRESQL: ('postgresql+psycopg://postgres@127.0.0.1:5432/postgres',
                 'postgresql+psycopg://root@127.0.0.1:5432/postgres'),
    MYSQL: ('mysql+pymysql://root@127.0.0.1:3306/',),
}

CONNECT_TIMEOUT = 5

#: backend -> server URL, or the reason no server could be used; probed
#: once per process so a missing server costs one timeout, not one per test.
_servers: dict[str, URL | str] = {}


def in_ci() -> bool:
    """Whether missing servers must fail the run instead of skipping."""
    return os.environ.get('CI', '').lower() == 'true'


def unavailable(reason: str) -> NoReturn:
    """Skip the current test, or fail it in CI (never skip silently)."""
    if in_ci():
        pytest.fail(f'{reason} (CI=true: database servers are required)')
    pytest.skip(reason)


def backend_of(url: str | URL) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB included)."""
    name = make_url(url).get_backend_name()
    return MYSQL if name == 'mariadb' else name


def _admin_engine(server: URL) -> sa.Engine:
    # Autocommit: CREATE/DROP DATABASE cannot run in a transaction on
    # PostgreSQL.  No pool: nothing stays connected to the server.
    return sa.create_engine(server, poolclass=NullPool,
                            isolation_level='AUTOCOMMIT',
                            connect_args={'connect_timeout': CONNECT_TIMEOUT})


def _server_level(url: URL, backend: str) -> URL:
    # PostgreSQL needs some database to connect to: its maintenance one.
    if backend == POSTGRESQL and not url.database:
        return url.set(database='postgres')
    if backend == MYSQL:
        return url.set(database=None)
    return url


def _probe(url: URL) -> str | None:
    """Why ``url`` cannot be used, or ``None`` if it can."""
    try:
        engine = _admin_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text('SELECT 1'))
        finally:
            engine.dispose()
    except (sa.exc.DBAPIError, ImportError) as exc:
        text = str(getattr(exc, 'orig', None) or exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def server_url(backend: str) -> URL:
    """A reachable server URL for ``backend``, else skip/fail the test."""
    if backend not in _servers:
        configured = os.environ.get(ENV_URLS[backend])
        candidates = ((configured,) if configured
                      else DEFAULT_URLS[backend])
        reasons = []
        for candidate in candidates:
            url = _server_level(make_url(candidate), backend)
            reason = _probe(url)
            if reason is None:
                _servers[backend] = url
                break
            reasons.append(f'{url.render_as_string()}: {reason}')
        else:
            _servers[backend] = (
                f'no {backend} server for the database tests '
                f"({'; '.join(reasons)}); set {ENV_URLS[backend]}")
    found = _servers[backend]
    if isinstance(found, str):
        unavailable(found)
    return found


def _drop(server: URL, backend: str, name: str) -> None:
    engine = _admin_engine(server)
    try:
        with engine.connect() as connection:
            if backend == POSTGRESQL:
                # Tests may leave pooled connections (engines they did not
                # dispose); PostgreSQL refuses to drop a database in use.
                version = connection.dialect.server_version_info or (0,)
                if version >= (13,):
                    connection.execute(sa.text(
                        f'DROP DATABASE IF EXISTS {name} WITH (FORCE)'))
                    return
                connection.execute(sa.text(
                    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity'
                    ' WHERE datname = :name AND pid <> pg_backend_pid()'),
                    {'name': name})
            else:
                # An idle transaction left open elsewhere holds metadata
                # locks: fail the teardown rather than hang on them.
                connection.execute(sa.text(
                    'SET SESSION lock_wait_timeout = 30'))
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS {name}'))
    finally:
        engine.dispose()


def sqlite_url(directory: pathlib.Path) -> str:
    """The URL of a new SQLite file in ``directory``."""
    return f'sqlite:///{directory / "ia_test.sqlite"}'


def migrated_sqlite(directory: pathlib.Path) -> str:
    """The URL of a new SQLite mapping database in ``directory``, at the
    head revision (for tests that hand a URL to the code under test)."""
    url = sqlite_url(directory)
    engine = ia_engine.create_engine(url)
    try:
        migration.upgrade(engine)
    finally:
        engine.dispose()
    return url


@contextlib.contextmanager
def throwaway_database(backend: str, directory: pathlib.Path,
                       driver: str | None = None) -> Iterator[str]:
    """A brand-new empty database of ``backend``, dropped on exit; its URL
    (with ``driver`` instead of the server URL's, if given).

    The building block of :func:`db_url`, for fixtures of other scopes
    (a functional test session sharing one database, say).
    """
    if backend == SQLITE:
        yield sqlite_url(directory)
        return
    server = server_url(backend)
    name = f'ia_test_{secrets.token_hex(6)}'
    engine = _admin_engine(server)
    try:
        with engine.connect() as connection:
            charset = ' CHARACTER SET utf8mb4' if backend == MYSQL else ''
            connection.execute(sa.text(f'CREATE DATABASE {name}{charset}'))
    finally:
        engine.dispose()
    url = server.set(database=name)
    if driver is not None:
        url = url.set(drivername=f'{backend}+{driver}')
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        _drop(server, backend, name)


#: What :func:`db_url` runs on: (backend, driver), with its test id.
DB_PARAMS = [
    pytest.param((SQLITE, None), id=SQLITE, marks=pytest.mark.database),
    pytest.param((POSTGRESQL, None), id=POSTGRESQL,
                 marks=pytest.mark.database),
    pytest.param((POSTGRESQL, 'psycopg2'), id='postgresql-psycopg2',
                 marks=pytest.mark.database),
    pytest.param((MYSQL, None), id=MYSQL, marks=pytest.mark.database),
]


@pytest.fixture(params=DB_PARAMS)
def db_url(request: pytest.FixtureRequest,
           tmp_path: pathlib.Path) -> Iterator[str]:
    """SQLAlchemy URL (a ``str``) of a brand-new empty database.

    Parametrized over ``sqlite`` (a file in ``tmp_path``), ``postgresql``
    (psycopg, and psycopg2) and ``mysql``; the database is dropped after
    the test.
    """
    backend, driver = request.param
    with throwaway_database(backend, tmp_path, driver) as url:
        yield url


@pytest.fixture
def db_engine(db_url: str) -> Iterator[sa.Engine]:
    """The project's engine (:func:`create_engine`) on :func:`db_url`."""
    engine = ia_engine.create_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def migrated_engine(db_engine: sa.Engine) -> sa.Engine:
    """:func:`db_engine` with the schema upgraded to head."""
    migration.upgrade(db_engine)
    return db_engine
