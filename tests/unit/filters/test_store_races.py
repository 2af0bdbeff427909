"""What a caller hears when the store keeps losing races after retries."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import webob
from oslo_config import cfg

from instance_aware.filters.encryption_properties import (
    EncryptionPropertiesFilter,
)
from instance_aware.filters.instance_metadata import InstanceMetadataFilter
from instance_aware.store import engine as store_engine
from instance_aware.store import errors as store_errors
from instance_aware.store import migration
from instance_aware.store.records import Records

INSTANCE = str(uuid.UUID(int=11, version=4))
HEADERS = {'X-Identity-Status': 'Confirmed', 'X-Roles': 'reader,member',
           'X-Project-Id': 'p', 'X-User-Id': 'u'}
PATCH = 'application/openstack-images-v2.1-json-patch'


def _registry(environ: dict[str, Any], start_response: Any) -> Any:
    """Answers creates and patches as Glance would (never refuses)."""
    req = webob.Request(environ)
    image = {'id': req.path_info.rsplit('/', 1)[-1], 'owner': 'p',
             'name': 'x', 'created_at': '2026-01-01T00:00:00Z'}
    if req.method == 'POST':
        image.update(json.loads(req.body))
        response = webob.Response(status=201, json_body=image)
    else:
        response = webob.Response(json_body=image)
    return response(environ, start_response)


@pytest.fixture
def stack(tmp_path: Path) -> InstanceMetadataFilter:
    url = f'sqlite:///{tmp_path}/ia.sqlite'
    migration.upgrade(store_engine.get_engine(url))
    conf = cfg.ConfigOpts()
    conf([], project='test')
    return InstanceMetadataFilter(
        _registry, {'connection': url, 'db_max_retries': '0'}, conf)


def _lose(*args: Any, **kwargs: Any) -> None:
    raise store_errors.LostRace('deadlock detected')


def test_paste_keys_set_the_retry_policy(
        stack: InstanceMetadataFilter) -> None:
    assert stack.database.retry.max_retries == 0


def test_a_create_that_keeps_losing_is_not_called_a_duplicate(
        stack: InstanceMetadataFilter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.records, 'begin', _lose)
    image_id = str(uuid.uuid4())
    req = webob.Request.blank('/v2/images', method='POST', headers=HEADERS)
    req.content_type = 'application/json'
    req.body = json.dumps({'id': image_id, 'instance_uuid': INSTANCE}).encode()
    response = req.get_response(stack)
    assert response.status_int == 409
    assert 'concurrent request' in response.text
    assert 'already exists' not in response.text
    assert stack.records.get(image_id, 'instance') is None


def test_an_update_the_registry_applied_is_not_a_conflict(
        stack: InstanceMetadataFilter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.records, 'replace', _lose)
    image_id = str(uuid.uuid4())
    req = webob.Request.blank(f'/v2/images/{image_id}', method='PATCH',
                              headers={**HEADERS, 'Content-Type': PATCH})
    req.body = json.dumps([
        {'op': 'replace', 'path': '/name', 'value': 'y'},
        {'op': 'add', 'path': '/instance_uuid', 'value': INSTANCE}]).encode()
    response = req.get_response(stack)
    assert response.status_int == 503
    assert 'registry applied the other changes' in response.text
    assert 'concurrent changes' in response.text


def _deleting_registry(environ: dict[str, Any], start_response: Any) -> Any:
    if environ['REQUEST_METHOD'] == 'DELETE':
        start_response('204 No Content', [])
        return []
    return _registry(environ, start_response)


def test_a_stack_reads_and_marks_a_deleted_image_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every concern's filter needs the record before a delete; they share
    one read, and the one row is marked deleted once."""
    url = f'sqlite:///{tmp_path}/ia.sqlite'
    migration.upgrade(store_engine.get_engine(url))
    conf = cfg.ConfigOpts()
    conf([], project='test')
    paste = {'connection': url}
    stack = EncryptionPropertiesFilter(
        InstanceMetadataFilter(_deleting_registry, paste, conf), paste, conf)
    image_id = str(uuid.uuid4())
    stack.records.begin(image_id, 'p', 'instance',
                        {'instance_uuid': INSTANCE})
    stack.records.commit(image_id, 'instance', 'p', None)
    calls: list[str] = []
    for name in ('snapshot', 'get', 'mark_deleted'):
        original = getattr(Records, name)

        def counting(self: Records, *args: Any, _name: str = name,
                     _original: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Records, name, counting)
    response = webob.Request.blank(f'/v2/images/{image_id}',
                                   method='DELETE',
                                   headers=HEADERS).get_response(stack)
    assert response.status_int == 204
    assert calls == ['snapshot', 'mark_deleted']
    stored = stack.records.get(image_id, 'instance')
    assert stored is not None and stored.state == 'deleted'
    assert stored.values == {'instance_uuid': INSTANCE}
