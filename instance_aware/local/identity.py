"""Act as any project against the local ``noauth`` Glance.

The ``noauth`` flavor trusts the identity headers keystonemiddleware would
have set (see :mod:`instance_aware.local.glance`).  These helpers send
them: as a dict for ``requests`` or glanceclient's ``identity_headers``,
or as a keystoneauth plugin so that any keystoneauth-based client
(openstacksdk, glanceclient's session mode) sends them on every request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keystoneauth1 import plugin
from keystoneauth1 import session as ks_session

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


class IdentityHeadersAuth(plugin.BaseAuthPlugin):
    """A keystoneauth plugin that authenticates by sending headers.

    No token and no catalog: clients must be given the endpoint
    (``endpoint_override``), which :meth:`get_endpoint` also returns.
    """

    def __init__(self, headers: Mapping[str, str],
                 endpoint: str | None = None) -> None:
        super().__init__()
        self.headers = dict(headers)
        self.endpoint = endpoint

    def get_headers(self, session: Any, **kwargs: Any) -> dict[str, str]:
        return dict(self.headers)

    def get_endpoint(self, session: Any, **kwargs: Any) -> str | None:
        return self.endpoint


def session_for(project: str, roles: Sequence[str] = DEFAULT_ROLES,
                user: str | None = None, service: bool = False,
                endpoint: str | None = None,
                timeout: float | None = 30) -> ks_session.Session:
    """A keystoneauth session acting as ``user`` in ``project``."""
    auth = IdentityHeadersAuth(
        identity_headers(project, roles, user, service), endpoint)
    return ks_session.Session(auth=auth, timeout=timeout)
