"""``list_strategy``: how filtered lists fetch their images."""

from __future__ import annotations

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
