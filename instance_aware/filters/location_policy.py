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
  ``instance_aware:delete_image_location`` (remove, and ``DELETE
  /v2/stores/{store}/{id}``), ``POST /v2/images/{id}/locations`` needs
  ``instance_aware:add_image_location``; refusals are 403 and nothing
  reaches the registry.

It fails closed: every response except image data and schemas is scrubbed
wherever an object carries a location (a ``loc_url`` too), whatever route
produced it and whatever its media type, and error bodies are stripped of
store URLs and location values.  Routing decisions use the normalised path
(:mod:`instance_aware.http.routing`), so ``/v2.1/``, doubled slashes, escapes
and case change nothing; JSON pointers are decoded as Glance decodes them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import webob

from instance_aware.capture import bodies
from instance_aware.filters import base
from instance_aware.http import codec, documents, faults, reading
from instance_aware.http.request import Request
from instance_aware.policies.checks import Check, Checks

#: The named checks of each location operation (called with the stack's
#: :class:`~instance_aware.policies.checks.Checks`).
READ = Checks.get_image_location
FETCH = Checks.fetch_image_location
SET = Checks.set_image_location
DELETE = Checks.delete_image_location
ADD = Checks.add_image_location

#: Keys that carry a location, wherever they appear.
LOCATION_KEYS = ('locations', 'direct_url')
#: Every key removed for callers who may not see locations (``loc_url``:
#: the input of ``location_import`` tasks).
HIDDEN_KEYS = (*LOCATION_KEYS, 'loc_url')
#: Routes whose bodies are image data: never read, never scrubbed.
DATA_ROUTES = frozenset({'image_file', 'image_stage'})
#: Bodies without any of these cannot carry a hidden key (``\\u``: a key
#: spelled with JSON escapes).
_MARKERS = (b'locations', b'direct_url', b'loc_url', b'\\u')
#: ``DELETE /v2/stores/{store_id}/{image_id}`` removes a location.
_STORE_DELETE = re.compile(r'^/v2/stores/[^/]+/(?P<image_id>[^/]+)$')
#: Store URLs that may appear in error messages.
_STORE_URL = re.compile(
    r'\b(?:file|filesystem|rbd|swift(?:\+(?:https?|config))?|cinder'
    r'|s3(?:\+https?)?|vsphere|sheepdog)://[^\s"\'<>\\]+',
    re.IGNORECASE)
#: A quote as Python, JSON or an HTML error page writes it.
_QUOTE = r"""(?:\\?['"]|&\#x27;|&\#39;|&quot;)"""
#: A location value in a message (Glance quotes location dicts, whatever
#: their scheme: ``'url': 'http://...'``).
_LOCATION_VALUE = re.compile(
    rf'(?P<key>{_QUOTE}(?:url|loc_url|direct_url){_QUOTE}\s*:\s*'
    rf'(?P<quote>{_QUOTE}))(?:(?!(?P=quote)).)*', re.IGNORECASE)
_REDACTED = '[location hidden]'


