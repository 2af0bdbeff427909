"""Who the key manager calls act as: castellan contexts with auth plugins.

castellan asks a :class:`~oslo_context.context.RequestContext` for
``get_auth_plugin()`` and uses the keystoneauth plugin it returns; without
one it builds a Keystone token plugin from ``auth_token``, which means a
Keystone round trip per call and no way to forward a service token.  So
every call goes through a :class:`KeyManagerContext` carrying the plugin
chosen here:

* for a request, the **caller's** identity (as Glance's own castellan
  calls): in ``token`` mode the caller's ``X-Auth-Token`` and, if present,
  ``X-Service-Token`` go straight to ``[barbican] barbican_endpoint``; with
  no endpoint configured, castellan's own behaviour (a Keystone token
  plugin on ``[barbican] auth_endpoint``, then the catalog's
  ``key-manager`` endpoint).  In ``trusted_headers`` mode the identity
  headers keystonemiddleware would have set are sent instead, with no
  token: only a key manager without ``authtoken`` believes them.
* for the retry path (``reconcile``), a **service** identity:
  :func:`service_contexts`.

Every plugin also bounds the HTTP calls: castellan builds its keystoneauth
session without a timeout and ignores ``[barbican] timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from keystoneauth1 import discover
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import plugin as ks_plugin
from keystoneauth1.identity import v3 as ks_v3
from oslo_config import cfg
from oslo_context import context as oslo_context

from instance_aware.keys import failures, opts

if TYPE_CHECKING:
    from keystoneauth1 import session as ks_session

#: Builds the castellan context of the retry path for the project that
#: owns an image (``None`` when the store does not know it).
ServiceContextFactory = Callable[[str | None], oslo_context.RequestContext]

#: The user the retry path claims in ``trusted_headers`` mode.
SERVICE_USER = 'instance-aware-manage'
#: The role it claims in the image owner's project: Barbican's default
#: policy lets a project admin remove consumers and delete secrets.
SERVICE_ROLE = 'admin'


def _bound(session: ks_session.Session, timeout: float | None) -> None:
    # castellan creates a new Session per call, with no timeout; the first
    # thing it asks its plugin for (headers, endpoint) happens before the
    # session reads ``timeout`` for that same request.
    if timeout is not None and session.timeout is None:
        session.timeout = timeout


class HeadersAuth(ks_plugin.BaseAuthPlugin):
    """Fixed headers, no catalog: castellan must be given the endpoint
    (``[barbican] barbican_endpoint``)."""

    def __init__(self, headers: Mapping[str, str],
                 timeout: float | None = None) -> None:
        super().__init__()
        self.headers = dict(headers)
        self.timeout = timeout

    def get_headers(self, session: ks_session.Session
                    ) -> dict[str, str] | None:
        _bound(session, self.timeout)
        return dict(self.headers)

    def get_endpoint(self, session: ks_session.Session,
                     **kwargs: Any) -> str | None:
        return None


class BoundedAuth(ks_plugin.BaseAuthPlugin):
    """A Keystone plugin (token, password ...) with a timeout added.

    Delegates what castellan and barbicanclient use: headers, the catalog
    lookup, re-authentication after a 401.
    """

    def __init__(self, inner: ks_plugin.BaseAuthPlugin,
                 timeout: float | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.timeout = timeout

    def get_headers(self, session: ks_session.Session
                    ) -> dict[str, str] | None:
        _bound(session, self.timeout)
        return self.inner.get_headers(session)

    def get_endpoint(self, session: ks_session.Session,
                     **kwargs: Any) -> str | None:
        _bound(session, self.timeout)
        return self.inner.get_endpoint(session, **kwargs)

    def get_endpoint_data(self, session: ks_session.Session, *,
                          endpoint_override: str | None = None,
                          discover_versions: bool = True,
                          **kwargs: Any) -> discover.EndpointData | None:
        _bound(session, self.timeout)
        return self.inner.get_endpoint_data(
            session, endpoint_override=endpoint_override,
            discover_versions=discover_versions, **kwargs)

    def get_connection_params(self, session: ks_session.Session
                              ) -> ks_plugin.ConnectionParams:
        return self.inner.get_connection_params(session)

    def invalidate(self) -> bool:
        return self.inner.invalidate()

    def get_user_id(self, session: ks_session.Session) -> str | None:
        return self.inner.get_user_id(session)

    def get_project_id(self, session: ks_session.Session) -> str | None:
        return self.inner.get_project_id(session)


class KeyManagerContext(oslo_context.RequestContext):
    """A request context that tells castellan which auth plugin to use."""

    def __init__(self, auth_plugin: ks_plugin.BaseAuthPlugin,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._auth_plugin = auth_plugin

    def get_auth_plugin(self) -> ks_plugin.BaseAuthPlugin:
        return self._auth_plugin


def identity_headers(ctx: oslo_context.RequestContext) -> dict[str, str]:
    """keystonemiddleware's headers for ``ctx`` (``trusted_headers``)."""
    headers = {'X-Identity-Status': 'Confirmed'}
    named = {
        'X-Project-Id': ctx.project_id,
        'X-User-Id': ctx.user_id,
        'X-Project-Domain-Id': ctx.project_domain_id,
        'X-User-Domain-Id': ctx.user_domain_id,
        'X-Roles': ','.join(ctx.roles or ()),
        'X-Service-Roles': ','.join(ctx.service_roles or ()),
    }
    headers.update({k: v for k, v in named.items() if v})
    return headers


