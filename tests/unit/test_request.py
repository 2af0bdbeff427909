"""Bounded JSON bodies: every malformed one is a 400, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
import webob.exc

from instance_aware.http.request import PATCH_V21, Request


def _request(body: bytes) -> Request:
    request = Request.blank('/v2/images', method='POST', body=body)
    request.content_type = 'application/json'
    return request


@pytest.mark.parametrize('body', [
    b'{"name": ', b'\xff\xfe', b'[' * 100_000 + b']' * 100_000,
])
def test_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(webob.exc.HTTPBadRequest) as exc:
        _request(body).read_json(10_000_000)
    assert 'Malformed JSON' in str(exc.value.explanation)


def test_oversized_body_is_413_and_the_body_is_kept() -> None:
    request = _request(b'{"name": "x"}')
    with pytest.raises(webob.exc.HTTPRequestEntityTooLarge):
        request.read_json(5)
    parsed = _request(b'{"name": "x"}')
    assert parsed.read_json(100) == {'name': 'x'}
    assert parsed.body == b'{"name": "x"}'


@pytest.mark.parametrize('method,content_type,body,expected', [
    pytest.param('POST', 'text/plain', b'{"a": "b"}', {'a': 'b'},
                 id='create-text-plain'),
    pytest.param('POST', None, b'{"a": "b"}', {'a': 'b'}, id='create-none'),
    pytest.param('POST', 'APPLICATION/JSON', b'[1]', [1], id='create-list'),
    pytest.param('POST', 'application/json', b'', None, id='no-body'),
    pytest.param('PATCH', 'application/json', b'[]', None,
                 id='patch-not-a-patch-type'),
    pytest.param('PATCH', PATCH_V21 + '; charset=UTF-8', b'[]', [],
                 id='patch-with-parameters'),
])
def test_json_body_is_what_glance_reads(method: str,
                                        content_type: str | None,
                                        body: bytes, expected: Any) -> None:
    request = Request.blank('/v2/images', method=method, body=body)
    if content_type is None:
        del request.content_type
    else:
        request.content_type = content_type
    assert request.json_body(100) == expected
    assert request.body == body  # the next application reads it again


@pytest.mark.parametrize('body,message', [
    pytest.param('{"a": 1}'.encode('utf-16'), 'Malformed JSON',
                 id='utf-16'),
    pytest.param(b'"text"', 'Unexpected body type', id='string'),
])
def test_json_body_refuses_what_glance_refuses(body: bytes,
                                               message: str) -> None:
    request = Request.blank('/v2/images', method='POST', body=body)
    with pytest.raises(webob.exc.HTTPBadRequest) as exc:
        request.json_body(100)
    assert message in str(exc.value.explanation)
