"""Every rule named in the design is registered, documented, enforced."""

from __future__ import annotations

import pytest
from oslo_config import cfg
from oslo_context import context
from oslo_policy import policy

from instance_aware import policies
from instance_aware.policies import enforcer

REQUIRED = {
    'instance_aware:get_instance_metadata',
    'instance_aware:set_instance_metadata',
    'instance_aware:list_instance_images',
    'instance_aware:get_encryption_properties',
    'instance_aware:set_encryption_properties',
    'instance_aware:get_image_location',
    'instance_aware:set_image_location',
    'instance_aware:delete_image_location',
    'instance_aware:add_image_location',
    'instance_aware:fetch_image_location',
}


def test_required_rules_are_documented_with_operations():
    rules = {r.name: r for r in policies.list_rules()}
    assert set(rules) >= REQUIRED
    for name in REQUIRED:
        rule = rules[name]
        assert isinstance(rule, policy.DocumentedRuleDefault)
        assert rule.description and rule.operations
        assert rule.scope_types == ['project']
    assert all(n.startswith('instance_aware:') for n in rules)


@pytest.fixture
def conf(tmp_path):
    c = cfg.ConfigOpts()
    c([], project='glance')
    return c


def _ctx(**kw):
    return context.RequestContext(**kw)


@pytest.mark.parametrize('ctx,rule,allowed', [
    pytest.param(_ctx(roles=['admin'], project_id='p2'),
                 'instance_aware:get_image_location', True, id='admin'),
    pytest.param(_ctx(roles=['member'], project_id='p1',
                      service_roles=['service']),
                 'instance_aware:get_image_location', True, id='service'),
    pytest.param(_ctx(roles=['reader', 'member'], project_id='p1'),
                 'instance_aware:get_image_location', False, id='owner'),
    pytest.param(_ctx(roles=['reader'], project_id='p1'),
                 'instance_aware:get_instance_metadata', True,
                 id='owner-reader-metadata'),
    pytest.param(_ctx(roles=['reader', 'member'], project_id='p2'),
                 'instance_aware:get_instance_metadata', False,
                 id='other-project'),
    pytest.param(_ctx(roles=['member'], project_id='p1'),
                 'instance_aware:set_instance_metadata', False,
                 id='member-untrusted'),
    pytest.param(_ctx(roles=[], project_id=None),
                 'instance_aware:get_encryption_properties', False,
                 id='anonymous'),
])
def test_defaults(conf, ctx, rule, allowed):
    target = {'project_id': 'p1', 'owner': 'p1'}
    assert enforcer.allowed(conf, rule, ctx, target) is allowed


def test_policy_file_overrides_default(tmp_path):
    path = tmp_path / 'policy.yaml'
    path.write_text('"instance_aware:get_image_location": "role:backup"\n')
    conf_file = tmp_path / 'glance-api.conf'
    conf_file.write_text(f'[oslo_policy]\npolicy_file = {path}\n')
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(conf_file)], project='glance')
    ctx = _ctx(roles=['backup'], project_id='p9')
    assert enforcer.allowed(conf, 'instance_aware:get_image_location', ctx,
                            {'project_id': 'p1'})


def test_unregistered_rule_is_an_error(conf):
    with pytest.raises(policy.PolicyNotRegistered):
        enforcer.allowed(conf, 'instance_aware:typo', _ctx(), {})
