"""Engines and sessions for the mapping database.

One engine per URL per process, shared by the filters of a stack and
created lazily (a database that is down at service start does not stop
Glance from starting; requests that need it get 503 instead).

SQLite is the embedded default: WAL journaling so readers never block the
writer, a busy timeout so concurrent API threads and worker processes wait
for the write lock instead of failing, and foreign keys on.  PostgreSQL and
MySQL/MariaDB get a bounded pool whose connections are checked before use
when they sat idle (see :func:`ping_idle_connections`), so a restarted
server does not fail the first requests after it comes back.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, orm
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from instance_aware.store import direct, errors
from instance_aware.store import retry as store_retry

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Pool entry info key: when the connection was last returned to the pool.
_IDLE_SINCE = 'instance_aware_idle_since'
WRITE_OPTION = 'instance_aware_write'

_lock = threading.Lock()
_engines: dict[str, sa.Engine] = {}
#: Engine -> its autocommit twin for reads (see :func:`reading_engine`).
_reading: weakref.WeakKeyDictionary[sa.Engine, sa.Engine] = (
    weakref.WeakKeyDictionary())
#: True in a forked child (one thread) while it drops the pools inherited
#: from its parent.
_in_fork_child = False


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f'PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}')
        cursor.execute('PRAGMA journal_mode = WAL')
        cursor.execute('PRAGMA synchronous = NORMAL')
        cursor.execute('PRAGMA foreign_keys = ON')
    finally:
        cursor.close()
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own
    # implicit BEGIN is DEFERRED and cannot be made IMMEDIATE).
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: sa.Connection) -> None:
    # A writing transaction reads, checks, then writes: take the write lock
    # up front so two API processes cannot both pass the check.  Readers
    # stay DEFERRED and, with WAL, never wait for a writer.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql('BEGIN IMMEDIATE')
    else:
        conn.exec_driver_sql('BEGIN')


def ping_idle_connections(engine: sa.Engine, after: float) -> None:
    """Check a pooled connection (``SELECT 1``) before use only if it sat
    idle in the pool for more than ``after`` seconds.

    SQLAlchemy's ``pool_pre_ping`` checks on every checkout: one more round
    trip on every request (a quarter of the rotation listing's time in
    PostgreSQL, see the architecture page), although a connection returned
    moments ago is as alive as the server.  A restart, a failover or a
    server's idle timeout leaves connections idle longer than that, so they
    are checked and replaced as with pre-ping; a connection that breaks
    while in use is detected by SQLAlchemy, which then replaces every
    connection of the pool.  ``after = 0`` checks on every checkout."""

    @event.listens_for(engine, 'checkin')
    def _idle_from_now(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, 'checkout')
    def _ping_if_idle(dbapi_connection: Any, record: Any,
                      proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= after:
            return  # just connected, or returned moments ago
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute('SELECT 1')
            cursor.fetchall()
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and opens another.
            raise sa_exc.DisconnectionError(str(exc)) from exc
        finally:
            with contextlib.suppress(engine.dialect.loaded_dbapi.Error):
                cursor.close()


def create_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10,
                  pool_timeout: int = 10, connect_timeout: int = 5,
                  ping_after_idle: float = 1.0) -> sa.Engine:
    """A new engine for ``url`` with the settings described above."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {'future': True}
    if backend == 'sqlite':
        database = parsed.database
        if database and database != ':memory:':
            directory = os.path.dirname(os.path.abspath(database))
            os.makedirs(directory, exist_ok=True)
        kwargs['connect_args'] = {'check_same_thread': False,
                                  'timeout': SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs.update(pool_size=pool_size,
                      max_overflow=max_overflow, pool_timeout=pool_timeout,
                      pool_recycle=3600)
        if backend == 'postgresql':
            kwargs['connect_args'] = {'connect_timeout': connect_timeout}
        elif backend in ('mysql', 'mariadb'):
            kwargs['connect_args'] = {'connect_timeout': connect_timeout,
                                      'charset': 'utf8mb4'}
    engine = sa.create_engine(parsed, **kwargs)
    if backend == 'sqlite':
        event.listen(engine, 'connect', _sqlite_pragmas)
        event.listen(engine, 'begin', _sqlite_begin)
    else:
        ping_idle_connections(engine, ping_after_idle)
    return engine


def _dispose_after_fork() -> None:
    # A worker forked from a process that already connected must not share
    # its sockets: drop the inherited pools without closing the parent's.
    global _in_fork_child
    _in_fork_child = True
    try:
        for engine in _engines.values():
            engine.dispose(close=False)
    finally:
        _in_fork_child = False


def reading_engine(engine: sa.Engine) -> sa.Engine:
    """The engine reads of ``engine``'s database run on.

    PostgreSQL: a twin whose connections stay in autocommit, with a pool
    of the same size (``pool.recreate()``: same settings and events, the
    idle check included).  A read then costs its statement and nothing
    else; on ``engine``'s own connections it would cost a BEGIN and a
    ROLLBACK, or switching the connection to autocommit and back (psycopg2
    sends the isolation level each time): two round trips, as much as the
    read itself.  Disposed with ``engine``.  Other backends: ``engine``
    itself (on MySQL a read costs its statement and the pool's ROLLBACK,
    and switching pymysql to autocommit would cost a round trip of its
    own; SQLite runs in the process).
    """
    if engine.dialect.name != 'postgresql':
        return engine
    with _lock:
        twin = _reading.get(engine)
        if twin is None:
            twin = _reading[engine] = sa.create_engine(
                engine.url, pool=engine.pool.recreate(),
                isolation_level='AUTOCOMMIT')
            event.listen(engine, 'engine_disposed', _dispose_twin)
    return twin


def _dispose_twin(engine: sa.Engine) -> None:
    twin = _reading.get(engine)
    if twin is not None:
        twin.dispose(close=not _in_fork_child)


os.register_at_fork(after_in_child=_dispose_after_fork)


def get_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10,
               pool_timeout: int = 10, connect_timeout: int = 5,
               ping_after_idle: float = 1.0) -> sa.Engine:
    """The process-wide engine for ``url``, made by :func:`create_engine`
    with these settings when the process first asks for ``url``."""
    engine = _engines.get(url)
    if engine is None:
        with _lock:
            engine = _engines.get(url)
            if engine is None:
                engine = _engines[url] = create_engine(
                    url, pool_size=pool_size, max_overflow=max_overflow,
                    pool_timeout=pool_timeout,
                    connect_timeout=connect_timeout,
                    ping_after_idle=ping_after_idle)
    return engine


