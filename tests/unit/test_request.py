"""Bounded JSON bodies: every malformed one is a 400, never a 500."""

from __future__ import annotations

import pytest
import webob.exc

from instance_aware.request import Request


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
