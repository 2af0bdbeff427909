"""``/healthcheck`` with the ``instance_aware_store`` backend.

oslo.middleware's own Healthcheck app, loaded with the backend by its
entry point name as Glance's paste file would: a stopped database, a
missing schema and a healthy one.
"""

from __future__ import annotations

import pathlib

import pytest
import webob
from oslo_config import cfg
from oslo_middleware import healthcheck
from oslo_middleware.healthcheck import opts as healthcheck_opts

from instance_aware import config
from instance_aware.store import engine as store_engine
from instance_aware.store import migration


def _get(connection: str, detailed: bool = False) -> webob.Response:
    """``GET /healthcheck`` on a private configuration (the paste keys
    of a deployment set the same options)."""
    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(healthcheck_opts.HEALTHCHECK_OPTS,
                       group='healthcheck')
    conf.set_override('backends', ['instance_aware_store'],
                      group='healthcheck')
    conf.set_override('detailed', detailed, group='healthcheck')
    config.register_opts(conf)
    conf.set_override('connection', connection, group='instance_aware')
    conf.set_override('db_connect_timeout', 1, group='instance_aware')
    app = healthcheck.Healthcheck(None, conf)
    request = webob.Request.blank(
        '/healthcheck',
        accept='application/json' if detailed else 'text/plain')
    return request.get_response(app)


def _check(response: webob.Response) -> dict[str, str]:
    """The backend's entry of a detailed answer."""
    [check] = response.json['reasons']
    return {'reason': check['reason'], 'details': check['details']}


@pytest.fixture(autouse=True)
def _fresh_engines() -> None:
    store_engine.dispose_all()


def test_healthy_store_is_200(tmp_path: pathlib.Path) -> None:
    url = f'sqlite:///{tmp_path / "mapping.sqlite"}'
    migration.upgrade(store_engine.create_engine(url))
    response = _get(url)
    assert (response.status_int, response.text) == (200, 'OK')
    detailed = _get(url, detailed=True)
    assert detailed.status_int == 200
    assert _check(detailed) == {'reason': 'OK',
                                'details': f'{url} is at {migration.head()}'}


def test_stopped_database_is_503_and_names_no_host() -> None:
    url = 'postgresql+psycopg2://ia:s3cret@127.0.0.1:1/ia'
    response = _get(url)
    assert response.status_int == 503
    assert response.text == 'instance-aware mapping database unavailable'
    detailed = _get(url, detailed=True)
    assert detailed.status_int == 503
    check = _check(detailed)
    assert check['reason'] == 'instance-aware mapping database unavailable'
    assert check['details'].startswith(
        'postgresql+psycopg2://ia:***@127.0.0.1:1/ia: ')
    assert 'refused' in check['details'].lower()
    assert 's3cret' not in detailed.text


def test_missing_schema_is_503_and_creates_nothing(
        tmp_path: pathlib.Path) -> None:
    url = f'sqlite:///{tmp_path / "new" / "mapping.sqlite"}'
    response = _get(url)
    assert response.status_int == 503
    assert response.text == ('instance-aware mapping database schema not '
                             'at head')
    assert not (tmp_path / 'new').exists()


def test_schema_behind_is_503(tmp_path: pathlib.Path) -> None:
    url = f'sqlite:///{tmp_path / "mapping.sqlite"}'
    migration.upgrade(store_engine.create_engine(url), '0001')
    detailed = _get(url, detailed=True)
    assert detailed.status_int == 503
    assert _check(detailed) == {
        'reason': 'instance-aware mapping database schema not at head',
        'details': f'{url} is at revision 0001, expected '
                   f'{migration.head()}'}
