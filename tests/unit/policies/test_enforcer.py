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


def _member(project: str, user: str = 'u') -> oslo_context.RequestContext:
    return oslo_context.RequestContext(project_id=project, user_id=user,
                                       roles=['reader', 'member'])


def test_decisions_are_remembered_per_rule_caller_and_target(
        conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = 'instance_aware:get_instance_metadata'
    shared = enforcer.enforcer_for(conf)
    calls: list[tuple[str, dict[str, object]]] = []
    authorize = shared.authorize

    def counting(rule: str, target: dict[str, object], *args: object,
                 **kwargs: object) -> object:
        calls.append((rule, target))
        return authorize(rule, target, *args, **kwargs)

    monkeypatch.setattr(shared, 'authorize', counting)
    own, other = _member('p'), _member('q')
    for _ in range(3):
        assert enforcer.allowed(conf, rule, own, {'project_id': 'p',
                                                  'owner': 'p'})
        assert not enforcer.allowed(conf, rule, own, {'project_id': 'q',
                                                      'owner': 'q'})
        assert not enforcer.allowed(conf, rule, other, {'project_id': 'p',
                                                        'owner': 'p'})
    # Same rule, same policy values, same target: evaluated once.
    assert len(calls) == 3
    # Another context with equal policy values shares the decision.
    assert enforcer.allowed(conf, rule, _member('p'),
                            {'project_id': 'p', 'owner': 'p'})
    assert len(calls) == 3
    # Other roles are another caller.
    reader = oslo_context.RequestContext(project_id='p', user_id='u',
                                         roles=['reader'])
    assert enforcer.allowed(conf, rule, reader, {'project_id': 'p',
                                                 'owner': 'p'})
    assert len(calls) == 4


def test_remembered_decisions_are_forgotten_at_the_next_look(
        conf: cfg.ConfigOpts, tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [5000.0]
    monkeypatch.setattr(enforcer.time, 'monotonic', lambda: clock[0])
    rule = 'instance_aware:get_instance_metadata'
    target = {'project_id': 'p', 'owner': 'p'}
    assert enforcer.allowed(conf, rule, _member('p'), target)
    (tmp_path / 'policy.yaml').write_text(f'"{rule}": "!"\n',
                                          encoding='utf-8')
    clock[0] += enforcer.RELOAD_CHECK_INTERVAL * 1.5
    assert not enforcer.allowed(conf, rule, _member('p'), target)


def test_unhashable_values_are_decided_without_memory(
        conf: cfg.ConfigOpts) -> None:
    rule = 'instance_aware:get_instance_metadata'
    target = {'project_id': 'p', 'owner': 'p', 'extra': object()}
    assert enforcer.allowed(conf, rule, _member('p'), target)
    assert not enforcer.enforcer_for(conf).decisions


def test_unregistered_rule_still_raises(conf: cfg.ConfigOpts) -> None:
    from oslo_policy import policy
    with pytest.raises(policy.PolicyNotRegistered):
        enforcer.allowed(conf, 'instance_aware:typo', _member('p'), {})
    with pytest.raises(policy.PolicyNotRegistered):
        enforcer.allowed(conf, 'instance_aware:typo', _member('p'), {})
