"""JSON response bodies handed from filter to filter as parsed documents.

Every JSON filter of the stack changes the registry's image documents
(gives keys back, strips them, scrubs locations).  Parsing and re-encoding
the body in each of them cost more than the changes themselves (a list of
25 images is parsed and written three times).  Instead, a filter that
read a document leaves it parsed in the response (:class:`JSONBody` as
the ``app_iter``); the filter above it in the stack, which called it
directly (:meth:`instance_aware.filters.base.Filter.forward`), takes it
as it is, and the outermost one writes it once, with its
``Content-Length``.  A document no filter changed is sent as the bytes
the registry wrote, byte for byte what bare Glance answers.

Nothing depends on the hand-over happening: a :class:`JSONBody` is a
normal WSGI iterable that encodes itself when iterated, so a foreign
middleware between two of our filters (or ``response.body``) just sees
bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import webob

from instance_aware.http import codec

JSON_TYPE = 'application/json'


class JSONBody:
    """A response body still held as a parsed JSON document.

    ``raw`` are the registry's own bytes of it while no filter changed it:
    they are what is sent then (byte for byte what bare Glance sends, and
    nothing to encode).
    """

    __slots__ = ('document', 'raw')

    def __init__(self, document: Any, raw: bytes | None = None) -> None:
        self.document = document
        self.raw = raw

    def encode(self) -> bytes:
        return self.raw if self.raw is not None else codec.dumps(
            self.document)

    def __iter__(self) -> Iterator[bytes]:
        yield self.encode()


def read(response: webob.Response) -> Any:
    """The JSON document of ``response``, or ``None`` if it has none.

    The document a filter below left parsed is returned as is (the same
    object: changing it changes the response); otherwise the body is
    parsed.
    """
    body = response.app_iter
    if isinstance(body, JSONBody):
        return body.document
    if response.content_type != JSON_TYPE:
        return None
    try:
        return codec.loads(response.body)
    except (ValueError, RecursionError):
        return None


def write(response: webob.Response, document: Any,
          changed: bool = True) -> None:
    """Make ``document``, just read from ``response``, its body (encoded
    later, if at all).

    ``changed=False`` says the filter left the document as it read it:
    the response then keeps the bytes it came with, and hands them up
    with the parsed document so the next filter does not parse again.
    """
    body = response.app_iter
    if isinstance(body, JSONBody):
        if body.document is document:
            if changed:
                body.raw = None
            return
        changed = True  # another document than the one handed up
    raw = None if changed else response.body
    response.app_iter = JSONBody(document, raw)  # drops Content-Length


def finish(response: webob.Response) -> webob.Response:
    """Encode a body still held as a document (sets ``Content-Length``)."""
    body = response.app_iter
    if isinstance(body, JSONBody):
        response.body = body.encode()
    return response


def json_response(document: Any) -> webob.Response:
    """A 200 response of ``document``, written as the registry writes
    JSON (``application/json`` without a charset)."""
    response = webob.Response(status=200)
    response.content_type = JSON_TYPE
    response.charset = None
    response.body = codec.dumps(document)
    return response
