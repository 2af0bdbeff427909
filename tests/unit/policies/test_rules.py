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


#: A user of project ``p2`` calling through Nova: the user's own token
#: plus Nova's service token (keystonemiddleware's ``X-Service-Roles``).
_THROUGH_NOVA = {'roles': ['reader', 'member'], 'project_id': 'p2',
                 'service_roles': ['service']}
#: The owner project's user calling through Nova.
_OWNER_THROUGH_NOVA = {**_THROUGH_NOVA, 'project_id': 'p1'}


@pytest.mark.parametrize('rule,caller,allowed', [
    # Reads of captured keys take the user's own right...
    pytest.param('instance_aware:get_instance_metadata', _THROUGH_NOVA,
                 False, id='nova-other-project-instance-keys'),
    pytest.param('instance_aware:get_encryption_properties', _THROUGH_NOVA,
                 False, id='nova-other-project-encryption'),
    pytest.param('instance_aware:list_instance_images', _THROUGH_NOVA,
                 False, id='nova-other-project-query-api'),
    pytest.param('instance_aware:get_instance_metadata',
                 _OWNER_THROUGH_NOVA, True, id='nova-owner-instance-keys'),
    pytest.param('instance_aware:get_encryption_properties',
                 _OWNER_THROUGH_NOVA, True, id='nova-owner-encryption'),
    pytest.param('instance_aware:get_instance_metadata',
                 {'roles': ['service'], 'project_id': 'svc'}, False,
                 id='service-user-other-project'),
    # ...while the service keeps what Nova needs.
    pytest.param('instance_aware:get_image_location', _THROUGH_NOVA, True,
                 id='nova-sees-locations'),
    pytest.param('instance_aware:fetch_image_location', _THROUGH_NOVA,
                 True, id='nova-fetches-locations'),
    pytest.param('instance_aware:set_instance_metadata', _THROUGH_NOVA,
                 True, id='nova-asserts-trusted'),
    pytest.param('instance_aware:set_instance_metadata',
                 {'roles': ['reader', 'member'], 'project_id': 'p1'}, False,
                 id='owner-without-service-untrusted'),
    pytest.param('instance_aware:get_instance_metadata',
                 {'roles': ['admin'], 'project_id': 'p2'}, True,
                 id='admin-reads-any-project'),
])
def test_service_token_widens_the_service_not_the_user(conf, rule, caller,
                                                       allowed):
    """Finding 5 of issue 17: Nova attaches its service token to every
    call for any user and hands image properties to that user."""
    target = {'project_id': 'p1', 'owner': 'p1'}
    assert enforcer.allowed(conf, rule, _ctx(**caller), target) is allowed


@pytest.mark.parametrize('name', [
    'instance_aware:get_instance_metadata',
    'instance_aware:get_encryption_properties',
    'instance_aware:list_instance_images',
])
def test_read_rules_do_not_name_the_service(name):
    rule = {r.name: r for r in policies.list_rules()}[name]
    assert 'service' not in rule.check_str
    assert 'service token does not' in rule.description.replace('\n', ' ')
