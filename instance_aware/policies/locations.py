"""Rules for image locations (``locations`` and ``direct_url``).

Defaults follow OSSN-0065 and OSSN-0090: only administrators and service
callers (Nova, Cinder with a service token) ever see or change locations.
"""

from __future__ import annotations

from oslo_policy import policy

from instance_aware.policies import base

IMAGE = '/v2/images/{image_id}'
LOCATIONS = IMAGE + '/locations'

GET_IMAGE_LOCATION = 'instance_aware:get_image_location'
FETCH_IMAGE_LOCATION = 'instance_aware:fetch_image_location'
SET_IMAGE_LOCATION = 'instance_aware:set_image_location'
DELETE_IMAGE_LOCATION = 'instance_aware:delete_image_location'
ADD_IMAGE_LOCATION = 'instance_aware:add_image_location'

rules: list[policy.RuleDefault] = [
    policy.DocumentedRuleDefault(
        name=GET_IMAGE_LOCATION,
        check_str=base.ADMIN_OR_SERVICE,
        scope_types=['project'],
        description='See ``locations`` and ``direct_url`` in image '
                    'representations (show, list, create, update) and '
                    '``loc_url`` in image tasks.',
        operations=[
            {'path': IMAGE, 'method': 'GET'},
            {'path': '/v2/images', 'method': 'GET'},
            {'path': IMAGE + '/tasks', 'method': 'GET'},
        ]),
    policy.DocumentedRuleDefault(
        name=FETCH_IMAGE_LOCATION,
        check_str=base.ADMIN_OR_SERVICE,
        scope_types=['project'],
        description='List the locations of an image (API 2.17).',
        operations=[{'path': LOCATIONS, 'method': 'GET'}]),
    policy.DocumentedRuleDefault(
        name=SET_IMAGE_LOCATION,
        check_str=base.ADMIN_OR_SERVICE,
        scope_types=['project'],
        description='Add or replace image locations through JSON-patch '
                    'operations on ``/locations``.',
        operations=[{'path': IMAGE, 'method': 'PATCH'}]),
    policy.DocumentedRuleDefault(
        name=DELETE_IMAGE_LOCATION,
        check_str=base.ADMIN_OR_SERVICE,
        scope_types=['project'],
        description='Remove image locations through JSON-patch operations '
                    'on ``/locations``.',
        operations=[{'path': IMAGE, 'method': 'PATCH'}]),
    policy.DocumentedRuleDefault(
        name=ADD_IMAGE_LOCATION,
        check_str=base.ADMIN_OR_SERVICE,
        scope_types=['project'],
        description='Add a location to an image (API 2.17).',
        operations=[{'path': LOCATIONS, 'method': 'POST'}]),
]


def list_rules() -> list[policy.RuleDefault]:
    return rules
