"""Who a relation's ``trusted`` mark vouches for (issue 17, finding 8)."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from instance_aware.filters.instance_metadata import InstanceMetadataFilter
from instance_aware.http.request import Request
from instance_aware.store.records import RelationFields
from tests.local import identity

INSTANCE = '8a6f4c1e-4f3b-4c5e-9d7a-2b1e0c9f3a11'
BEFORE = {'instance_uuid': INSTANCE, 'image_type': 'backup',
          'backup_type': 'daily', 'user_id': 'alice',
          'base_image_ref': '11111111-2222-3333-4444-555555555555'}
ASSERTED = RelationFields(instance_uuid=INSTANCE, installation_uuid=None,
                          image_type='backup', backup_type='daily',
                          trusted=True, asserted_by='nova')


def _filter() -> InstanceMetadataFilter:
    conf = cfg.ConfigOpts()
    conf([], project='glance')
    return InstanceMetadataFilter(lambda e, s: [], {}, conf)


def _request(service: bool) -> Request:
    return Request.blank('/v2/images/x', headers=identity.identity_headers(
        'p1', user='bob', service=service))


@pytest.mark.parametrize('changes,service,trusted,asserted_by', [
    pytest.param({}, False, True, 'nova', id='nothing-changed'),
    pytest.param({'user_id': 'mallory'}, False, False, 'bob',
                 id='user-edits-user_id'),
    pytest.param({'base_image_ref': 'x'}, False, False, 'bob',
                 id='user-edits-base_image_ref'),
    pytest.param({'image_type': 'snapshot'}, False, False, 'bob',
                 id='user-edits-the-relation'),
    pytest.param({'user_id': 'carol'}, True, True, 'nova',
                 id='service-edits-a-key-keeps-the-asserter'),
    pytest.param({'image_type': 'snapshot'}, True, True, 'bob',
                 id='service-asserts-a-new-relation'),
])
def test_trusted_covers_every_instance_key(
        changes: dict[str, str], service: bool, trusted: bool,
        asserted_by: str) -> None:
    relation = _filter().relation(_request(service), 'p1',
                                  {**BEFORE, **changes}, ASSERTED, BEFORE)
    assert relation is not None
    assert (relation.trusted, relation.asserted_by) == (trusted,
                                                        asserted_by)
    assert relation.image_type == {**BEFORE, **changes}['image_type']


def test_an_untrusted_relation_stays_untrusted_for_a_service_key_edit(
        ) -> None:
    """A service editing ``boot_roles`` does not vouch for an instance a
    user named."""
    untrusted = RelationFields(instance_uuid=INSTANCE,
                               installation_uuid=None, image_type='backup',
                               backup_type='daily', trusted=False,
                               asserted_by='bob')
    relation = _filter().relation(_request(True), 'p1',
                                  {**BEFORE, 'boot_roles': 'member'},
                                  untrusted, BEFORE)
    assert relation == untrusted
