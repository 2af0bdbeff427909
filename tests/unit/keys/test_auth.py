"""Who the key manager calls act as, and what castellan's errors mean."""

from __future__ import annotations

import pytest
from barbicanclient import exceptions as barbican_exceptions
from castellan import key_manager
from castellan.common import exception as castellan_exception
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import generic as ks_generic
from keystoneauth1.identity import v3 as ks_v3
from oslo_config import cfg
from oslo_context import context as oslo_context

from instance_aware.keys import auth, failures, lifecycle, opts
from instance_aware.store import engine as ia_engine

ENDPOINT = 'http://barbican.example:9311'


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    c([], project='glance')
    opts.register_opts(c)
    key_manager.API(c)  # castellan registers [key_manager], [barbican]
    return c


def user(**kwargs: object) -> oslo_context.RequestContext:
    values: dict[str, object] = {
        'user_id': 'u1', 'project_id': 'p1', 'roles': ['reader', 'member'],
        'overwrite': False}
    values.update(kwargs)
    return oslo_context.RequestContext(**values)


def headers_of(ctx: oslo_context.RequestContext,
               session: ks_session.Session | None = None) -> dict[str, str]:
    plugin = ctx.get_auth_plugin()
    found = plugin.get_headers(session or ks_session.Session())
    assert found is not None
    return found


def test_token_mode_forwards_user_and_service_tokens(conf):
    conf.set_override('barbican_endpoint', ENDPOINT, group='barbican')
    session = ks_session.Session()

    ctx = auth.caller_context(conf, user(auth_token='utok',
                                         service_token='stok'))

    assert headers_of(ctx, session) == {'X-Auth-Token': 'utok',
                                        'X-Service-Token': 'stok'}
    assert ctx.get_auth_plugin().get_endpoint(session) is None
    assert session.timeout == 10.0  # castellan sets none
    assert (ctx.user_id, ctx.project_id) == ('u1', 'p1')


def test_token_mode_without_service_token_sends_only_the_users(conf):
    conf.set_override('barbican_endpoint', ENDPOINT, group='barbican')
    ctx = auth.caller_context(conf, user(auth_token='utok'))
    assert headers_of(ctx) == {'X-Auth-Token': 'utok'}


def test_token_mode_without_endpoint_uses_keystone_like_castellan(conf):
    conf.set_override('auth_endpoint', 'http://keystone.example/v3',
                      group='barbican')

    plugin = auth.caller_context(conf, user(auth_token='utok'))\
        .get_auth_plugin()

    assert isinstance(plugin, auth.BoundedAuth)
    assert isinstance(plugin.inner, ks_v3.Token)
    assert plugin.inner.auth_url == 'http://keystone.example/v3'
    assert plugin.inner.project_id == 'p1'


def test_token_mode_without_token_is_a_deployment_error(conf):
    with pytest.raises(failures.KeyManagerNotConfigured, match='authtoken'):
        auth.caller_context(conf, user())


def test_anonymous_callers_cannot_use_secrets(conf):
    with pytest.raises(failures.KeyNotAccessible) as raised:
        auth.caller_context(conf, oslo_context.RequestContext())
    assert raised.value.reason == failures.FORBIDDEN


def test_trusted_headers_mode_sends_keystonemiddleware_headers(conf):
    conf.set_override('auth_mode', opts.TRUSTED_HEADERS, group=opts.GROUP)
    ctx = auth.caller_context(conf, user(auth_token='ignored',
                                         service_roles=['service'],
                                         project_domain_id='default'))
    assert headers_of(ctx) == {
        'X-Identity-Status': 'Confirmed', 'X-Project-Id': 'p1',
        'X-User-Id': 'u1', 'X-Project-Domain-Id': 'default',
        'X-Roles': 'reader,member', 'X-Service-Roles': 'service'}


def test_trusted_service_identity_is_admin_of_the_image_owner(conf):
    conf.set_override('auth_mode', opts.TRUSTED_HEADERS, group=opts.GROUP)
    contexts = auth.service_contexts(conf)
    assert headers_of(contexts('p7')) == {
        'X-Identity-Status': 'Confirmed', 'X-Project-Id': 'p7',
        'X-User-Id': auth.SERVICE_USER, 'X-Roles': 'admin'}


def test_token_service_identity_needs_credentials(conf):
    with pytest.raises(cfg.RequiredOptError, match='auth_type'):
        auth.service_contexts(conf)


def test_token_service_identity_uses_configured_credentials(tmp_path):
    path = tmp_path / 'glance-api.conf'
    path.write_text(
        '[instance_aware_keys]\nauth_type = password\n'
        'auth_url = http://keystone.example/v3\nusername = glance\n'
        'password = secret\nproject_name = service\n'
        'user_domain_name = Default\nproject_domain_name = Default\n',
        encoding='utf-8')
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(path)], project='glance')

    contexts = auth.service_contexts(conf)

    plugin = contexts('p7').get_auth_plugin()
    assert isinstance(plugin, auth.BoundedAuth)
    assert isinstance(plugin.inner, ks_generic.Password)
    assert plugin.inner.auth_url == 'http://keystone.example/v3'
    # The same cached identity for every project.
    assert contexts('p8').get_auth_plugin() is plugin


