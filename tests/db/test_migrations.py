"""Migrations: repeatable, and in agreement with the models, everywhere.

The filters run on the schema the migrations build while the code reads it
through the models; any drift between the two (a missing index, a DATETIME
without microseconds on MySQL) shows up only on the backend that has it,
so each test runs on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import datetime
import pathlib
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import orm
from sqlalchemy.engine import make_url

from instance_aware.cmd import manage
from instance_aware.store import migration, models
from tests.dbbackends import MYSQL

pytestmark = pytest.mark.database

TABLES = set(models.Base.metadata.tables)


def test_upgrade_twice_reaches_head(db_engine: sa.Engine) -> None:
    assert migration.current(db_engine) is None
    migration.upgrade(db_engine)
    migration.upgrade(db_engine)
    assert migration.current(db_engine) == migration.head()
    assert set(sa.inspect(db_engine).get_table_names()) == (
        TABLES | {'alembic_version'})


def test_models_and_migrations_agree(migrated_engine: sa.Engine) -> None:
    with migrated_engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection), models.Base.metadata)
    assert differences == []


def _columns(item: sa.Index | sa.UniqueConstraint) -> list[str]:
    return [column.name for column in item.columns]


def test_named_indexes_and_constraints_exist(
        migrated_engine: sa.Engine) -> None:
    """Every index and constraint the queries rely on, by name.

    ``compare_metadata`` tolerates some differences per dialect (MySQL
    reports unique constraints as unique indexes, for one); this checks
    the names, columns and column order the queries were written for.
    """
    inspector = sa.inspect(migrated_engine)
    missing: list[str] = []
    for table in models.Base.metadata.sorted_tables:
        indexes = {index['name']: (index['column_names'],
                                   bool(index['unique']))
                   for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if indexes.get(index.name) != (_columns(index),
                                           bool(index.unique)):
                missing.append(f'index {index.name}')
        uniques = {unique['name']: unique['column_names']
                   for unique in inspector.get_unique_constraints(table.name)}
        foreign = {key['name']: (key['constrained_columns'],
                                 key['referred_table'],
                                 key['options'].get('ondelete'))
                   for key in inspector.get_foreign_keys(table.name)}
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint):
                if uniques.get(str(constraint.name)) != _columns(constraint):
                    missing.append(f'unique constraint {constraint.name}')
            elif isinstance(constraint, sa.ForeignKeyConstraint):
                expected = (constraint.column_keys,
                            constraint.referred_table.name,
                            constraint.ondelete)
                if foreign.get(str(constraint.name)) != expected:
                    missing.append(f'foreign key {constraint.name}')
    assert missing == []


@pytest.mark.parametrize('db_url', [(MYSQL, None)], indirect=True,
                         ids=[MYSQL])
def test_mysql_tables_are_innodb_utf8mb4_with_microseconds(
        migrated_engine: sa.Engine) -> None:
    with migrated_engine.connect() as connection:
        tables = {row[0]: (row[1], row[2]) for row in connection.execute(
            sa.text('SELECT table_name, engine, table_collation '
                    'FROM information_schema.tables '
                    'WHERE table_schema = DATABASE()'))}
        charsets = set(connection.execute(sa.text(
            'SELECT DISTINCT character_set_name '
            'FROM information_schema.columns WHERE table_schema = '
            'DATABASE() AND character_set_name IS NOT NULL AND '
            "table_name LIKE 'ia\\_%'")).scalars())
        precisions = {f'{row[0]}.{row[1]}': row[2]
                      for row in connection.execute(sa.text(
                          'SELECT table_name, column_name, '
                          'datetime_precision '
                          'FROM information_schema.columns '
                          'WHERE table_schema = DATABASE() '
                          "AND data_type = 'datetime'"))}
    for name in TABLES:
        engine, collation = tables[name]
        assert (engine, collation.split('_')[0]) == ('InnoDB', 'utf8mb4')
    assert charsets == {'utf8mb4'}
    assert precisions
    assert set(precisions.values()) == {6}, precisions


def test_timestamps_keep_microseconds(migrated_engine: sa.Engine) -> None:
    """Two rows 1 µs apart stay distinct and ordered ("newest first")."""
    first = datetime.datetime(2024, 2, 29, 23, 59, 59, 999998)
    second = first + datetime.timedelta(microseconds=1)
    stamps: dict[str, Any] = {}
    with orm.Session(migrated_engine) as session, session.begin():
        for image_id, when in (('older', first), ('newer', second)):
            stamps[image_id] = when
            session.add(models.Image(
                registry_id='r', image_id=image_id, image_created_at=when,
                created_at=when, updated_at=when, deleted_at=when))
    with orm.Session(migrated_engine) as session:
        images = session.scalars(sa.select(models.Image).order_by(
            models.Image.image_created_at.desc())).all()
        read = [(image.image_id, image.image_created_at, image.created_at,
                 image.updated_at, image.deleted_at) for image in images]
    assert read == [('newer',) + (second,) * 4, ('older',) + (first,) * 4]


def test_text_keeps_four_byte_characters(migrated_engine: sa.Engine) -> None:
    """utf8mb4 for real: MySQL's ``utf8`` would refuse or mangle these."""
    value = 'snapshot \U0001f4f8 of \u5b9f\u4f8b'
    with orm.Session(migrated_engine) as session, session.begin():
        session.add(models.Image(registry_id='r', image_id='i', properties=[
            models.Property(concern=models.INSTANCE, name='image_location',
                            value=value, value_index=value)]))
    with orm.Session(migrated_engine) as session:
        stored = session.scalars(sa.select(models.Property)).one()
        assert (stored.value, stored.value_index) == (value, value)


