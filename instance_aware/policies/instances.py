"""Rules for instance relations (image to instance metadata)."""

from __future__ import annotations

from oslo_policy import policy

from instance_aware.policies import base

IMAGE = '/v2/images/{image_id}'

GET_INSTANCE_METADATA = 'instance_aware:get_instance_metadata'
SET_INSTANCE_METADATA = 'instance_aware:set_instance_metadata'
LIST_INSTANCE_IMAGES = 'instance_aware:list_instance_images'

rules: list[policy.RuleDefault] = [
    policy.DocumentedRuleDefault(
        name=GET_INSTANCE_METADATA,
        check_str=base.ADMIN_OR_PROJECT_READER,
        scope_types=['project'],
        description='Read the instance keys (``instance_uuid``, '
                    '``image_type``, ``backup_type``, ...) of an image in '
                    'show, list, create and update responses, and filter '
                    'image lists on them.  Callers that fail this rule see '
                    'the image exactly as Glance stores it, without those '
                    'keys.  A service token does not count: Nova sends '
                    'one with every call it makes for any user and hands '
                    'the properties to that user, so reading the keys of '
                    "another project's image takes the user's own right "
                    '(a reader of the owner project, or an administrator).',
        operations=[
            {'path': IMAGE, 'method': 'GET'},
            {'path': '/v2/images', 'method': 'GET'},
            {'path': IMAGE + '/instance', 'method': 'GET'},
        ]),
    policy.DocumentedRuleDefault(
        name=SET_INSTANCE_METADATA,
        check_str=base.ADMIN_OR_SERVICE,
        scope_types=['project'],
        description='Record instance keys as a *trusted* assertion.  Any '
                    'caller allowed to create or update an image may relate '
                    "it to an instance of its own project; only callers "
                    'passing this rule (by default a service token, as Nova '
                    'sends) have the relation marked trusted.  A change of '
                    'any instance key by a caller failing this rule clears '
                    'the mark.',
        operations=[
            {'path': '/v2/images', 'method': 'POST'},
            {'path': IMAGE, 'method': 'PATCH'},
        ]),
    policy.DocumentedRuleDefault(
        name=LIST_INSTANCE_IMAGES,
        check_str=base.ADMIN_OR_PROJECT_READER,
        scope_types=['project'],
        description='List the images related to an instance through the '
                    'query API.  Results are always limited to the '
                    "caller's project unless the caller is an "
                    'administrator asking for ``all_projects``; a service '
                    "token does not stand in for the user's own role.",
        operations=[
            {'path': '/v2/instances/{instance_uuid}/images',
             'method': 'GET'},
        ]),
]


def list_rules() -> list[policy.RuleDefault]:
    return rules
