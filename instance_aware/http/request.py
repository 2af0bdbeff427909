"""The request object every filter sees.

A :class:`webob.Request` with named accessors instead of raw environ
reads: the caller's context, the request's one reading (method and route,
see :mod:`instance_aware.http.reading`), its query, and its JSON body read
exactly as Glance's deserializer reads it (:meth:`Request.json_body`).
Image data bodies are never read.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import webob
from oslo_context import context as oslo_context

from instance_aware.http import codec, faults, reading, routing
from instance_aware.policies import context

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

PATCH_V21 = 'application/openstack-images-v2.1-json-patch'
PATCH_V20 = 'application/openstack-images-v2.0-json-patch'
PATCH_TYPES = (PATCH_V20, PATCH_V21)
#: Glance's ``JSONRequestDeserializer``: a body is read to its end when
#: one of these transfer codings is named on a method that may have one.
_BODY_CODINGS = frozenset({'chunked', 'compress', 'deflate', 'gzip',
                           'identity'})
_BODY_METHODS = frozenset({'POST', 'PUT', 'PATCH'})
#: Environ key: the parsed body, with the input stream it was read from.
BODY_KEY = 'instance_aware.body'


def declared_length(environ: WSGIEnvironment) -> int | None:
    """The body length the client declared, straight from the environ
    (no webob object on the image data path): ``None`` for a chunked body
    or a missing or malformed ``Content-Length``."""
    if 'chunked' in str(environ.get('HTTP_TRANSFER_ENCODING', '')).lower():
        return None
    raw = str(environ.get('CONTENT_LENGTH') or '').strip()
    return int(raw) if raw.isdigit() else None


class Request(webob.Request):
    """A registry request as the filters see it."""

    @functools.cached_property
    def context(self) -> oslo_context.RequestContext:
        return context.from_environ(self.environ)

    @property
    def reading(self) -> reading.Reading:
        """The request's one reading (made once, at the stack's entry)."""
        return reading.of(self.environ)

    @property
    def route(self) -> routing.Route:
        return self.reading.route

    @property
    def verb(self) -> str:
        """The method the registry dispatches on, in upper case
        (overrides are refused at the entry)."""
        return self.reading.method

    @property
    def service_token(self) -> bool:
        """Whether a service token came with the caller's token."""
        return bool(self.context.service_roles)

    def query(self) -> list[tuple[str, str]]:
        """The query parameters, in order; 400 when they are not UTF-8
        (Glance's answer on the routes that read them)."""
        try:
            return list(self.GET.items())
        except UnicodeDecodeError:
            raise faults.bad_request(
                'Error decoding your request: the query string is not '
                'valid UTF-8.') from None

    @property
    def patch_media_type(self) -> str | None:
        """The JSON-patch media type, compared as Glance compares it
        (``Content-Type`` up to its first ``;``, exactly); ``None`` when
        Glance refuses the update with 415."""
        media_type = self.content_type
        return media_type if media_type in PATCH_TYPES else None

    def has_glance_body(self) -> bool:
        """Whether Glance's deserializer reads a body from this request."""
        coding = self.environ.get('HTTP_TRANSFER_ENCODING', '').lower()
        if coding in _BODY_CODINGS and self.verb in _BODY_METHODS:
            return True
        length = self.content_length
        return length is not None and length > 0

    def json_body(self, limit: int) -> Any:
        """The JSON document Glance reads from this request's body, or
        ``None`` when it reads none.

        Glance reads a create or import body as JSON whatever its
        ``Content-Type``, an update's only with a JSON-patch media type.
        The document is parsed once for every filter; a filter that sends
        another one downstream (:meth:`replace_json`) replaces it.
        """
        if self.verb == 'PATCH' and self.patch_media_type is None:
            return None
        stream = self.environ.get('wsgi.input')
        found = self.environ.get(BODY_KEY)
        if found is not None and found[0] is stream:
            return found[1]
        if not self.has_glance_body():
            return None
        document = self.read_json(limit)
        if not isinstance(document, (dict, list)):
            raise faults.bad_request(
                'Unexpected body type. Expected list/dict.')
        self.environ[BODY_KEY] = (self.environ.get('wsgi.input'), document)
        return document

    def read_json(self, limit: int) -> Any:
        """Parse the body as UTF-8 JSON, refusing more than ``limit``
        bytes.

        The body is read once (chunked bodies included) and put back, so
        the next application reads exactly the same bytes.
        """
        length = self.content_length
        if length is not None and length > limit:
            raise faults.too_large(
                f'Request body of {length} bytes exceeds the limit of '
                f'{limit} bytes.')
        stream: Any = self.body_file_raw
        if self.is_body_seekable:
            stream.seek(0)  # read before (a form parsed for routes)
        data = stream.read(limit + 1 if length is None else length)
        if len(data) > limit:
            raise faults.too_large(
                f'Request body exceeds the limit of {limit} bytes.')
        self._set_body(data)
        try:
            # Strictly UTF-8, as Glance decodes it (never UTF-16 or -32).
            return codec.loads(data.decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as exc:
            raise faults.bad_request(
                f'Malformed JSON in request body: {exc}') from exc
        except RecursionError:
            raise faults.bad_request(
                'Malformed JSON in request body: nested too deeply.'
            ) from None

    def replace_json(self, document: Any) -> None:
        """Send ``document`` downstream in place of the original body."""
        self._set_body(codec.dumps(document))
        self.environ[BODY_KEY] = (self.environ.get('wsgi.input'), document)

    def _set_body(self, data: bytes) -> None:
        self.environ.pop('HTTP_TRANSFER_ENCODING', None)
        self.body = data
