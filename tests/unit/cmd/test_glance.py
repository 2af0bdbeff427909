"""Which image endpoint ``reconcile`` and ``adopt`` reach."""

from __future__ import annotations

from typing import Any

import pytest
from oslo_config import cfg

from instance_aware.cmd import glance


class _Session:
    """Records the catalog look-up a keystoneauth session would make."""

    def __init__(self) -> None:
        self.asked: dict[str, Any] | None = None

    def get_endpoint(self, **kwargs: Any) -> str:
        self.asked = kwargs
        return 'http://glance-two:9292/'


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> _Session:
    found = _Session()
    monkeypatch.setattr(glance.ks_loading, 'load_auth_from_conf_options',
                        lambda conf, group: None)
    monkeypatch.setattr(glance.ks_loading,
                        'load_session_from_conf_options',
                        lambda conf, group, auth=None: found)
    return found


def _conf(**values: str) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf([], project='test')
    glance.register_opts(conf)
    for key, value in values.items():
        conf.set_override(key, value, group=glance.GROUP)
    return conf


def test_catalog_lookup_names_the_configured_region(session: _Session
                                                    ) -> None:
    client = glance.GlanceClient.from_conf(
        _conf(region_name='RegionTwo'))
    assert session.asked == {'service_type': 'image',
                             'interface': 'internal',
                             'region_name': 'RegionTwo'}
    assert client.endpoint == 'http://glance-two:9292'


def test_without_a_region_any_region_is_asked(session: _Session) -> None:
    glance.GlanceClient.from_conf(_conf(interface='public'))
    assert session.asked == {'service_type': 'image', 'interface': 'public',
                             'region_name': None}


def test_an_endpoint_skips_the_catalog(session: _Session) -> None:
    client = glance.GlanceClient.from_conf(
        _conf(endpoint='http://glance:9292', region_name='RegionTwo'))
    assert session.asked is None
    assert client.endpoint == 'http://glance:9292'


def test_trusted_headers_assert_an_administrator() -> None:
    """``trusted_headers``: no token, the identity keystonemiddleware would
    have set (``instance-aware serve`` trusts these headers)."""
    client = glance.GlanceClient.from_conf(
        _conf(endpoint='http://glance:9292', trusted_headers='true'))
    assert client.session.get_auth_headers() == {
        'X-Identity-Status': 'Confirmed', 'X-Roles': 'admin',
        'X-Project-Id': 'instance-aware',
        'X-User-Id': 'instance-aware-manage'}
