"""The query API needs a store and the named checks, nothing of a filter."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
import webob

from instance_aware.api import instances
from instance_aware.http.request import Request
from instance_aware.store.answers import Related, RelationFields
from tests.local import identity

INSTANCE = '8a6f4c1e-4f3b-4c5e-9d7a-2b1e0c9f3a11'
IMAGE = '11111111-2222-4333-8444-555555555555'
RELATED = Related(
    image_id=IMAGE, registry_id='r1', project_id='p1', state='active',
    properties={'instance_uuid': INSTANCE},
    relation=RelationFields(INSTANCE, None, 'backup', 'daily', True,
                            'nova'),
    created_at=datetime.datetime(2026, 1, 2, 3, 4, 5), deleted_at=None)


class Store:
    """The two reads the query API makes, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def related(self, image_id: str) -> Related | None:
        self.calls.append(('related', image_id))
        return RELATED if image_id == IMAGE else None

    def of_instance(self, instance_uuid: str, projects: Any,
                    **kwargs: Any) -> list[Related]:
        self.calls.append(('of_instance', instance_uuid, projects, kwargs))
        return [RELATED]


class Checks:
    """Named checks answering ``allowed`` for every rule."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed

    def __getattr__(self, rule: str) -> Any:
        return lambda context, owner=None: self.allowed


def _get(path: str, store: Store, allowed: bool = True) -> webob.Response:
    req = Request.blank(path, headers=identity.identity_headers('p1'))
    try:
        return instances.handle(store, Checks(allowed),  # type: ignore
                                req)
    except webob.exc.HTTPException as exc:
        return req.get_response(exc)


def test_one_image_relation_from_the_store() -> None:
    store = Store()
    response = _get(f'/v2/images/{IMAGE}/instance', store)
    assert response.status_int == 200
    assert json.loads(response.body) == instances.entry(RELATED)
    assert store.calls == [('related', IMAGE)]


@pytest.mark.parametrize('allowed,status', [
    pytest.param(True, 200, id='allowed'),
    pytest.param(False, 403, id='refused'),
])
def test_list_is_asked_of_the_store_in_the_callers_project(
        allowed: bool, status: int) -> None:
    store = Store()
    response = _get(f'/v2/instances/{INSTANCE}/images?limit=1', store,
                    allowed)
    assert response.status_int == status
    if not allowed:
        assert store.calls == []
        return
    assert json.loads(response.body)['images'] == [instances.entry(RELATED)]
    [(name, instance, projects, kwargs)] = store.calls
    assert (name, instance, projects) == ('of_instance', INSTANCE, ['p1'])
    assert kwargs['limit'] == 1