def _barbican_option(conf: cfg.ConfigOpts, name: str) -> Any:
    # The group exists once castellan's Barbican backend was loaded; other
    # backends (Vault) ignore the context's identity anyway.
    try:
        return conf.barbican[name]
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
        return None


def _context_kwargs(ctx: oslo_context.RequestContext) -> dict[str, Any]:
    return {
        'auth_token': ctx.auth_token, 'user_id': ctx.user_id,
        'project_id': ctx.project_id,
        'user_domain_id': ctx.user_domain_id,
        'project_domain_id': ctx.project_domain_id,
        'roles': list(ctx.roles or ()),
        'service_roles': list(ctx.service_roles or ()),
        'service_token': ctx.service_token,
        'request_id': ctx.request_id,
        'global_request_id': ctx.global_request_id,
        'overwrite': False,
    }


def caller_context(conf: cfg.ConfigOpts, ctx: oslo_context.RequestContext
                   ) -> KeyManagerContext:
    """The castellan context acting as the caller of the request.

    :raises KeyNotAccessible: the caller is anonymous.
    :raises KeyManagerNotConfigured: ``token`` mode but the request
        carries no token (a pipeline without ``authtoken``: a deployment
        error).
    """
    group = opts.KeyOptions.load(conf)
    if not (ctx.user_id or ctx.project_id or ctx.auth_token):
        raise failures.KeyNotAccessible(
            'an anonymous caller cannot use key manager secrets',
            reason=failures.FORBIDDEN)
    auth: ks_plugin.BaseAuthPlugin
    if group.auth_mode == opts.TRUSTED_HEADERS:
        auth = HeadersAuth(identity_headers(ctx), group.timeout)
    elif not ctx.auth_token:
        raise failures.KeyManagerNotConfigured(
            'the request carries no token to forward to the key manager; '
            f'[{opts.GROUP}] auth_mode = {opts.TOKEN} needs keystonemiddleware'
            "'s authtoken in the pipeline")
    elif _barbican_option(conf, 'barbican_endpoint'):
        headers = {'X-Auth-Token': ctx.auth_token}
        if ctx.service_token:
            headers['X-Service-Token'] = ctx.service_token
        auth = HeadersAuth(headers, group.timeout)
    else:
        auth = BoundedAuth(ks_v3.Token(
            auth_url=_barbican_option(conf, 'auth_endpoint'),
            token=ctx.auth_token, project_id=ctx.project_id,
            project_domain_id=ctx.project_domain_id), group.timeout)
    return KeyManagerContext(auth, **_context_kwargs(ctx))


def service_contexts(conf: cfg.ConfigOpts) -> ServiceContextFactory:
    """The service identity of the retry path, per image owner.

    ``token`` mode: the keystoneauth credentials of ``[instance_aware_keys]``
    (``auth_type = password``, ``auth_url``, ``username`` ...), the same
    identity whatever the project.  ``trusted_headers`` mode: the admin
    role asserted in the image owner's project.

    :raises cfg.RequiredOptError: ``token`` mode without credentials.
    """
    group = opts.KeyOptions.load(conf)
    timeout = group.timeout
    if group.auth_mode == opts.TRUSTED_HEADERS:

        def trusted(project_id: str | None) -> oslo_context.RequestContext:
            ctx = oslo_context.RequestContext(
                user_id=SERVICE_USER, project_id=project_id,
                roles=[SERVICE_ROLE], overwrite=False)
            return KeyManagerContext(
                HeadersAuth(identity_headers(ctx), timeout),
                **_context_kwargs(ctx))

        return trusted

    inner = ks_loading.load_auth_from_conf_options(conf, opts.GROUP)
    if inner is None:
        raise cfg.RequiredOptError('auth_type', cfg.OptGroup(opts.GROUP))
    auth = BoundedAuth(inner, timeout)

    def credentials(project_id: str | None) -> oslo_context.RequestContext:
        # One plugin for every call: its token is cached and renewed.
        return KeyManagerContext(auth, overwrite=False)

    return credentials
