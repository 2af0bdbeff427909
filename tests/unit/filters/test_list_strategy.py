"""``list_strategy``: how filtered lists fetch their images."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from oslo_config import cfg
from oslo_db import options as db_options

from instance_aware.filters.instance_metadata import InstanceMetadataFilter


def _filter(paste: dict[str, str],
            database: str | None) -> InstanceMetadataFilter:
    conf = cfg.ConfigOpts()
    if database is not None:
        # As Glance does, once it opens its database.
        conf.register_opts(db_options.database_opts, group='database')
        conf.set_override('connection', database, group='database')
    conf([], project='test')
    return InstanceMetadataFilter(lambda environ, start: [], paste, conf)


@pytest.mark.parametrize(('strategy', 'database', 'shows'), [
    ('auto', 'sqlite:////var/lib/glance/glance.sqlite', True),
    ('auto', 'postgresql+psycopg2://glance@db/glance', False),
    ('auto', 'mysql+pymysql://glance@db/glance', False),
    ('auto', None, True),  # not inside Glance: a show costs the same
    ('shows', 'postgresql+psycopg2://glance@db/glance', True),
    ('registry', 'sqlite:////var/lib/glance/glance.sqlite', False),
])
def test_strategy(strategy: str, database: str | None, shows: bool) -> None:
    flt = _filter({'list_strategy': strategy}, database)
    assert flt.fetch_by_shows is shows


def test_unknown_strategy_fails_at_start() -> None:
    with pytest.raises(ValueError, match='list_strategy'):
        _filter({'list_strategy': 'fastest'}, None)


def test_auto_reads_the_database_before_glance_registers_it(
        tmp_path: Path) -> None:
    """Glance registers ``[database]`` on first use of its database,
    which may come after the stack's first request."""
    conf_file = tmp_path / 'glance-api.conf'
    conf_file.write_text('[database]\nconnection = '
                         'postgresql+psycopg2://glance@db/glance\n',
                         encoding='utf-8')
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(conf_file)], project='test')
    flt = InstanceMetadataFilter(lambda environ, start: [], {}, conf)
    assert flt.fetch_by_shows is False
    # Glance's own registration afterwards agrees with ours.
    conf.register_opts(db_options.database_opts, group='database')
    assert conf.database.connection.startswith('postgresql')


def _glance_sqlite(path: Path, analyzed: bool) -> str:
    """A SQLite file with Glance's ``images`` table and an index the
    planner could prefer, analyzed or not."""
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE images (id VARCHAR(36) PRIMARY KEY, '
                     'os_hidden BOOLEAN)')
        conn.execute('CREATE INDEX os_hidden_image_idx ON images '
                     '(os_hidden)')
        conn.executemany('INSERT INTO images VALUES (?, 0)',
                         [(f'image-{n}',) for n in range(20)])
        if analyzed:
            conn.execute('ANALYZE')
    conn.close()
    return f'sqlite:///{path}'


@pytest.mark.parametrize(('analyzed', 'shows'), [(False, True),
                                                 (True, False)])
def test_auto_on_sqlite_follows_planner_statistics(
        tmp_path: Path, analyzed: bool, shows: bool) -> None:
    """With ``sqlite_stat1`` SQLite's planner drives Glance's ``id=in:``
    list from the primary key: one list request beats several shows."""
    database = _glance_sqlite(tmp_path / 'glance.sqlite', analyzed)
    assert _filter({'list_strategy': 'auto'}, database).fetch_by_shows is (
        shows)


def test_a_path_with_uri_characters_is_read_as_a_path(
        tmp_path: Path) -> None:
    directory = tmp_path / 'odd#dir'
    directory.mkdir()
    database = _glance_sqlite(directory / 'glance.sqlite', analyzed=True)
    assert _filter({}, database).fetch_by_shows is False


def test_statistics_of_other_tables_do_not_count(tmp_path: Path) -> None:
    path = tmp_path / 'glance.sqlite'
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE images (id VARCHAR(36) PRIMARY KEY)')
        conn.execute('CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT)')
        conn.execute('CREATE INDEX ix_other_v ON other (v)')
        conn.execute("INSERT INTO other (v) VALUES ('x')")
        conn.execute('ANALYZE other')
    conn.close()
    assert _filter({}, f'sqlite:///{path}').fetch_by_shows is True


@pytest.mark.parametrize('database', [
    'sqlite://',  # in memory: nothing to read
    'sqlite:////nonexistent/dir/glance.sqlite',
])
def test_unreadable_sqlite_means_shows(database: str) -> None:
    assert _filter({}, database).fetch_by_shows is True


def test_reading_statistics_never_creates_or_writes(tmp_path: Path) -> None:
    missing = tmp_path / 'missing.sqlite'
    assert _filter({}, f'sqlite:///{missing}').fetch_by_shows is True
    assert not missing.exists()
    database = _glance_sqlite(tmp_path / 'glance.sqlite', analyzed=False)
    before = (tmp_path / 'glance.sqlite').read_bytes()
    assert _filter({}, database).fetch_by_shows is True
    assert (tmp_path / 'glance.sqlite').read_bytes() == before
