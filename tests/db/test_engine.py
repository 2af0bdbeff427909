"""Engines and sessions: SQLite settings, cascades, error mapping, locking.

What the filters count on from :mod:`instance_aware.store.engine`: a
database that is down becomes :class:`StoreUnavailable` (a 503), a lost
race :class:`Conflict`, neither leaves a partial write; deleting an image
row takes its property and relation rows with it; and on SQLite, API
threads and worker processes writing at once wait for each other instead
of failing with "database is locked".
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from instance_aware.store import direct, errors, migration, models
from instance_aware.store import engine as ia_engine
from tests.dbbackends import sqlite_url, throwaway_database

pytestmark = pytest.mark.database

INSTANCE = '5e2f7c3a-95a5-4b8e-9d7c-2a4f5c1e8b90'
IMAGE = '0b9f3d6e-1c2a-4e5f-8a7b-6c5d4e3f2a1b'
OTHER_IMAGE = 'e4d3c2b1-a098-4765-b321-0fedcba98765'


@pytest.fixture
def sqlite_engine(tmp_path: pathlib.Path) -> Iterator[sa.Engine]:
    """A migrated engine on a new SQLite file."""
    engine = ia_engine.create_engine(sqlite_url(tmp_path))
    migration.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _image(image_id: str, registry_id: str = 'r') -> models.Image:
    """An image row with what a captured backup has: keys, relation, key."""
    return models.Image(
        registry_id=registry_id, image_id=image_id, project_id='p',
        state=models.ACTIVE,
        properties=[
            models.Property(concern=models.INSTANCE, name='instance_uuid',
                            value=INSTANCE, value_index=INSTANCE),
            models.Property(concern=models.INSTANCE, name='image_type',
                            value='backup', value_index='backup')],
        relation=models.Relation(instance_uuid=INSTANCE,
                                 image_type='backup', trusted=True),
        encryption_keys=[models.EncryptionKey(key_id=INSTANCE)])


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {name: connection.scalar(
                    sa.select(sa.func.count()).select_from(table)) or 0
                for name, table in models.Base.metadata.tables.items()}


def _rows(images: int) -> dict[str, int]:
    """Row counts of ``images`` images as made by :func:`_image`."""
    return {'ia_images': images, 'ia_properties': 2 * images,
            'ia_relations': images, 'ia_encryption_keys': images,
            # Digests of image data are kept apart from captured keys.
            'ia_image_data': 0}


def test_sqlite_journal_foreign_keys_and_busy_timeout(
        tmp_path: pathlib.Path) -> None:
    engine = ia_engine.create_engine(sqlite_url(tmp_path / 'new' / 'dir'))
    try:
        with engine.connect() as connection:
            def pragma(name: str) -> Any:
                return connection.exec_driver_sql(f'PRAGMA {name}').scalar()

            assert pragma('journal_mode') == 'wal'
            assert pragma('foreign_keys') == 1
            assert pragma('busy_timeout') == ia_engine.SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_orm_delete_of_an_image_removes_its_rows(
        migrated_engine: sa.Engine) -> None:
    db = ia_engine.Database(migrated_engine)
    with db.session() as session:
        session.add_all([_image(IMAGE), _image(OTHER_IMAGE)])
    assert _counts(migrated_engine) == _rows(2)
    with db.session() as session:
        session.delete(session.scalars(sa.select(models.Image).where(
            models.Image.image_id == IMAGE)).one())
    assert _counts(migrated_engine) == _rows(1)


def test_database_cascades_and_enforces_foreign_keys(
        migrated_engine: sa.Engine) -> None:
    """Without the ORM: the foreign keys themselves (``ON DELETE CASCADE``).

    SQLite only enforces them with ``PRAGMA foreign_keys``, which the engine
    turns on for every connection.
    """
    db = ia_engine.Database(migrated_engine)
    with db.session() as session:
        session.add_all([_image(IMAGE), _image(OTHER_IMAGE)])
    images = models.Base.metadata.tables['ia_images']
    with migrated_engine.begin() as connection:
        connection.execute(sa.delete(images).where(
            images.c.image_id == IMAGE))
    assert _counts(migrated_engine) == _rows(1)
    with pytest.raises(errors.Conflict), db.session() as session:
        session.add(models.Property(image_ref=10**6, concern='instance',
                                    name='n', value='v', value_index='v'))
    assert _counts(migrated_engine) == _rows(1)


@pytest.mark.parametrize('url', [
    pytest.param('postgresql+psycopg2://ia:secret@127.0.0.1:1/ia',
                 id='postgresql'),
    pytest.param('mysql+pymysql://ia:secret@127.0.0.1:1/ia', id='mysql'),
    pytest.param('sqlite:///{tmp_path}', id='sqlite-directory'),
])
def test_unreachable_database_is_store_unavailable(
        url: str, tmp_path: pathlib.Path) -> None:
    """Port 1 refuses connections; a directory is no SQLite file."""
    engine = ia_engine.create_engine(url.format(tmp_path=tmp_path),
                                     connect_timeout=2)
    try:
        with pytest.raises(errors.StoreUnavailable), \
                ia_engine.Database(engine).session() as session:
            session.execute(sa.text('SELECT 1'))
        with pytest.raises(errors.StoreUnavailable), errors.translated():
            engine.connect().close()
        # Hot reads on the driver's cursor connect through the pool too.
        with pytest.raises(errors.StoreUnavailable):
            _read_one(ia_engine.Database(engine))
    finally:
        engine.dispose()


def test_unique_violation_is_conflict_and_writes_nothing(
        migrated_engine: sa.Engine) -> None:
    db = ia_engine.Database(migrated_engine)
    with pytest.raises(errors.Conflict), db.session() as session:
        session.add_all([_image(IMAGE), _image(IMAGE)])
    assert _counts(migrated_engine) == _rows(0)

    with db.session() as session:
        session.add(_image(IMAGE))
    with pytest.raises(errors.Conflict), db.session() as session:
        session.add(_image(OTHER_IMAGE))
        session.flush()
        session.add(_image(IMAGE))
    assert _counts(migrated_engine) == _rows(1)

    with db.session() as session:  # unique per registry only
        session.add(_image(IMAGE, registry_id='another-glance'))
    assert _counts(migrated_engine) == _rows(2)


def _write_images(db: ia_engine.Database, prefix: str, count: int) -> None:
    """``count`` transactions shaped like a capture: look up, then insert.

    The lookup first matters on SQLite: a deferred transaction that reads
    before it writes fails with "database is locked" when another writer
    committed in between, whatever the busy timeout.  ``write=True`` takes
    the write lock at BEGIN, which is what the store's writers do.
    """
    for number in range(count):
        image_id = f'{prefix}-{number:04d}'
        with db.session(write=True) as session:
            found = session.scalars(sa.select(models.Image).where(
                models.Image.image_id == image_id)).one_or_none()
            assert found is None
            session.add(_image(image_id))


def test_concurrent_writer_threads(migrated_engine: sa.Engine) -> None:
    """8 API threads x 25 writes on one engine, all at once."""
    db = ia_engine.Database(migrated_engine)
    threads, count = 8, 25
    start = threading.Barrier(threads)

    def writer(prefix: str) -> None:
        start.wait(timeout=30)
        _write_images(db, prefix, count)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(writer, f't{n}') for n in range(threads)]
        for future in futures:
            future.result(timeout=120)
    assert _counts(migrated_engine) == _rows(threads * count)


def _write_from_process(url: str, prefix: str, count: int,
                        start: Any) -> None:
    """A worker process: its own engine, as each Glance API worker has."""
    start.wait(30)
    engine = ia_engine.create_engine(url)
    try:
        _write_images(ia_engine.Database(engine), prefix, count)
    finally:
        engine.dispose()


def test_concurrent_writer_processes_on_sqlite(
        sqlite_engine: sa.Engine) -> None:
    """2 worker processes x 25 writes on one SQLite file, at once."""
    context = multiprocessing.get_context('spawn')
    start = context.Event()
    url = sqlite_engine.url.render_as_string(hide_password=False)
    processes = [context.Process(target=_write_from_process,
                                 args=(url, f'p{n}', 25, start))
                 for n in range(2)]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    assert _counts(sqlite_engine) == _rows(50)


# -- connections that sat idle ------------------------------------------------


def _backend_pid(connection: sa.Connection) -> int:
    query = ('SELECT pg_backend_pid()'
             if connection.dialect.name == 'postgresql'
             else 'SELECT CONNECTION_ID()')
    return int(connection.exec_driver_sql(query).scalar_one())


def _kill(admin: sa.Engine, pid: int) -> None:
    """What a server restart or its idle timeout does to one session."""
    with admin.connect() as connection:
        if connection.dialect.name == 'postgresql':
            connection.exec_driver_sql(
                f'SELECT pg_terminate_backend({pid})')
        else:
            connection.exec_driver_sql(f'KILL {pid}')


@pytest.fixture(params=['postgresql', 'mysql'])
def server_engines(request: pytest.FixtureRequest, tmp_path: pathlib.Path
                   ) -> Iterator[tuple[str, sa.Engine]]:
    """A database on each server backend (SQLite has no connection for a
    server to close), and an unpooled engine to kill sessions with."""
    with throwaway_database(request.param, tmp_path) as url:
        admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            yield url, admin
        finally:
            admin.dispose()


@pytest.mark.parametrize(('ping_after_idle', 'idle', 'first_read_fails'), [
    # Sat idle longer than the setting: checked at checkout, found dead
    # and replaced, so the read succeeds.
    pytest.param(0.2, 0.3, False, id='idle-checked'),
    # Returned moments ago: used without a SELECT 1 round trip (the hot
    # path), so a connection killed meanwhile fails its read (503); the
    # pool then replaces it and the next read succeeds.
    pytest.param(60, 0, True, id='recent-not-checked'),
])
def test_a_connection_the_server_closed_is_replaced(
        server_engines: tuple[str, sa.Engine], ping_after_idle: float,
        idle: float, first_read_fails: bool) -> None:
    url, admin = server_engines
    engine = ia_engine.create_engine(url, pool_size=1, max_overflow=0,
                                     ping_after_idle=ping_after_idle)
    database = ia_engine.Database(engine)
    try:
        with database.reader() as connection:
            first = _backend_pid(connection)
        _kill(admin, first)
        time.sleep(idle)
        if first_read_fails:
            with pytest.raises(errors.StoreUnavailable), (
                    database.reader()) as connection:
                connection.exec_driver_sql('SELECT 7').scalar_one()
        with database.reader() as connection:
            assert connection.exec_driver_sql('SELECT 7').scalar_one() == 7
            assert _backend_pid(connection) != first
    finally:
        engine.dispose()


# -- reads on PostgreSQL ------------------------------------------------------


@pytest.fixture
def pg_url(tmp_path: pathlib.Path) -> Iterator[str]:
    with throwaway_database('postgresql', tmp_path) as url:
        yield url


def test_postgresql_reads_run_on_an_autocommit_twin(pg_url: str) -> None:
    """No BEGIN, no ROLLBACK, no isolation switch around a read; writes
    still run in transactions on the engine's own pool."""
    engine = ia_engine.create_engine(pg_url)
    database = ia_engine.Database(engine)
    try:
        twin = ia_engine.reading_engine(engine)
        assert twin is not engine
        assert ia_engine.reading_engine(engine) is twin  # one per engine
        sent: list[str] = []
        sa.event.listen(twin, 'before_cursor_execute',
                        lambda *args: sent.append(args[2]))
        with database.reader() as connection:
            assert connection.connection.dbapi_connection.autocommit
            assert connection.exec_driver_sql(
                'SELECT now() = statement_timestamp()').scalar_one() is True
        assert sent == ['SELECT now() = statement_timestamp()']
        with engine.begin() as connection:
            assert not connection.connection.dbapi_connection.autocommit
            # In a transaction now() stays at its start.
            assert connection.exec_driver_sql(
                "SELECT pg_sleep(0.01), now() = statement_timestamp()"
            ).one()[1] is False
    finally:
        engine.dispose()


