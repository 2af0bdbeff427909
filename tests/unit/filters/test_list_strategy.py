"""``list_strategy``: how filtered lists fetch their images."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from instance_aware.filters.instance_metadata import InstanceMetadataFilter


def _filter(paste: dict[str, str],
            database: str | None) -> InstanceMetadataFilter:
    conf = cfg.ConfigOpts()
    if database is not None:
        conf.register_opt(cfg.StrOpt('connection'), group='database')
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
