"""Filters composed into one stack call each other directly, not via WSGI."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import webob
import webob.exc
from oslo_config import cfg

from instance_aware.filters import base
from instance_aware.http import documents, faults
from instance_aware.http.request import Request
from tests.unit.filters.registry import IMAGE, registry


class Counting(base.Filter):
    """Marks the image document; counts how it was called."""

    ROUTES: ClassVar[frozenset[str | None]] = frozenset({'image'})

    def __init__(self, app: Any, mark: str) -> None:
        super().__init__(app, {}, cfg.ConfigOpts())
        self.mark = mark
        self.wsgi_calls = 0
        self.direct_calls = 0
        self.bodies: list[bytes] = []

    def __call__(self, environ: Any, start_response: Any) -> Any:
        self.wsgi_calls += 1
        return super().__call__(environ, start_response)

    def respond(self, req: Request) -> webob.Response:
        self.direct_calls += 1
        return super().respond(req)

    def process_response(self, response: webob.Response,
                         request: Request) -> webob.Response:
        if response.status_int >= 400:
            self.bodies.append(response.body)
            return response
        document = documents.read(response)
        document.setdefault('marks', []).append(self.mark)
        documents.write(response, document)
        return response


class Refusing(Counting):
    """Refuses every request it handles with a 400 of its own."""

    def process_request(self, req: Request) -> webob.Response | None:
        raise faults.bad_request('The refusing filter says no.')


def test_filters_of_one_stack_call_each_other_directly() -> None:
    inner = Counting(registry, 'inner')
    middle = Counting(inner, 'middle')
    outer = Counting(middle, 'outer')
    response = webob.Request.blank(IMAGE).get_response(outer)
    assert response.status_int == 200
    assert response.json_body == {'id': 'x', 'name': 'from registry',
                                  'marks': ['inner', 'middle', 'outer']}
    assert response.content_length == len(response.body)
    assert (outer.wsgi_calls, outer.direct_calls) == (1, 0)
    assert (middle.wsgi_calls, middle.direct_calls) == (0, 1)
    assert (inner.wsgi_calls, inner.direct_calls) == (0, 1)


def test_a_filter_that_does_not_handle_the_route_passes_it_on() -> None:
    inner = Counting(registry, 'inner')
    middle = Counting(inner, 'middle')
    middle.ROUTES = frozenset({'images'})  # type: ignore[misc]
    outer = Counting(middle, 'outer')
    response = webob.Request.blank(IMAGE).get_response(outer)
    assert response.json_body['marks'] == ['inner', 'outer']
    assert middle.direct_calls == 1 and inner.direct_calls == 1


def test_an_inner_refusal_reaches_the_outer_filter_rendered() -> None:
    refusing = Refusing(registry, 'refusing')
    outer = Counting(refusing, 'outer')
    request = webob.Request.blank(IMAGE, headers={
        'Accept': 'application/json'})
    response = request.get_response(outer)
    assert response.status_int == 400
    assert refusing.direct_calls == 1
    # The outer filter saw the error body as WSGI would have rendered it
    # (so it can scan it), not an exception object without a body yet.
    assert len(outer.bodies) == 1
    assert b'The refusing filter says no.' in outer.bodies[0]
    assert 'The refusing filter says no.' in response.json_body['message']


def test_a_foreign_application_in_between_is_called_through_wsgi() -> None:
    inner = Counting(registry, 'inner')
    seen: list[bytes] = []

    def foreign(environ: dict[str, Any], start_response: Any) -> Any:
        response = webob.Request(environ).get_response(inner)
        seen.append(response.body)
        return response(environ, start_response)

    outer = Counting(foreign, 'outer')
    response = webob.Request.blank(IMAGE).get_response(outer)
    assert response.json_body['marks'] == ['inner', 'outer']
    assert json.loads(seen[0])['marks'] == ['inner']
    assert (inner.wsgi_calls, inner.direct_calls) == (1, 0)


def test_a_request_of_plain_webob_is_made_ours() -> None:
    inner = Counting(registry, 'inner')
    outer = Counting(inner, 'outer')
    plain = webob.Request.blank(IMAGE)
    response = outer.forward(plain)
    assert inner.direct_calls == 1
    assert documents.read(response)['marks'] == ['inner']
