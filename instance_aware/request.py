"""The request object every filter sees.

A :class:`webob.Request` with named accessors instead of raw environ reads:
the caller's context, the classified route, and bounded JSON body access.
Image data bodies are never read: only bodies whose media type is JSON are.
"""

from __future__ import annotations

import functools
from typing import Any

import webob
from oslo_context import context as oslo_context

from instance_aware import codec, context, errors, routing

JSON_TYPES = frozenset({
    'application/json',
    'application/openstack-images-v2.1-json-patch',
    'application/openstack-images-v2.0-json-patch',
})
PATCH_V21 = 'application/openstack-images-v2.1-json-patch'
PATCH_V20 = 'application/openstack-images-v2.0-json-patch'


class Request(webob.Request):
    """A registry request as the filters see it."""

    @functools.cached_property
    def context(self) -> oslo_context.RequestContext:
        return context.from_environ(self.environ)

    @functools.cached_property
    def route(self) -> routing.Route:
        # Remembered by routing.match itself, for every filter at once.
        return routing.match(self.method, self.path_info)

    @property
    def has_json_body(self) -> bool:
        return self.content_type in JSON_TYPES

    def read_json(self, limit: int) -> Any:
        """Parse the JSON body, refusing more than ``limit`` bytes.

        The body is read once (chunked bodies included) and put back, so
        the next application reads exactly the same bytes.
        """
        length = self.content_length
        if length is not None and length > limit:
            raise errors.too_large(
                f'Request body of {length} bytes exceeds the limit of '
                f'{limit} bytes.')
        data = self.body_file_raw.read(
            limit + 1 if length is None else length)
        if len(data) > limit:
            raise errors.too_large(
                f'Request body exceeds the limit of {limit} bytes.')
        self._set_body(data)
        try:
            return codec.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.bad_request(
                f'Malformed JSON in request body: {exc}') from exc
        except RecursionError:
            raise errors.bad_request(
                'Malformed JSON in request body: nested too deeply.'
            ) from None

    def replace_json(self, document: Any) -> None:
        """Send ``document`` downstream in place of the original body."""
        self._set_body(codec.dumps(document))

    def _set_body(self, data: bytes) -> None:
        self.environ.pop('HTTP_TRANSFER_ENCODING', None)
        self.body = data