class LocationPolicyFilter(base.Filter):
    """Hide and guard image locations according to policy."""

    def handles(self, environ: dict[str, Any]) -> bool:
        # Everything but image data: locations can appear anywhere.
        return reading.of(environ).route.name not in DATA_ROUTES

    # -- writes ------------------------------------------------------------

    def process_request(self, req: Request) -> webob.Response | None:
        name, method = req.route.name, req.verb
        if name == 'image_locations' and method in ('GET', 'HEAD'):
            return self._require(req, FETCH, 'list the locations of')
        if name == 'image_locations' and method == 'POST':
            return self._require(req, ADD, 'add locations to')
        if name == 'image' and method == 'PATCH':
            for rule in sorted(self._patch_rules(req),
                               key=lambda check: check.__name__):
                refused = self._require(req, rule, 'change the locations of')
                if refused is not None:
                    return refused
        elif name == 'images' and method == 'POST':
            body = self._read_json(req)  # whatever its Content-Type
            if isinstance(body, dict) and any(k in body
                                              for k in LOCATION_KEYS):
                return self._require(req, SET, 'set the locations of',
                                     lookup_owner=False)
        elif name is None and method == 'DELETE':
            found = _STORE_DELETE.match(req.route.path)
            if found:
                return self._require(req, DELETE, 'delete the locations of',
                                     image_id=found['image_id'])
        return None

    def _read_json(self, req: Request) -> Any:
        try:
            return req.json_body(self.config.max_json_body_size)
        except RecursionError as exc:
            raise faults.bad_request(
                'Malformed JSON in request body: nested too deeply.'
            ) from exc

    def _patch_rules(self, req: Request) -> set[Check]:
        """The rules a JSON-patch document needs, decoded as Glance does.

        A pointer that is not a string is refused with 400 here: Glance
        would fail on it with a 500.
        """
        media_type = req.patch_media_type
        if media_type is None:
            return set()  # Glance refuses it with 415
        document = self._read_json(req)
        if not isinstance(document, list):
            return set()
        rules: set[Check] = set()
        for raw in document:
            op, pointer = bodies.op_and_pointer(raw, media_type)
            if op is None or pointer is bodies.MISSING:
                continue
            if not isinstance(pointer, str):
                raise faults.bad_request(
                    f'Pointer `{json.dumps(pointer)}` is not a string.')
            path = bodies.decode_pointer(pointer)
            if path and path[0] == 'locations':
                rules.add(DELETE if op == 'remove' else SET)
        return rules

    def _require(self, req: Request, rule: Check, action: str,
                 lookup_owner: bool = True,
                 image_id: str | None = None) -> webob.Response | None:
        """``None`` if ``rule`` allows the caller, else refuse with 403.

        Rules that allow the caller whatever the owner (the defaults:
        administrators and services) need no lookup; otherwise the image
        is shown as the caller to find its owner, and a caller who cannot
        see it gets the registry's own answer (404, or 401 when
        anonymous).
        """
        if rule(self.checks, req.context, None):
            return None
        image_id = image_id or req.route.image_id
        if lookup_owner and image_id is not None:
            shown = self.show_image(req, image_id)
            if shown.status_int != 200:
                return shown if shown.status_int in (401, 404) else (
                    faults.not_found(f'No image found with ID {image_id}'))
            document = _loads(shown)
            owner = document.get('owner') if isinstance(document,
                                                        dict) else None
            if isinstance(owner, str) and rule(self.checks, req.context,
                                                owner):
                return None
        raise faults.forbidden(
            f'You are not authorized to {action} this image.')

    # -- reads -------------------------------------------------------------

    def process_response(self, response: webob.Response,
                         request: Request) -> webob.Response:
        """Scrub JSON structurally; redact text (errors, non-JSON)."""
        failed = response.status_int >= 400
        path = request.route.path
        if not failed and (path == '/v2/schemas'
                           or path.startswith('/v2/schemas/')):
            return response
        if not failed and isinstance(response.app_iter, documents.JSONBody):
            # Handed over parsed by a filter below: scrub it in place.
            document = response.app_iter.document
            documents.write(response, document, changed=self._scrub(
                request, document, None, {}))
            return response
        body = response.body
        marked = any(marker in body for marker in _MARKERS)
        if not (marked or failed):
            return response
        document = _parse(body) if marked else _NOT_JSON
        scrubbed = body
        if document is not _NOT_JSON and self._scrub(request, document,
                                                      None, {}):
            scrubbed = codec.dumps(document)
        if (failed or document is _NOT_JSON) and not (
                request.verb == 'HEAD'
                or self.checks.get_image_location(request.context, None)):
            scrubbed = _redact(scrubbed)
        if scrubbed != body:
            response.body = scrubbed
        return response

    def _readable(self, req: Request, owner: Any,
                  cache: dict[Any, bool]) -> bool:
        key = owner if isinstance(owner, str) else None
        if key not in cache:
            cache[key] = self.checks.get_image_location(req.context, key)
        return cache[key]

    def _scrub(self, req: Request, node: Any, owner: Any,
               cache: dict[Any, bool]) -> bool:
        """Remove locations the caller may not see; ``True`` if changed.

        An object's owner is its own ``owner``, else its container's (a
        task's ``input`` belongs to the task's owner).
        """
        changed = False
        if isinstance(node, list):
            for item in node:
                if isinstance(item, (dict, list)):
                    changed = self._scrub(req, item, owner, cache) or changed
            return changed
        if not isinstance(node, dict):
            return False
        owner = node.get('owner', owner)
        hidden = [key for key in HIDDEN_KEYS if key in node]
        if hidden and not self._readable(req, owner, cache):
            for key in hidden:
                del node[key]
            changed = True
        for value in node.values():
            if isinstance(value, (dict, list)):
                changed = self._scrub(req, value, owner, cache) or changed
        return changed


#: What :func:`_parse` answers for a body that is not JSON.
_NOT_JSON = object()


def _parse(body: bytes) -> Any:
    try:
        return codec.loads(body)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _redact(body: bytes) -> bytes:
    """``body`` with location values and store URLs redacted."""
    text = body.decode('utf-8', 'replace')
    redacted = _STORE_URL.sub(
        _REDACTED, _LOCATION_VALUE.sub(rf'\g<key>{_REDACTED}', text))
    return body if redacted == text else redacted.encode('utf-8')


def _loads(response: webob.Response) -> Any:
    try:
        return codec.loads(response.body)
    except ValueError:
        return None
