"""Capture machinery: pointers, splitting and patch semantics as Glance."""

from __future__ import annotations

import pytest
import webob.exc

from instance_aware.capture import bodies
from instance_aware.http.request import PATCH_V20, PATCH_V21

KEYS = frozenset({'instance_uuid', 'image_type', 'a/b', 'x~y'})


@pytest.mark.parametrize('pointer,expected', [
    pytest.param('/instance_uuid', ['instance_uuid'], id='plain'),
    pytest.param('/ instance_uuid ', ['instance_uuid'], id='spaces-strip'),
    pytest.param('/a~1b', ['a/b'], id='escaped-slash'),
    pytest.param('/x~0y', ['x~y'], id='escaped-tilde'),
    pytest.param('/locations/0', ['locations', '0'], id='deep'),
    pytest.param('instance_uuid', None, id='no-slash'),
    pytest.param('/a//b', None, id='adjacent'),
    pytest.param('/a/', None, id='trailing'),
    pytest.param('/a~2', None, id='bad-escape'),
    pytest.param(7, None, id='not-a-string'),
])
def test_decode_pointer(pointer, expected):
    assert bodies.decode_pointer(pointer) == expected


@pytest.mark.parametrize('raw,media,expected', [
    pytest.param({'op': 'add', 'path': '/a', 'value': 'v'}, PATCH_V21,
                 ('add', '/a'), id='v21'),
    pytest.param({'op': 'move', 'path': '/a'}, PATCH_V21, ('move', '/a'),
                 id='v21-any-op'),
    pytest.param({'op': 'add'}, PATCH_V21, ('add', bodies.MISSING),
                 id='v21-no-path'),
    pytest.param({'replace': '/a', 'value': 'v'}, PATCH_V20,
                 ('replace', '/a'), id='v20'),
    pytest.param({'op': 'add', 'path': '/a'}, PATCH_V20,
                 (None, bodies.MISSING), id='v20-no-op-member'),
    pytest.param(['add'], PATCH_V21, (None, bodies.MISSING),
                 id='not-an-object'),
])
def test_op_and_pointer_read_as_glance_reads_them(raw, media, expected):
    assert bodies.op_and_pointer(raw, media) == expected


def test_split_create_keeps_the_rest():
    captured, forwarded = bodies.split_create(
        {'name': 'n', 'instance_uuid': 'u', 'image_type': 'backup'}, KEYS)
    assert captured == {'instance_uuid': 'u', 'image_type': 'backup'}
    assert forwarded == {'name': 'n'}


@pytest.mark.parametrize('value,message', [
    pytest.param(5, 'expected a string', id='int'),
    pytest.param(None, 'expected a string', id='null'),
    pytest.param('x' * 256, 'longer than 255', id='too-long'),
    pytest.param('\ud800', 'not valid Unicode text', id='lone-surrogate'),
])
def test_split_create_refuses_bad_values(value, message):
    with pytest.raises(webob.exc.HTTPBadRequest) as exc:
        bodies.split_create({'image_type': value}, KEYS)
    assert message in str(exc.value.explanation)


def test_split_patch_v21():
    doc = [
        {'op': 'add', 'path': '/instance_uuid', 'value': 'u'},
        {'op': 'replace', 'path': '/name', 'value': 'n'},
        {'op': 'remove', 'path': '/ image_type'},
        {'op': 'add', 'path': '/a~1b', 'value': 'v'},
        {'op': 'bogus', 'path': '/instance_uuid'},
    ]
    ops, rest = bodies.split_patch(doc, PATCH_V21, KEYS)
    assert ops == [bodies.Operation('add', 'instance_uuid', 'u'),
                   bodies.Operation('remove', 'image_type'),
                   bodies.Operation('add', 'a/b', 'v')]
    # Glance answers malformed operations itself.
    assert rest == [doc[1], doc[4]]


def test_split_patch_v20():
    doc = [{'add': '/instance_uuid', 'value': 'u'},
           {'replace': '/name', 'value': 'n'}]
    ops, rest = bodies.split_patch(doc, PATCH_V20, KEYS)
    assert ops == [bodies.Operation('add', 'instance_uuid', 'u')]
    assert rest == [doc[1]]


@pytest.mark.parametrize('doc,message', [
    pytest.param([{'op': 'add', 'path': '/instance_uuid/x', 'value': 'u'}],
                 'Invalid JSON pointer', id='deep-path'),
    pytest.param([{'op': 'add', 'path': '/instance_uuid'}],
                 'requires a member named "value"', id='no-value'),
    pytest.param([{'op': 'replace', 'path': '/image_type', 'value': []}],
                 'expected a string', id='list-value'),
])
def test_split_patch_refuses(doc, message):
    with pytest.raises(webob.exc.HTTPBadRequest) as exc:
        bodies.split_patch(doc, PATCH_V21, KEYS)
    assert message in str(exc.value.explanation)


def _ops(*triples):
    return [bodies.Operation(*t) for t in triples]


@pytest.mark.parametrize('current,ops,media,expected', [
    pytest.param({}, _ops(('add', 'k', 'v')), PATCH_V21, {'k': 'v'},
                 id='add'),
    pytest.param({'k': 'a'}, _ops(('add', 'k', 'b')), PATCH_V21,
                 {'k': 'b'}, id='v21-add-replaces'),
    pytest.param({'k': 'a'}, _ops(('replace', 'k', 'b')), PATCH_V20,
                 {'k': 'b'}, id='replace'),
    pytest.param({'k': 'a', 'j': 'b'}, _ops(('remove', 'k')), PATCH_V21,
                 {'j': 'b'}, id='remove'),
    pytest.param({}, _ops(('add', 'k', 'a'), ('replace', 'k', 'b')),
                 PATCH_V21, {'k': 'b'}, id='in-order'),
])
def test_apply_operations(current, ops, media, expected):
    assert bodies.apply_operations(current, ops, media) == expected
    assert current != expected or not ops  # input never mutated


@pytest.mark.parametrize('current,ops,media,message', [
    pytest.param({'k': 'a'}, _ops(('add', 'k', 'b')), PATCH_V20,
                 'already present', id='v20-add-existing'),
    pytest.param({}, _ops(('replace', 'k', 'b')), PATCH_V21,
                 'does not exist', id='replace-missing'),
    pytest.param({}, _ops(('remove', 'k')), PATCH_V21,
                 'does not exist', id='remove-missing'),
])
def test_apply_operations_conflicts(current, ops, media, message):
    with pytest.raises(webob.exc.HTTPConflict) as exc:
        bodies.apply_operations(current, ops, media)
    assert message in exc.value.detail
    assert exc.value.explanation == (
        'There was a conflict when trying to complete your request.')


def test_merge_into_says_whether_it_changed_the_image() -> None:
    image = {'id': 'x', 'image_type': 'backup'}
    assert bodies.merge_into(image, {'image_type': 'backup'}) is False
    assert bodies.merge_into(image, {'backup_type': 'daily'}) is True
    assert bodies.merge_into(image, {'image_type': 'snapshot'}) is True
    assert bodies.merge_into(image, {'backup_type': None}) is True
    assert image == {'id': 'x', 'image_type': 'snapshot',
                     'backup_type': None}


def test_strip_from_says_whether_there_was_anything_to_strip() -> None:
    image = {'id': 'x', 'image_type': 'backup', 'name': 'n'}
    assert bodies.strip_from(image, {'backup_type'}) is False
    assert bodies.strip_from(image, {'image_type', 'backup_type'}) is True
    assert image == {'id': 'x', 'name': 'n'}