def dispose_all() -> None:
    """Close every engine (tests and command line)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


class Database:
    """Sessions on one mapping database, with errors mapped to ours.

    ``retry`` is how store methods decorated with
    :func:`instance_aware.store.retry.transaction` re-run a write that lost
    a race (default: the policy's defaults).
    """

    def __init__(self, engine: sa.Engine,
                 retry: store_retry.RetryPolicy | None = None) -> None:
        self.engine = engine
        self.retry = retry or store_retry.RetryPolicy()
        self._readers = orm.sessionmaker(engine, expire_on_commit=False)
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._writers = orm.sessionmaker(self._write_engine,
                                         expire_on_commit=False)
        self._read_engine = reading_engine(engine)

    @contextlib.contextmanager
    def reader(self) -> Iterator[sa.Connection]:
        """A plain connection for reads that need no transaction: each
        statement sees a consistent snapshot of its own."""
        with errors.translated(), self._read_engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def writer(self) -> Iterator[sa.Connection]:
        """A read-check-write transaction on a plain connection (no ORM):
        committed on success, rolled back on error; on SQLite it takes the
        write lock at BEGIN, like ``session(write=True)``."""
        with errors.translated(), self._write_engine.begin() as connection:
            yield connection

    def rows(self, shapes: direct.Shapes, shape: Any,
             values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A hot read on the reading engine's driver cursor (see
        :mod:`instance_aware.store.direct`)."""
        return direct.rows(self._read_engine, shapes, shape, values)

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[orm.Session]:
        """A transaction: committed on success, rolled back on error.

        ``write`` marks a read-check-write transaction; on SQLite it takes
        the database write lock at BEGIN so concurrent checks serialise.
        """
        factory = self._writers if write else self._readers
        with errors.translated(), factory() as session, session.begin():
            yield session
