"""Filter ``location_policy``: image locations only for allowed callers.

Glance shows ``locations`` (``show_multiple_locations``) and ``direct_url``
(``show_image_direct_url``) to every reader once they are on, which is why
operators of copy-on-write backends run a second, internal glance-api for
Nova (OSSN-0065, OSSN-0090).  With this filter one API serves both:

* reads: ``locations`` and ``direct_url`` are removed from every image
  representation, and ``loc_url`` from task inputs, unless
  ``instance_aware:get_image_location`` allows the caller for that image's
  owner; ``GET /v2/images/{id}/locations`` needs
  ``instance_aware:fetch_image_location``;
* writes: JSON-patch operations on ``/locations`` need
  ``instance_aware:set_image_location`` (add, replace) or
  ``instance_aware:delete_image_location`` (remove), ``POST
  /v2/images/{id}/locations`` needs ``instance_aware:add_image_location``;
  refusals are 403 and nothing reaches the registry.

It fails closed: every JSON response except image data and schemas is
scrubbed wherever an object carries a location, whatever route produced
it, and error bodies are stripped of store URLs.  Routing decisions use the
normalised path (:mod:`instance_aware.routing`), so ``/v2.1/``, doubled
slashes, escapes and case change nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import webob

from instance_aware import capture, errors, routing
from instance_aware.filters import base
from instance_aware.request import PATCH_V20, PATCH_V21, Request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

READ = 'instance_aware:get_image_location'
FETCH = 'instance_aware:fetch_image_location'
SET = 'instance_aware:set_image_location'
DELETE = 'instance_aware:delete_image_location'
ADD = 'instance_aware:add_image_location'

#: Keys that carry a location, wherever they appear.
LOCATION_KEYS = ('locations', 'direct_url')
#: Routes whose bodies are image data: never read, never scrubbed.
DATA_ROUTES = frozenset({'image_file', 'image_stage'})
_MARKERS = (b'locations', b'direct_url', b'loc_url')
#: Store URLs that may appear in error messages.
_STORE_URL = re.compile(
    r'\b(?:file|rbd|swift(?:\+(?:https?|config))?|cinder|s3(?:\+https?)?'
    r'|vsphere|sheepdog)://[^\s"\'<>]+', re.IGNORECASE)
_REDACTED = '<location hidden>'


class LocationPolicyFilter(base.Filter):
    """Hide and guard image locations according to policy."""

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        route = routing.match(environ.get('REQUEST_METHOD', 'GET'),
                              environ.get('PATH_INFO', ''))
        if route.name in DATA_ROUTES:
            return self.application(environ, start_response)
        environ['instance_aware.route'] = route
        return self._handle(environ, start_response)

    # -- writes ------------------------------------------------------------

    def process_request(self, req: Request) -> webob.Response | None:
        name, method = req.route.name, req.method
        if name == 'image_locations' and method in ('GET', 'HEAD'):
            self._require(req, FETCH, 'list the locations of')
        elif name == 'image_locations' and method == 'POST':
            self._require(req, ADD, 'add locations to')
        elif name == 'image' and method == 'PATCH':
            for rule in self._patch_rules(req):
                self._require(req, rule, 'change the locations of')
        elif name == 'images' and method == 'POST' and req.has_json_body:
            body = req.read_json(self.config.max_json_body_size)
            if isinstance(body, dict) and any(k in body
                                              for k in LOCATION_KEYS):
                self._require(req, SET, 'set the locations of',
                              lookup_owner=False)
        return None

    def _patch_rules(self, req: Request) -> set[str]:
        if req.content_type not in (PATCH_V20, PATCH_V21):
            return set()
        document = req.read_json(self.config.max_json_body_size)
        if not isinstance(document, list):
            return set()
        rules: set[str] = set()
        for raw in document:
            op, pointer = _op_and_path(raw, req.content_type)
            path = capture.decode_pointer(pointer)
            if path and path[0] == 'locations':
                rules.add(DELETE if op == 'remove' else SET)
        return rules

    def _require(self, req: Request, rule: str, action: str,
                 lookup_owner: bool = True) -> None:
        """Refuse with 403 unless ``rule`` allows the caller.

        Rules that allow the caller whatever the owner (the defaults:
        administrators and services) need no lookup; otherwise the image
        is shown as the caller to find its owner.
        """
        if self.allowed(req, rule, None):
            return
        if lookup_owner and req.route.image_id is not None:
            shown = self.subrequest(req, 'GET',
                                    f'/v2/images/{req.route.image_id}')
            if shown.status_int != 200:
                raise errors.not_found(
                    f'No image found with ID {req.route.image_id}')
            document = _loads(shown)
            owner = document.get('owner') if isinstance(document,
                                                        dict) else None
            if isinstance(owner, str) and self.allowed(req, rule, owner):
                return
        raise errors.forbidden(
            f'You are not authorized to {action} this image.')

    # -- reads -------------------------------------------------------------

    def process_response(self, response: webob.Response,
                         request: Request) -> webob.Response:
        if request.route.path.startswith('/v2/schemas'):
            return response
        if response.status_int >= 400:
            return self._scrub_error(response, request)
        if 'json' not in (response.content_type or ''):
            return response
        body = response.body
        if not any(marker in body for marker in _MARKERS):
            return response
        try:
            document = json.loads(body)
        except ValueError:
            return response
        if self._scrub(request, document, {}):
            response.body = json.dumps(document,
                                       ensure_ascii=False).encode('utf-8')
        return response

    def _readable(self, req: Request, owner: Any,
                  cache: dict[Any, bool]) -> bool:
        key = owner if isinstance(owner, str) else None
        if key not in cache:
            cache[key] = self.allowed(req, READ, key)
        return cache[key]

    def _scrub(self, req: Request, node: Any, cache: dict[Any, bool]
               ) -> bool:
        """Remove locations the caller may not see; ``True`` if changed."""
        changed = False
        if isinstance(node, list):
            for item in node:
                changed = self._scrub(req, item, cache) or changed
            return changed
        if not isinstance(node, dict):
            return False
        if any(k in node for k in LOCATION_KEYS) and not self._readable(
                req, node.get('owner'), cache):
            for key in LOCATION_KEYS:
                if key in node:
                    del node[key]
                    changed = True
        task_input = node.get('input')
        if isinstance(task_input, dict) and 'loc_url' in task_input and (
                not self._readable(req, node.get('owner'), cache)):
            del task_input['loc_url']
            changed = True
        for value in node.values():
            changed = self._scrub(req, value, cache) or changed
        return changed

    def _scrub_error(self, response: webob.Response,
                     req: Request) -> webob.Response:
        if req.method == 'HEAD' or self.allowed(req, READ, None):
            return response
        text = response.body.decode('utf-8', 'replace')
        redacted = _STORE_URL.sub(_REDACTED, text)
        if redacted != text:
            response.body = redacted.encode('utf-8')
        return response


def _op_and_path(raw: Any, media_type: str) -> tuple[str | None, Any]:
    if not isinstance(raw, dict):
        return None, None
    if media_type == PATCH_V21:
        return raw.get('op'), raw.get('path')
    for op in capture.OPERATIONS:
        if op in raw:
            return op, raw[op]
    return None, None


def _loads(response: webob.Response) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        return None
