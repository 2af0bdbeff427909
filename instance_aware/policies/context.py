"""The caller's identity, read the way OpenStack services read it.

keystonemiddleware's ``auth_token`` (or Glance's ``context`` filter in
tests) leaves ``X-Roles``, ``X-Project-Id``, ``X-User-Id``,
``X-Service-Roles`` ... in the environ.  Those headers are only meaningful
when ``X-Identity-Status`` is ``Confirmed``: otherwise the caller is
anonymous, whatever else the request claims.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oslo_context import context as oslo_context

ENVIRON_KEY = 'instance_aware.policies.context'

_IDENTITY_HEADERS = (
    'HTTP_X_ROLES', 'HTTP_X_ROLE', 'HTTP_X_SERVICE_ROLES',
    'HTTP_X_PROJECT_ID', 'HTTP_X_TENANT_ID', 'HTTP_X_TENANT',
    'HTTP_X_USER_ID', 'HTTP_X_USER', 'HTTP_X_DOMAIN_ID',
    'HTTP_X_USER_DOMAIN_ID', 'HTTP_X_PROJECT_DOMAIN_ID',
    'HTTP_X_SYSTEM_SCOPE', 'HTTP_X_IS_ADMIN_PROJECT',
)


def from_environ(environ: dict[str, Any]) -> oslo_context.RequestContext:
    """Build (once per request) the caller's context from ``environ``."""
    cached = environ.get(ENVIRON_KEY)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if environ.get('HTTP_X_IDENTITY_STATUS') == 'Confirmed':
        ctx = oslo_context.RequestContext.from_environ(environ)
    else:
        anonymous = {k: v for k, v in environ.items()
                     if k not in _IDENTITY_HEADERS}
        ctx = oslo_context.RequestContext.from_environ(anonymous)
    environ[ENVIRON_KEY] = ctx
    return ctx


def policy_target(owner: str | None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Target for rules about an image owned by ``owner``."""
    target = {'project_id': owner, 'owner': owner}
    if extra:
        target.update(extra)
    return target