def test_disposing_an_engine_closes_its_reading_twin(pg_url: str) -> None:
    engine = ia_engine.create_engine(pg_url)
    database = ia_engine.Database(engine)
    with database.reader() as connection:
        raw = connection.connection.dbapi_connection
    assert raw is not None and raw.closed == 0
    engine.dispose()
    assert raw.closed != 0
    # Still usable afterwards, on new connections.
    with database.reader() as connection:
        assert connection.exec_driver_sql('SELECT 1').scalar_one() == 1
    engine.dispose()


def test_a_forked_child_leaves_the_parents_read_connections_open(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``os.register_at_fork`` runs in a worker: the inherited pools
    are dropped without closing the parent's sockets, the twin's too."""
    engine = ia_engine.create_engine(pg_url)
    database = ia_engine.Database(engine)
    monkeypatch.setattr(ia_engine, '_engines', {pg_url: engine})
    try:
        with database.reader() as connection:
            raw = connection.connection.dbapi_connection
        ia_engine._dispose_after_fork()  # the fork hook
        assert raw is not None and raw.closed == 0
        with database.reader() as connection:
            assert connection.connection.dbapi_connection is not raw
    finally:
        engine.dispose()
        raw.close()


# -- hot reads on the driver's cursor -----------------------------------------


def _ids_statement(count: int) -> sa.Select[Any]:
    return sa.select(models.Image.image_id, models.Image.project_id).where(
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.image_id.in_([sa.bindparam(f'id_{index}')
                                   for index in range(count)])
    ).order_by(models.Image.image_id)


def _read_one(database: ia_engine.Database) -> list[tuple[Any, ...]]:
    """A hot read of :data:`IMAGE` on the driver's cursor."""
    return database.rows(direct.Shapes(_ids_statement), 1,
                         {'registry_id': 'r', 'id_0': IMAGE})


def test_direct_rows_match_what_core_returns(
        migrated_engine: sa.Engine) -> None:
    """Each dialect's paramstyle (qmark, pyformat, format) binds the same
    values as SQLAlchemy itself: same rows for every shape."""
    ids = [f'{index:08d}-0000-4000-8000-000000000000' for index in range(7)]
    with migrated_engine.begin() as connection:
        for registry in ('r', 'other'):
            for image_id in ids:
                connection.execute(sa.insert(models.Image).values(
                    registry_id=registry, image_id=image_id,
                    project_id=f'{registry}-{image_id[:8]}',
                    state=models.ACTIVE))
    database = ia_engine.Database(migrated_engine)
    shapes = direct.Shapes(_ids_statement)
    for wanted in ([ids[3]], ids[1:6:2], ids, [ids[0], 'missing']):
        values = {f'id_{index}': image_id
                  for index, image_id in enumerate(wanted)}
        values['registry_id'] = 'r'
        with migrated_engine.connect() as connection:
            expected = [tuple(row) for row in connection.execute(
                _ids_statement(len(wanted)), values)]
        assert database.rows(shapes, len(wanted), values) == expected
        assert expected == [(image_id, f'r-{image_id[:8]}')
                            for image_id in sorted(wanted)
                            if image_id != 'missing']
    # Rendered once per dialect and shape.
    assert shapes.rendered.cache_info().currsize == 4


def test_direct_errors_are_the_stores(sqlite_engine: sa.Engine,
                                      tmp_path: pathlib.Path) -> None:
    """A missing table (an unmigrated database) is SQLAlchemy's error
    mapped like any other: the filters answer 503, never a raw driver
    error."""
    bare = ia_engine.create_engine(sqlite_url(tmp_path / 'unmigrated'))
    try:
        with pytest.raises(errors.StoreUnavailable, match='no such table'):
            _read_one(ia_engine.Database(bare))
    finally:
        bare.dispose()


def test_a_direct_read_on_a_killed_connection_fails_once_then_recovers(
        server_engines: tuple[str, sa.Engine]) -> None:
    """A server-closed connection fails its read (503, nothing else to
    do for a read that already started) and is thrown away: the next
    read runs on a new one."""
    url, admin = server_engines
    engine = ia_engine.create_engine(url, pool_size=1, max_overflow=0,
                                     ping_after_idle=60)
    migration.upgrade(engine)
    database = ia_engine.Database(engine)
    shapes = direct.Shapes(_ids_statement)
    values = {'registry_id': 'r', 'id_0': IMAGE}
    try:
        assert database.rows(shapes, 1, values) == []
        with database.reader() as connection:
            first = _backend_pid(connection)
        _kill(admin, first)
        with pytest.raises(errors.StoreUnavailable):
            database.rows(shapes, 1, values)
        assert database.rows(shapes, 1, values) == []
        with database.reader() as connection:
            assert _backend_pid(connection) != first
    finally:
        engine.dispose()
