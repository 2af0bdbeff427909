"""List queries on captured keys: plans, links and bodies as Glance."""

from __future__ import annotations

import json

import pytest

from instance_aware.capture import listing
from instance_aware.http import documents

KEYS = frozenset({'instance_uuid', 'image_type', 'backup_type'})
ROTATION = [('image_type', 'backup'), ('backup_type', 'daily'),
            ('instance_uuid', 'U'), ('limit', '200'),
            ('sort_key', 'created_at'), ('sort_dir', 'desc')]


def test_query_split_and_forward():
    q = listing.Query.parse([*ROTATION, ('name', 'n')], KEYS)
    assert q.captured == {'image_type': 'backup', 'backup_type': 'daily',
                          'instance_uuid': 'U'}
    assert q.forwarded({'id': 'in:a,b'}) == [
        ('limit', '200'), ('sort_key', 'created_at'), ('sort_dir', 'desc'),
        ('name', 'n'), ('id', 'in:a,b')]


def test_links_repeat_the_client_query():
    q = listing.Query.parse([*ROTATION, ('marker', 'm0')], KEYS)
    links = listing.links(q, 'm1')
    assert links['first'] == (
        '/v2/images?image_type=backup&backup_type=daily&instance_uuid=U'
        '&limit=200&sort_key=created_at&sort_dir=desc')
    assert links['next'] == links['first'].replace(
        '/v2/images?', '/v2/images?') + '&marker=m1'
    assert 'next' not in listing.links(q, None)


def test_list_body_layout():
    q = listing.Query.parse([], KEYS)
    body = json.loads(documents.json_response(
        listing.list_document([{'id': 'a'}], q, None)).body)
    assert list(body) == ['images', 'first', 'schema']
    assert body == {'images': [{'id': 'a'}], 'first': '/v2/images',
                    'schema': '/v2/schemas/images'}


def test_marker_of():
    assert listing.marker_of('/v2/images?limit=2&marker=abc') == 'abc'
    assert listing.marker_of(None) is None
    assert listing.marker_of('/v2/images?limit=2') is None


def _plan(params):
    return listing.fast_plan(listing.Query.parse(params, KEYS), 25, 1000)


def test_rotation_query_has_a_fast_plan():
    plan = _plan(ROTATION)
    assert plan is not None
    assert (plan.limit, plan.descending, plan.marker) == (200, True, None)
    image = {'id': 'a', 'status': 'active', 'os_hidden': False}
    assert plan.predicate(image)
    assert not plan.predicate(dict(image, os_hidden=True))
    assert not plan.predicate(dict(image, status='killed'))


@pytest.mark.parametrize('extra,image,matches', [
    pytest.param([('status', 'active')], {'status': 'active'}, True,
                 id='status'),
    pytest.param([('status', 'in:queued,active')], {'status': 'queued'},
                 True, id='status-in'),
    pytest.param([('name', 'eq:x')], {'name': 'x'}, True, id='name-eq'),
    pytest.param([('visibility', 'public')], {'visibility': 'private'},
                 False, id='visibility'),
    pytest.param([('os_hidden', 'TRUE')], {'os_hidden': True}, True,
                 id='hidden'),
    pytest.param([('tag', 'a'), ('tag', 'b')], {'tags': ['a']}, False,
                 id='tags-all'),
    pytest.param([('protected', 'true')], {'protected': True}, True,
                 id='protected'),
    pytest.param([('owner', 'p')], {'owner': 'q'}, False, id='owner'),
])
def test_fast_predicate(extra, image, matches):
    plan = _plan([('instance_uuid', 'U'), *extra])
    assert plan is not None
    base = {'status': 'active', 'os_hidden': False, 'visibility': 'shared'}
    assert plan.predicate({**base, **image}) is matches


@pytest.mark.parametrize('params', [
    pytest.param([('sort_key', 'name')], id='other-sort'),
    pytest.param([('sort', 'created_at:asc,name:desc')], id='multi-sort'),
    pytest.param([('sort_dir', 'sideways')], id='bad-dir'),
    pytest.param([('limit', 'x')], id='bad-limit'),
    pytest.param([('limit', '-1')], id='negative-limit'),
    pytest.param([('created_at', 'gt:2020-01-01T00:00:00Z')],
                 id='date-filter'),
    pytest.param([('some_property', 'v')], id='property-filter'),
    pytest.param([('name', 'gt:x')], id='bad-operator'),
    pytest.param([('name', 'in:"a,b",c')], id='quoted-in'),
    pytest.param([('os_hidden', 'maybe')], id='bad-hidden'),
    pytest.param([('member_status', 'nope')], id='bad-member-status'),
])
def test_unusual_queries_go_to_glance(params):
    assert _plan([('instance_uuid', 'U'), *params]) is None


def test_limit_is_capped_and_sort_parsed():
    plan = _plan([('instance_uuid', 'U'), ('limit', '5000'),
                  ('sort', 'created_at:asc')])
    assert plan is not None
    assert (plan.limit, plan.descending) == (1000, False)
