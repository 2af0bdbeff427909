"""Instance query API: which images came from an instance.

``GET /v2/instances/{instance_uuid}/images``
    Images related to the instance, newest first.  Query parameters:
    ``image_type``, ``backup_type``, ``installation`` (Nova installation
    UUID), ``include_deleted`` (history of deleted images), ``limit``
    (default 25, at most 1000), ``marker`` (image id of the last entry of
    the previous page) and, for administrators, ``all_projects``.
    Policy ``instance_aware:list_instance_images``; always limited to the
    caller's project unless ``all_projects`` is given by an administrator.
``GET /v2/images/{image_id}/instance``
    The relation of one image (deleted images included), for callers
    allowed by ``instance_aware:get_instance_metadata`` on its owner;
    everybody else gets 404, as for an image they cannot see.
"""

from __future__ import annotations

import datetime
import urllib.parse
from typing import Any

import webob
from oslo_utils import strutils

from instance_aware import uuids
from instance_aware.http import documents, faults
from instance_aware.http.request import Request
from instance_aware.policies.checks import Checks
from instance_aware.store.answers import Related
from instance_aware.store.relations import Relations

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
_PARAMS = frozenset({'image_type', 'backup_type', 'installation',
                     'include_deleted', 'limit', 'marker', 'all_projects'})


def handle(store: Relations, checks: Checks,
           req: Request) -> webob.Response:
    """Serve one query API request from ``store``, allowed by
    ``checks``."""
    if req.route.name == 'image_instance':
        return _one(store, checks, req)
    return _list(store, checks, req)


def _isotime(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.strftime('%Y-%m-%dT%H:%M:%SZ')


def entry(related: Related) -> dict[str, Any]:
    """The representation of one related image."""
    relation = related.relation
    return {
        'image_id': related.image_id,
        'instance_uuid': relation.instance_uuid,
        'installation_uuid': relation.installation_uuid,
        'image_type': relation.image_type,
        'backup_type': relation.backup_type,
        'properties': related.properties,
        'trusted': relation.trusted,
        'owner': related.project_id,
        'status': related.state,
        'created_at': _isotime(related.created_at),
        'deleted_at': _isotime(related.deleted_at),
        'registry_id': related.registry_id,
    }


def _uuid(name: str, value: str) -> str:
    if not uuids.is_uuid(value):
        raise faults.bad_request(f"Invalid {name} '{value}': not a UUID.")
    return uuids.canonical(value)


def _bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    try:
        return strutils.bool_from_string(value, strict=True)
    except ValueError:
        raise faults.bad_request(
            f"Invalid value '{value}' for '{name}': expected true or "
            'false.') from None


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_LIMIT:
        raise faults.bad_request(
            f"Invalid limit '{value}': expected an integer from 1 to "
            f'{MAX_LIMIT}.')
    return limit


def _list(store: Relations, checks: Checks,
          req: Request) -> webob.Response:
    instance_uuid = _uuid('instance UUID', req.route.params['instance_uuid'])
    params = dict(req.query())
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise faults.bad_request(
            f"Unknown query parameter(s): {', '.join(unknown)}.")
    project = req.context.project_id
    if not checks.list_instance_images(req.context, project):
        raise faults.forbidden(
            'You are not allowed to list the images of instances.')
    projects: list[str] | None = [project] if project else []
    if _bool('all_projects', params.get('all_projects')):
        if not checks.is_admin(req.context, project):
            raise faults.forbidden('Only administrators may use '
                                   'all_projects.')
        projects = None
    installation = params.get('installation')
    limit = _limit(params.get('limit'))
    try:
        found = store.of_instance(
            instance_uuid, projects,
            image_type=params.get('image_type'),
            backup_type=params.get('backup_type'),
            installation_uuid=(_uuid('installation', installation)
                               if installation else None),
            include_deleted=_bool('include_deleted',
                                  params.get('include_deleted')),
            limit=limit, marker=params.get('marker'))
    except LookupError:
        raise faults.bad_request(
            f"Marker '{params.get('marker')}' not found.") from None
    base = f'/v2/instances/{instance_uuid}/images'
    params.pop('marker', None)
    query = urllib.parse.urlencode(params)
    document: dict[str, Any] = {
        'images': [entry(r) for r in found],
        'first': base + (f'?{query}' if query else ''),
    }
    if len(found) == limit:
        params['marker'] = found[-1].image_id
        document['next'] = f'{base}?{urllib.parse.urlencode(params)}'
    return documents.json_response(document)


def _one(store: Relations, checks: Checks,
         req: Request) -> webob.Response:
    image_id = req.route.image_id
    assert image_id is not None
    related = store.related(image_id)
    if related is None or not checks.get_instance_metadata(
            req.context, related.project_id):
        raise faults.not_found(
            f'No instance relation found for image {image_id}.')
    return documents.json_response(entry(related))
