"""The filter base: pass-through, and store failures mapped to 4xx/5xx."""

from __future__ import annotations

from typing import Any

import pytest
import webob
from oslo_config import cfg

from instance_aware.filters import base
from instance_aware.http.request import Request
from instance_aware.store import errors as store_errors


def _registry(environ: dict[str, Any], start_response: Any) -> Any:
    return webob.Response(json_body={'from': 'registry'})(environ,
                                                          start_response)


class Failing(base.Filter):
    ROUTES = frozenset({'image'})

    def __init__(self, error: Exception) -> None:
        super().__init__(_registry, {}, cfg.ConfigOpts())
        self.error = error

    def process_request(self, req: Request) -> webob.Response | None:
        raise self.error


@pytest.mark.parametrize(('error', 'status', 'words'), [
    (store_errors.StoreUnavailable('down'), 503, 'unavailable'),
    (store_errors.Conflict('deadlock'), 409, 'concurrent request'),
])
def test_store_errors_become_clear_responses(
        error: Exception, status: int, words: str) -> None:
    request = webob.Request.blank(
        '/v2/images/3d5a1d0a-7a43-4b93-9cde-6f49f64a3a1f',
        headers={'Accept': 'application/json'})
    response = request.get_response(Failing(error))
    assert response.status_int == status
    assert words in response.text
    assert 'deadlock' not in response.text and 'down' not in response.text


def test_other_routes_pass_through_untouched() -> None:
    response = webob.Request.blank('/v2/images/x/file').get_response(
        Failing(RuntimeError('must not run')))
    assert response.json_body == {'from': 'registry'}
