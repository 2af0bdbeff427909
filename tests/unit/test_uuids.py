"""UUID checks: the spellings Nova and Glance accept, one canonical form."""

from __future__ import annotations

import pytest

from instance_aware import uuids

CANONICAL = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d'


@pytest.mark.parametrize('value,expected', [
    pytest.param(CANONICAL, True, id='canonical'),
    pytest.param(CANONICAL.upper(), True, id='upper-case'),
    pytest.param(CANONICAL.replace('-', ''), True, id='no-dashes'),
    pytest.param('{' + CANONICAL + '}', True, id='braces'),
    pytest.param('urn:uuid:' + CANONICAL, True, id='urn'),
    pytest.param(CANONICAL[:-1], False, id='short'),
    pytest.param('nope', False, id='word'),
    pytest.param(None, False, id='none'),
])
def test_is_uuid(value, expected):
    assert uuids.is_uuid(value) is expected


@pytest.mark.parametrize('value', [
    CANONICAL, CANONICAL.upper(), CANONICAL.replace('-', ''),
    '{' + CANONICAL + '}', 'urn:uuid:' + CANONICAL])
def test_canonical(value):
    assert uuids.canonical(value) == CANONICAL


@pytest.mark.parametrize('value,expected', [
    pytest.param(CANONICAL, True, id='canonical'),
    pytest.param(CANONICAL.upper(), False, id='upper-case'),
    pytest.param(CANONICAL.replace('-', ''), False, id='no-dashes'),
    pytest.param('nope', False, id='word'),
])
def test_is_canonical(value, expected):
    assert uuids.is_canonical(value) is expected


@pytest.mark.parametrize('value,expected', [
    pytest.param(CANONICAL, True, id='canonical'),
    pytest.param(CANONICAL.upper(), True, id='upper-case'),
    pytest.param(CANONICAL.replace('-', ''), False, id='no-dashes'),
    pytest.param('{' + CANONICAL + '}', False, id='braces'),
    pytest.param(CANONICAL + 'a', False, id='long'),
])
def test_is_image_id_follows_glance_schema(value, expected):
    assert uuids.is_image_id(value) is expected