def test_trusted_headers_need_an_explicit_endpoint(conf, tmp_path):
    conf.set_override('auth_mode', opts.TRUSTED_HEADERS, group=opts.GROUP)
    db = ia_engine.Database(ia_engine.create_engine(
        f'sqlite:///{tmp_path}/x.sqlite'))
    keys = lifecycle.KeyLifecycle(conf, db, 'default')
    assert keys.missing is not None
    assert keys.missing.startswith('[barbican] barbican_endpoint is not set')
    assert lifecycle.configuration_problem(conf) == keys.missing
    with pytest.raises(failures.KeyManagerNotConfigured,
                       match='barbican_endpoint'):
        keys.check_readable(user(), '0b4a2a1e-8e9f-4c3e-9a57-0c1ad1b7d3a1')
    db.engine.dispose()


@pytest.mark.parametrize('overrides,missing', [
    pytest.param({}, 'no key manager is configured: neither [barbican] '
                     'barbican_endpoint nor [barbican] auth_endpoint is set',
                 id='nothing'),
    pytest.param({('barbican', 'barbican_endpoint'): ENDPOINT}, None,
                 id='endpoint'),
    pytest.param({('barbican', 'auth_endpoint'): 'http://ks.example/v3'},
                 None, id='keystone'),
    pytest.param({('key_manager', 'backend'): 'vault'}, None, id='vault'),
    pytest.param({(opts.GROUP, 'enabled'): False}, None, id='disabled'),
])
def test_configuration_problem_names_the_missing_option(
        conf, overrides, missing):
    for (group, name), value in overrides.items():
        conf.set_override(name, value, group=group)
    assert lifecycle.configuration_problem(conf) == missing


def test_configuration_problem_reads_config_files(tmp_path):
    """An ``auth_endpoint`` written in the file counts, even castellan's
    default value: the operator set it."""
    path = tmp_path / 'glance-api.conf'
    path.write_text('[barbican]\nauth_endpoint = '
                    'http://localhost/identity/v3\n', encoding='utf-8')
    conf = cfg.ConfigOpts()
    conf(['--config-file', str(path)], project='glance')
    assert lifecycle.configuration_problem(conf) is None


def test_list_opts_documents_the_group():
    [(group, listed)] = opts.list_opts()
    names = {opt.dest for opt in listed}
    assert group == 'instance_aware_keys'
    assert {'auth_mode', 'timeout', 'auth_type', 'auth_url', 'username',
            'password'} <= names
    assert all(o is not p for o in listed for p in opts.OPTS)


def _raised_from(cause: Exception) -> Exception:
    """A castellan error raised while handling ``cause``, as castellan
    does."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise castellan_exception.KeyManagerError(  # noqa: B904
                reason=exc)
    except castellan_exception.KeyManagerError as wrapped:
        return wrapped


@pytest.mark.parametrize('exc,kind,reason', [
    pytest.param(castellan_exception.ManagedObjectNotFoundError(uuid='k'),
                 failures.KeyNotAccessible, failures.NOT_FOUND,
                 id='not-found'),
    pytest.param(_raised_from(barbican_exceptions.HTTPClientError(
        'Forbidden', status_code=403)), failures.KeyNotAccessible,
        failures.FORBIDDEN, id='forbidden'),
    pytest.param(_raised_from(barbican_exceptions.SecretHasConsumers()),
                 failures.ConsumersRemain, None, id='has-consumers'),
    pytest.param(_raised_from(barbican_exceptions.HTTPClientError(
        'Secret cannot be deleted as it has consumers.', status_code=400)),
        failures.ConsumersRemain, None, id='has-consumers-400'),
    pytest.param(_raised_from(barbican_exceptions.HTTPServerError(
        'boom', status_code=500)), failures.KeyManagerUnavailable, None,
        id='server-error'),
    pytest.param(_raised_from(barbican_exceptions.HTTPAuthError(
        'Unauthorized')), failures.KeyManagerUnavailable, None,
        id='token-refused'),
    pytest.param(ks_exceptions.ConnectFailure('refused'),
                 failures.KeyManagerUnavailable, None, id='unreachable'),
    pytest.param(_raised_from(ks_exceptions.ConnectTimeout('slow')),
                 failures.KeyManagerUnavailable, None, id='timeout'),
])
def test_classify(exc, kind, reason):
    classified = failures.classify(exc, 'k')
    assert type(classified) is kind
    if reason is not None:
        assert classified.reason == reason
