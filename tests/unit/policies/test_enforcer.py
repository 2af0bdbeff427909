"""The shared enforcer: rules from the policy file, looked up sparingly."""

from __future__ import annotations

import pathlib

import pytest
from oslo_config import cfg
from oslo_context import context as oslo_context

from instance_aware.policies import enforcer


@pytest.fixture
def conf(tmp_path: pathlib.Path) -> cfg.ConfigOpts:
    policy_file = tmp_path / 'policy.yaml'
    policy_file.write_text('"instance_aware:get_image_location": "!"\n',
                           encoding='utf-8')
    conf_file = tmp_path / 'glance-api.conf'
    conf_file.write_text(f'[oslo_policy]\npolicy_file = {policy_file}\n',
                         encoding='utf-8')
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(conf_file)], project='glance',
         default_config_files=[])
    return conf


def _admin() -> oslo_context.RequestContext:
    return oslo_context.RequestContext(project_id='p', roles=['admin'])


def test_policy_file_overrides_defaults_and_changes_apply_later(
        conf: cfg.ConfigOpts, tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(enforcer.time, 'monotonic', lambda: clock[0])
    rule = 'instance_aware:get_image_location'
    assert not enforcer.allowed(conf, rule, _admin(), {'project_id': 'p'})
    (tmp_path / 'policy.yaml').write_text(f'"{rule}": "role:admin"\n',
                                          encoding='utf-8')
    clock[0] += enforcer.RELOAD_CHECK_INTERVAL / 2
    # Not looked at yet: the file is not stat'ed on every check.
    assert not enforcer.allowed(conf, rule, _admin(), {'project_id': 'p'})
    clock[0] += enforcer.RELOAD_CHECK_INTERVAL
    assert enforcer.allowed(conf, rule, _admin(), {'project_id': 'p'})
