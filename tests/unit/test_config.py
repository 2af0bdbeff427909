"""Options: defaults, paste overrides that never touch global config."""

from __future__ import annotations

import dataclasses

import pytest
from oslo_config import cfg

from instance_aware import config


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    c([], project='glance')
    return c


def test_default_connection_is_sqlite_file_in_state_path(conf):
    view = config.FilterConfig.load(conf)
    assert view.connection == (
        'sqlite:////var/lib/glance/instance_aware.sqlite')
    conf.set_override('state_path', '/srv/g', group='instance_aware')
    view = config.FilterConfig.load(conf)
    assert view.connection == 'sqlite:////srv/g/instance_aware.sqlite'


def test_paste_key_wins_for_this_filter_only(conf):
    config.register_opts(conf)
    conf.set_override('registry_id', 'from-file', group='instance_aware')
    mine = config.FilterConfig.load(conf, {'registry_id': 'from-paste',
                                              'max_json_body_size': '4096',
                                              'unrelated': 'x'})
    other = config.FilterConfig.load(conf)
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
        config.FilterConfig.load(conf, {key: value})


def test_one_typed_field_per_option(conf):
    fields = {field.name for field in dataclasses.fields(config.FilterConfig)}
    assert fields == {opt.dest for opt in config.OPTS}
    loaded = config.FilterConfig.load(conf, {'instance_keys': 'a,b',
                                             'verify_image_data': 'false'})
    assert loaded.instance_keys == ['a', 'b']
    assert loaded.verify_image_data is False
