"""Options: defaults, paste overrides that never touch global config."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from instance_aware import conf as ia_conf


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    c([], project='glance')
    return c


def test_default_connection_is_sqlite_file_in_state_path(conf):
    view = ia_conf.FilterConfig(conf)
    assert view['connection'] == (
        'sqlite:////var/lib/glance/instance_aware.sqlite')
    conf.set_override('state_path', '/srv/g', group='instance_aware')
    assert view.connection == 'sqlite:////srv/g/instance_aware.sqlite'


def test_paste_key_wins_for_this_filter_only(conf):
    ia_conf.register_opts(conf)
    conf.set_override('registry_id', 'from-file', group='instance_aware')
    mine = ia_conf.FilterConfig(conf, {'registry_id': 'from-paste',
                                       'max_json_body_size': '4096',
                                       'unrelated': 'x'})
    other = ia_conf.FilterConfig(conf)
    assert mine.registry_id == 'from-paste'
    assert mine.max_json_body_size == 4096
    assert other.registry_id == 'from-file'
    assert conf.instance_aware.registry_id == 'from-file'


@pytest.mark.parametrize('key,value', [
    pytest.param('max_json_body_size', 'lots', id='not-an-int'),
    pytest.param('max_json_body_size', '10', id='below-min'),
    pytest.param('registry_id', 'white space', id='bad-registry-id'),
])
def test_bad_paste_value_fails_at_construction(conf, key, value):
    with pytest.raises(cfg.ConfigFileValueError, match=key):
        ia_conf.FilterConfig(conf, {key: value})


def test_list_opts_returns_copies():
    listed = dict(ia_conf.list_opts())
    assert set(listed) == {'instance_aware', 'instance_aware_registry',
                           'instance_aware_keys', 'instance_aware_proxy'}
    opts = listed['instance_aware']
    assert {o.dest for o in opts} >= {'connection', 'registry_id'}
    assert all(a is not b for a, b in zip(opts, ia_conf.OPTS, strict=True))
    assert {o.dest for o in listed['instance_aware_registry']} >= {
        'endpoint', 'trusted_headers', 'auth_type', 'timeout'}
