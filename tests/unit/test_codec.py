"""``codec``: orjson's speed, the standard library's results.

Every case is checked against :mod:`json` itself: the document read must
equal the standard library's, and what is written must read back (with
the standard library) as the same document.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from instance_aware.http import codec

IMAGE = {'id': '0b9f3d6e-1c2a-4e5f-8a7b-6c5d4e3f2a1b', 'name': 'b\u00e4ckup',
         'size': 2**63 - 1, 'virtual_size': None, 'protected': False,
         'tags': ['a', 'b'], 'min_disk': 0, 'ratio': 0.1, 'tiny': 1e-7,
         'nested': {'deep': [{'x': -1}]}}


@pytest.mark.parametrize('body', [
    pytest.param(json.dumps(IMAGE).encode(), id='an-image'),
    pytest.param(json.dumps(IMAGE, ensure_ascii=False).encode(),
                 id='utf-8-as-is'),
    pytest.param(b'{"size": 123456789012345678901234567890}',
                 id='integer-beyond-64-bits'),
    pytest.param(b'[-9223372036854775809, 18446744073709551616]',
                 id='just-beyond-64-bits'),
    pytest.param(b'{"a": 1, "a": 2}', id='duplicate-key-last-wins'),
    pytest.param('{"name": "\u00e9"}'.encode('utf-16'), id='utf-16'),
    pytest.param(b'{"name": "\\u00e9\\ud83d\\ude00"}', id='escapes'),
    pytest.param(b'  [1, 2.5, "x", true, null]  ', id='whitespace'),
])
def test_reads_what_the_standard_library_reads(body: bytes) -> None:
    expected = json.loads(body)
    document = codec.loads(body)
    assert document == expected
    assert json.loads(codec.dumps(document)) == expected


def test_integers_beyond_64_bits_keep_every_digit() -> None:
    """orjson alone would read them as floats."""
    document = codec.loads(b'{"size": 123456789012345678901234567890}')
    assert document['size'] == 123456789012345678901234567890
    assert isinstance(document['size'], int)
    assert codec.dumps(document) == (
        b'{"size": 123456789012345678901234567890}')


def test_nan_and_infinity_are_written_back_as_they_came() -> None:
    """Never as orjson's ``null``."""
    document = codec.loads(b'{"a": NaN, "b": Infinity, "c": -Infinity}')
    assert math.isnan(document['a'])
    assert document['b'] == math.inf and document['c'] == -math.inf
    assert json.loads(codec.dumps(document), parse_constant=str) == {
        'a': 'NaN', 'b': 'Infinity', 'c': '-Infinity'}


@pytest.mark.parametrize('document', [
    pytest.param({1: 'a'}, id='non-string-key'),
    pytest.param({'n': 2**70}, id='big-integer'),
    pytest.param(json.loads('[' * 300 + ']' * 300), id='deep-nesting'),
])
def test_writes_what_orjson_refuses_as_the_standard_library(
        document: Any) -> None:
    assert json.loads(codec.dumps(document)) == json.loads(
        json.dumps(document))


@pytest.mark.parametrize('body', [b'', b'{', b'{"a": }', b'\xff',
                                  b'[1, 2] x', b'nul'])
def test_what_is_not_json_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        codec.loads(body)


def test_nesting_beyond_the_interpreters_reach_is_a_recursion_error() -> None:
    body = b'[' * 100_000 + b']' * 100_000
    with pytest.raises(RecursionError):
        codec.loads(body)


def test_output_is_compact_utf_8() -> None:
    assert codec.dumps({'name': '\u00e9', 'tags': [1, 2]}) == (
        '{"name":"\u00e9","tags":[1,2]}'.encode())


def test_a_lone_surrogate_is_written_escaped() -> None:
    document = codec.loads(b'{"name": "\\ud800x", "n": 1e400}')
    assert codec.dumps(document) == b'{"name": "\\ud800x", "n": Infinity}'
    assert codec.loads(codec.dumps(document))['name'] == '\ud800x'