def test_manage_db_sync_twice(db_url: str, tmp_path: pathlib.Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's command, on each backend, against a new database."""
    config = tmp_path / 'glance-api.conf'
    config.write_text(f'[instance_aware]\nconnection = {db_url}\n')
    head = migration.head()
    argv = ['--config-file', str(config), 'db']
    named = (f'Database: {make_url(db_url).render_as_string()} '
             f'(configuration: {config})')
    assert manage.main([*argv, 'sync']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (lines[0], lines[-1]) == (
        named,
        f'Database schema upgraded from revision None to revision {head}.')
    assert manage.main([*argv, 'sync']) == 0
    assert capsys.readouterr().out == (
        f'{named}\nDatabase schema already at revision {head}.\n')
    assert manage.main([*argv, 'version']) == 0
    assert capsys.readouterr() == (
        f'Current revision: {head}\nHead revision: {head}\n', '')
    engine = sa.create_engine(db_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_0004_names_the_key_property_of_existing_rows(
        db_engine: sa.Engine) -> None:
    """Rows from before 0004 tracked the first pair present: the legacy
    one only where the image had no ``os_encrypt_key_id``."""
    migration.upgrade(db_engine, '0003')
    metadata = sa.MetaData()
    images = sa.Table('ia_images', metadata, autoload_with=db_engine)
    props = sa.Table('ia_properties', metadata, autoload_with=db_engine)
    keys = sa.Table('ia_encryption_keys', metadata, autoload_with=db_engine)
    now = datetime.datetime(2026, 12, 1, 12, 0, 0)
    with db_engine.begin() as connection:
        for ref, name in ((1, 'os_encrypt_key_id'),
                          (2, 'cinder_encryption_key_id')):
            connection.execute(images.insert().values(
                id=ref, registry_id='r', image_id=f'image-{ref}',
                project_id='p', state='active', created_at=now,
                updated_at=now))
            connection.execute(props.insert().values(
                image_ref=ref, concern='encryption', name=name,
                value=f'key-{ref}', value_index=f'key-{ref}'))
            connection.execute(keys.insert().values(
                image_ref=ref, key_id=f'key-{ref}', lifecycle_state='none',
                attempts=0, updated_at=now))
    migration.upgrade(db_engine)
    with db_engine.connect() as connection:
        found = dict(connection.execute(sa.text(
            'SELECT image_ref, key_property FROM ia_encryption_keys '
            'ORDER BY image_ref')).all())
    assert found == {1: 'os_encrypt_key_id', 2: 'cinder_encryption_key_id'}
    # Two rows per image from now on, one per key property.
    with db_engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO ia_encryption_keys (image_ref, key_property, "
            "key_id, lifecycle_state, attempts, updated_at) VALUES "
            "(1, 'cinder_encryption_key_id', 'key-3', 'none', 0, :now)"),
            {'now': now})
    with pytest.raises(sa.exc.IntegrityError), db_engine.begin() as c:
        c.execute(sa.text(
            "INSERT INTO ia_encryption_keys (image_ref, key_property, "
            "key_id, lifecycle_state, attempts, updated_at) VALUES "
            "(1, 'cinder_encryption_key_id', 'key-4', 'none', 0, :now)"),
            {'now': now})
