"""Personas shared by every rule, in Glance's style.

The owner of an image is the target's ``project_id``.  A *service caller*
presents a service token (keystonemiddleware's ``X-Service-Roles``) with the
``service`` role, as Nova and Cinder do, or is itself a service user.

A service token widens what the *service* may do (see locations, assert
trusted relations), never what the user it acts for may read: Nova sends
its token with every call it makes for any user and hands the image
properties it gets to that user.  Rules that read captured keys therefore
use :data:`ADMIN_OR_PROJECT_READER`, the user's own right.
"""

from __future__ import annotations

from oslo_policy import policy

ADMIN = 'rule:instance_aware:context_is_admin'
SERVICE = 'rule:instance_aware:service_api'
PROJECT_READER = 'role:reader and project_id:%(project_id)s'
PROJECT_MEMBER = 'role:member and project_id:%(project_id)s'

ADMIN_OR_SERVICE = f'{ADMIN} or {SERVICE}'
ADMIN_OR_PROJECT_READER = f'{ADMIN} or ({PROJECT_READER})'
ADMIN_OR_SERVICE_OR_PROJECT_MEMBER = (
    f'{ADMIN_OR_SERVICE} or ({PROJECT_MEMBER})')

CONTEXT_IS_ADMIN = 'instance_aware:context_is_admin'
SERVICE_API = 'instance_aware:service_api'

rules: list[policy.RuleDefault] = [
    policy.RuleDefault(
        name=CONTEXT_IS_ADMIN,
        check_str='role:admin',
        description='Who is an administrator for instance-aware.'),
    policy.RuleDefault(
        name=SERVICE_API,
        check_str='service_roles:service or role:service',
        description='Who is a trusted OpenStack service (for example Nova '
                    'with a service token).'),
]


def list_rules() -> list[policy.RuleDefault]:
    return rules
