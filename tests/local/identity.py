"""Act as any project against the local ``noauth`` Glance.

The ``noauth`` flavor trusts the identity headers keystonemiddleware would
have set (see :mod:`tests.local.glance`).  These helpers send
them: as a dict for ``requests`` or glanceclient's ``identity_headers``,
or as a keystoneauth session (the key manager's fixed-headers plugin,
:class:`~instance_aware.keys.auth.HeadersAuth`) so that any
keystoneauth-based client (openstacksdk, glanceclient's session mode)
sends them on every request.
"""

from __future__ import annotations

from collections.abc import Sequence

from keystoneauth1 import session as ks_session

from instance_aware.keys.auth import HeadersAuth

DEFAULT_ROLES = ('reader', 'member')
#: Roles of an administrator of the project.
ADMIN_ROLES = ('admin', 'member', 'reader')


def identity_headers(project: str,
                     roles: Sequence[str] = DEFAULT_ROLES,
                     user: str | None = None,
                     service: bool = False) -> dict[str, str]:
    """Headers claiming ``user`` (default ``<project>-user``) in ``project``.

    ``service`` adds ``X-Service-Roles: service``, as a service token
    (Nova's) would.
    """
    headers = {
        'X-Identity-Status': 'Confirmed',
        'X-Roles': ','.join(roles),
        'X-Project-Id': project,
        'X-User-Id': user or f'{project}-user',
    }
    if service:
        headers['X-Service-Roles'] = 'service'
    return headers


def session_for(project: str, roles: Sequence[str] = DEFAULT_ROLES,
                user: str | None = None, service: bool = False,
                timeout: float | None = 30) -> ks_session.Session:
    """A keystoneauth session acting as ``user`` in ``project``.

    No token and no catalog: clients must be given the endpoint
    (``endpoint_override``).
    """
    auth = HeadersAuth(identity_headers(project, roles, user, service))
    return ks_session.Session(auth=auth, timeout=timeout)
