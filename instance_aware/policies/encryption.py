"""Rules for the LUKS image-encryption properties."""

from __future__ import annotations

from oslo_policy import policy

from instance_aware.policies import base

IMAGE = '/v2/images/{image_id}'

GET_ENCRYPTION_PROPERTIES = 'instance_aware:get_encryption_properties'
SET_ENCRYPTION_PROPERTIES = 'instance_aware:set_encryption_properties'

rules: list[policy.RuleDefault] = [
    policy.DocumentedRuleDefault(
        name=GET_ENCRYPTION_PROPERTIES,
        check_str=base.ADMIN_OR_PROJECT_READER,
        scope_types=['project'],
        description='Read the ``os_encrypt_*``, ``os_decrypt_*`` and '
                    'legacy ``cinder_encryption_key_*`` properties of an '
                    'image, and filter image lists on them.  A service '
                    'token does not count: reading the properties of '
                    "another project's image takes the user's own right "
                    '(a reader of the owner project, or an administrator), '
                    'since Nova hands what it reads to the user it acts '
                    'for.',
        operations=[
            {'path': IMAGE, 'method': 'GET'},
            {'path': '/v2/images', 'method': 'GET'},
        ]),
    policy.DocumentedRuleDefault(
        name=SET_ENCRYPTION_PROPERTIES,
        check_str=base.ADMIN_OR_SERVICE_OR_PROJECT_MEMBER,
        scope_types=['project'],
        description='Set or change the encryption properties of an image. '
                    ' Checked only once Glance itself lets the caller '
                    'change the image (its own ``modify_image`` rule): a '
                    "service token never lets a user change another "
                    "project's image.",
        operations=[
            {'path': '/v2/images', 'method': 'POST'},
            {'path': IMAGE, 'method': 'PATCH'},
        ]),
]


def list_rules() -> list[policy.RuleDefault]:
    return rules
