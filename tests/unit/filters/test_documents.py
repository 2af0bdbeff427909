"""JSON documents handed from filter to filter: parsed once, written once."""

from __future__ import annotations

import json
from typing import Any

import pytest
import webob
from oslo_config import cfg

from instance_aware.filters import base
from instance_aware.http import codec, documents
from instance_aware.http.request import Request
from tests.unit.filters.registry import IMAGE, registry


class Marking(base.Filter):
    """Adds its mark to the image document on the way out."""

    ROUTES = frozenset({'image'})

    def __init__(self, app: Any, mark: str) -> None:
        super().__init__(app, {}, cfg.ConfigOpts())
        self.mark = mark

    def process_response(self, response: webob.Response,
                         request: Request) -> webob.Response:
        document = documents.read(response)
        document.setdefault('marks', []).append(self.mark)
        documents.write(response, document)
        return response


def _foreign(app: Any) -> Any:
    """A middleware that is not ours: it sees (and passes) bytes."""
    seen: list[bytes] = []

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        response = webob.Request(environ).get_response(app)
        seen.append(response.body)
        return response(environ, start_response)

    middleware.seen = seen  # type: ignore[attr-defined]
    return middleware


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    loads = codec.loads

    def counting(data: Any) -> Any:
        calls.append(data)
        return loads(data)

    monkeypatch.setattr(documents.codec, 'loads', counting)
    return calls


def test_a_stack_of_filters_parses_and_writes_the_body_once(
        parses: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[Any] = []
    encode = documents.JSONBody.encode

    def counting_encode(self: documents.JSONBody) -> bytes:
        writes.append(self.document)
        return encode(self)

    monkeypatch.setattr(documents.JSONBody, 'encode', counting_encode)
    stack = Marking(Marking(Marking(registry, 'inner'), 'middle'), 'outer')
    response = webob.Request.blank(IMAGE).get_response(stack)
    assert len(parses) == 1 and len(writes) == 1
    assert response.json_body == {'id': 'x', 'name': 'from registry',
                                  'marks': ['inner', 'middle', 'outer']}
    assert response.content_length == len(response.body)


def test_a_foreign_middleware_in_between_gets_bytes(
        parses: list[bytes]) -> None:
    foreign = _foreign(Marking(registry, 'inner'))
    stack = Marking(foreign, 'outer')
    response = webob.Request.blank(IMAGE).get_response(stack)
    # The inner filter wrote bytes for the middleware, the outer parsed
    # them again: correctness never depends on the hand-over.
    assert len(parses) == 2
    assert json.loads(foreign.seen[0])['marks'] == ['inner']
    assert response.json_body['marks'] == ['inner', 'outer']
    assert response.content_length == len(response.body)


def test_the_outermost_filter_answers_bytes_with_a_length() -> None:
    filter_ = Marking(registry, 'only')
    environ = webob.Request.blank(IMAGE).environ
    captured: list[Any] = []
    chunks = filter_(environ, lambda status, headers, exc=None:
                     captured.append(dict(headers)))
    body = b''.join(chunks)
    assert not isinstance(chunks, documents.JSONBody)
    assert int(captured[0]['Content-Length']) == len(body)
    assert json.loads(body)['marks'] == ['only']


def test_json_body_is_a_plain_wsgi_iterable() -> None:
    body = documents.JSONBody({'name': 'caf\u00e9'})
    assert b''.join(body) == '{"name":"caf\u00e9"}'.encode()
    response = webob.Response(content_type='application/json')
    documents.write(response, {'a': 1})
    assert response.content_length is None
    assert documents.read(response) == {'a': 1}
    assert response.body == b'{"a":1}'  # reading the body encodes it
    assert documents.finish(response).content_length == 7


def test_read_answers_none_for_what_is_not_json(
        parses: list[bytes]) -> None:
    text = webob.Response(body=b'{"a": 1}', content_type='text/plain')
    broken = webob.Response(body=b'{nope', content_type='application/json')
    assert documents.read(text) is None
    assert documents.read(broken) is None


class Looking(base.Filter):
    """Reads the image document and leaves it as it was."""

    ROUTES = frozenset({'image'})

    def __init__(self, app: Any) -> None:
        super().__init__(app, {}, cfg.ConfigOpts())

    def process_response(self, response: webob.Response,
                         request: Request) -> webob.Response:
        documents.write(response, documents.read(response), changed=False)
        return response


def _spaced_registry(environ: dict[str, Any], start_response: Any) -> Any:
    """Bytes no encoder of ours would write (Glance's own spacing)."""
    body = b'{"id" :  "x",\n "name": "caf\\u00e9"}'
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]


def test_a_document_no_filter_changed_keeps_the_registrys_bytes(
        parses: list[bytes]) -> None:
    stack = Looking(Looking(Looking(_spaced_registry)))
    response = webob.Request.blank(IMAGE).get_response(stack)
    assert response.body == b'{"id" :  "x",\n "name": "caf\\u00e9"}'
    assert response.content_length == len(response.body)
    assert len(parses) == 1  # handed up parsed all the same


def test_one_change_anywhere_in_the_stack_rewrites_the_document(
        parses: list[bytes]) -> None:
    for mark, stack in (
            ('middle', Looking(Marking(Looking(_spaced_registry), 'middle'))),
            ('outer', Marking(Looking(Looking(_spaced_registry)), 'outer')),
            ('inner', Looking(Looking(Marking(_spaced_registry, 'inner'))))):
        response = webob.Request.blank(IMAGE).get_response(stack)
        assert json.loads(response.body) == {
            'id': 'x', 'name': 'caf\u00e9', 'marks': [mark]}
        assert response.content_length == len(response.body)
