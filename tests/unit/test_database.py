"""The retry policy and engine settings built from ``[instance_aware]``."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from instance_aware import config, database
from instance_aware.store.retry import RetryPolicy


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    c([], project='glance')
    return c


def _policy(conf: cfg.ConfigOpts) -> RetryPolicy:
    return database.retry_policy(config.FilterConfig.load(conf))


def test_options_default_and_override(conf: cfg.ConfigOpts) -> None:
    assert _policy(conf) == RetryPolicy(5, 0.05, 1.0)
    conf.set_override('db_max_retries', 9, group=config.GROUP)
    conf.set_override('db_retry_interval', 0.2, group=config.GROUP)
    conf.set_override('db_max_retry_interval', 3, group=config.GROUP)
    assert _policy(conf) == RetryPolicy(9, 0.2, 3.0)


def test_paste_keys_set_the_policy_of_one_filter(
        conf: cfg.ConfigOpts) -> None:
    settings = config.FilterConfig.load(conf, {'db_max_retries': '0',
                                               'db_retry_interval': '0.5'})
    assert database.retry_policy(settings) == RetryPolicy(0, 0.5, 1.0)
    assert _policy(conf).max_retries == 5


@pytest.mark.parametrize(('key', 'value'), [
    pytest.param('db_max_retries', '-1', id='negative-retries'),
    pytest.param('db_retry_interval', '-0.1', id='negative-interval'),
    pytest.param('db_max_retry_interval', 'soon', id='not-a-number'),
])
def test_bad_retry_settings_fail_at_construction(
        conf: cfg.ConfigOpts, key: str, value: str) -> None:
    with pytest.raises(cfg.ConfigFileValueError, match=key):
        config.FilterConfig.load(conf, {key: value})


def test_policy_defaults_are_the_option_defaults() -> None:
    defaults = {opt.dest: opt.default for opt in config.OPTS}
    assert RetryPolicy() == RetryPolicy(defaults['db_max_retries'],
                                        defaults['db_retry_interval'],
                                        defaults['db_max_retry_interval'])
