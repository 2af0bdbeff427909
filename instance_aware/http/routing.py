"""Which registry route a request is for, decided on the normalised path.

Decisions (capture, strip, refuse) must not be dodged by spelling the same
route differently: ``/v2.1/images``, ``//v2//images/``, ``/V2/Images``,
``/v2/%69mages``.  :func:`normalise_path` folds those spellings into one
canonical path before :data:`MAPPER` (a ``routes`` mapper, as Glance uses)
classifies it.  Image ids keep their case: Glance compares them exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import urllib.parse
from collections.abc import Mapping
from typing import Any

import routes

_VERSION = re.compile(r'^v2(\.\d+)?$', re.IGNORECASE)
# Path segments that name routes rather than resources; folded to lower case.
_KEYWORDS = frozenset({
    'images', 'file', 'stage', 'import', 'locations', 'tasks', 'members',
    'tags', 'instance', 'instances', 'schemas', 'image', 'info', 'actions',
    'metadefs', 'cache', 'stores', 'usage', 'import-info', 'stores-detail',
})


def normalise_path(path_info: str) -> str:
    """Canonical form of ``path_info`` used for every routing decision."""
    path = path_info
    # Undo percent-encoding until stable, so %2569 cannot hide a letter.
    for _ in range(3):
        unquoted = urllib.parse.unquote(path)
        if unquoted == path:
            break
        path = unquoted
    segments = [s for s in path.split('/') if s not in ('', '.')]
    if segments and _VERSION.match(segments[0]):
        segments[0] = 'v2'
    segments = [s.lower() if s.lower() in _KEYWORDS else s
                for s in segments]
    return '/' + '/'.join(segments)


MAPPER = routes.Mapper()
_ROUTES: list[tuple[str, str, list[str]]] = [
    ('images', '/v2/images', ['GET', 'HEAD', 'POST']),
    ('image', '/v2/images/{image_id}', ['GET', 'HEAD', 'PATCH', 'DELETE']),
    ('image_file', '/v2/images/{image_id}/file', ['GET', 'HEAD', 'PUT']),
    ('image_stage', '/v2/images/{image_id}/stage', ['PUT', 'DELETE']),
    ('image_import', '/v2/images/{image_id}/import', ['POST']),
    ('image_locations', '/v2/images/{image_id}/locations',
     ['GET', 'HEAD', 'POST']),
    ('image_tasks', '/v2/images/{image_id}/tasks', ['GET', 'HEAD']),
    ('image_instance', '/v2/images/{image_id}/instance', ['GET', 'HEAD']),
    ('instance_images', '/v2/instances/{instance_uuid}/images',
     ['GET', 'HEAD']),
]
for _name, _path, _methods in _ROUTES:
    MAPPER.connect(_name, _path, conditions={'method': _methods})


@dataclasses.dataclass(frozen=True)
class Route:
    """A classified request: the route name (or ``None``) and its params."""

    name: str | None
    path: str
    params: Mapping[str, Any]

    @property
    def image_id(self) -> str | None:
        value = self.params.get('image_id')
        return value if isinstance(value, str) else None


@functools.lru_cache(maxsize=4096)
def match(method: str, path_info: str) -> Route:
    """Classify a request by method and path.

    Every filter of the stack classifies the same request; the answers are
    remembered (a pure function of its arguments, the route is immutable).
    """
    path = normalise_path(path_info)
    found = MAPPER.routematch(path, environ={
        'REQUEST_METHOD': method.upper()})
    if not found:
        return Route(None, path, types.MappingProxyType({}))
    result, route = found
    params = {k: v for k, v in result.items()
              if k not in ('controller', 'action')}
    return Route(route.name, path, types.MappingProxyType(params))
