"""One reading of each request: the request the registry will act on.

The stack decides (capture, strip, refuse) on its own reading of a
request while the registry acts on another's at its peril: a method
override or a body read under another rule than Glance's lets a request
through that the stack never judged.  So every filter takes its decisions
on the :class:`Reading` made here, once per request at the stack's entry
(:func:`of`, cached in the environ):

* **Method.**  Glance's router is routes' ``RoutesMiddleware``, which
  dispatches on ``_method`` from the query string (when the raw query
  contains ``_method``) or, failing that, from a form body of a ``POST``.
  No OpenStack client sends it, so whenever routes would act on one the
  request is refused with 400 (:func:`method_override` mirrors routes'
  detection: same libraries, same order, same decoding).  Otherwise the
  method is ``REQUEST_METHOD``, judged in upper case: routes compares it
  as sent, so Glance refuses ``patch`` (405) where the stack judged the
  request as a ``PATCH``, which fails closed.  It is forwarded as sent.
* **Route.**  :func:`instance_aware.http.routing.match` on the normalised path.
* **Body.**  Read by :class:`instance_aware.http.request.Request` with
  Glance's rules (see there): whatever the ``Content-Type`` for creates
  and imports, only the two JSON-patch media types for updates.
* **Input.**  A ``wsgi.input`` that is an iterable without ``read()``
  (Glance accepts one) is given a file interface, so every reader below,
  the registry included, reads the same bytes; its framing (no length,
  no transfer coding) is left as it is, so Glance's rules read it as
  before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import routes.middleware
import webob
import webob.exc

from instance_aware.http import faults, routing

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

ENVIRON_KEY = 'instance_aware.http.reading'
#: Environ key: the input was only iterable; it ends where it ends (a
#: proxy sends it chunked).
UNFRAMED = 'instance_aware.unframed'
OVERRIDE = '_method'


class Reading:
    """What the registry will act on, as the stack's filters see it."""

    __slots__ = ('method', 'path_info', 'query_string', 'refusal', 'route',
                 'sent')

    def __init__(self, sent: str, path_info: str, query_string: str,
                 refusal: webob.exc.WSGIHTTPException | None) -> None:
        #: ``REQUEST_METHOD`` as sent, and as judged.
        self.sent = sent
        self.method = sent.upper()
        self.path_info = path_info
        self.query_string = query_string
        #: The 4xx answer when the request is refused at the entry.
        self.refusal = refusal
        self.route = routing.match(self.method, path_info)

    def same_source(self, environ: WSGIEnvironment) -> bool:
        return bool(environ.get('REQUEST_METHOD', 'GET') == self.sent
                    and environ.get('PATH_INFO', '') == self.path_info
                    and environ.get('QUERY_STRING', '') == (
                        self.query_string))


def of(environ: WSGIEnvironment) -> Reading:
    """The reading of the request in ``environ``, made once.

    A request the stack rewrites on its way down (a list's query, a
    subrequest) is read again: the cached reading names the method, path
    and query it was made from.
    """
    found = environ.get(ENVIRON_KEY)
    if isinstance(found, Reading) and found.same_source(environ):
        return found
    adapt_input(environ)
    refusal = None
    override = method_override(environ)
    if override is not None:
        refusal = faults.bad_request(
            f"Method override ('{OVERRIDE}' in the query string or a form "
            'body) is not supported: send the request with its own HTTP '
            'method.')
    reading = Reading(environ.get('REQUEST_METHOD', 'GET'),
                      environ.get('PATH_INFO', ''),
                      environ.get('QUERY_STRING', ''), refusal)
    environ[ENVIRON_KEY] = reading
    return reading


def method_override(environ: WSGIEnvironment) -> str | None:
    """The method routes' ``RoutesMiddleware`` would dispatch instead of
    ``REQUEST_METHOD``, or ``None`` when it would not override.

    Routes looks at the query only when the raw query string contains
    ``_method`` (then never at a form body), takes its last value, gives
    up on a query it cannot decode, and acts on any non-empty value.  A
    form body that cannot be parsed at all (an unsupported charset) is
    reported as an override of its own: routes would fail on it.
    """
    value: object
    if OVERRIDE in environ.get('QUERY_STRING', ''):
        try:
            value = webob.Request(environ).GET.get(OVERRIDE)
        except UnicodeDecodeError:
            value = None
    elif environ.get('REQUEST_METHOD') == 'POST' and (
            routes.middleware.is_form_post(environ)):
        try:
            value = webob.Request(environ).POST.get(OVERRIDE)
        except UnicodeDecodeError:
            value = None
        except Exception:  # routes would fail on it too
            return 'unreadable form'
    else:
        return None
    return str(value).upper() if value else None


class IterableInput:
    """A file interface over a ``wsgi.input`` that is only iterable."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b''
        self._done = False

    def _fill(self, size: int | None) -> None:
        while not self._done and (size is None or len(self._buffer) < size):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
            elif chunk:
                self._buffer += bytes(chunk)

    def read(self, size: int | None = -1) -> bytes:
        wanted = None if size is None or size < 0 else size
        self._fill(wanted)
        if wanted is None:
            data, self._buffer = self._buffer, b''
        else:
            data, self._buffer = (self._buffer[:wanted],
                                  self._buffer[wanted:])
        return data

    def readline(self, size: int | None = -1) -> bytes:
        wanted = None if size is None or size < 0 else size
        while b'\n' not in self._buffer and not self._done and (
                wanted is None or len(self._buffer) < wanted):
            self._fill(len(self._buffer) + 1)
        end = self._buffer.find(b'\n') + 1 or len(self._buffer)
        if wanted is not None:
            end = min(end, wanted)
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        close = getattr(self._chunks, 'close', None)
        if close is not None:
            close()


def adapt_input(environ: WSGIEnvironment) -> None:
    """Give an iterable ``wsgi.input`` without ``read()`` a file interface
    (it ends where the iterable ends)."""
    stream = environ.get('wsgi.input')
    if stream is None or hasattr(stream, 'read') or not isinstance(
            stream, Iterable):
        return
    environ['wsgi.input'] = IterableInput(stream)
    # Its framing is left as it was (no ``wsgi.input_terminated``): Glance
    # reads such a body only where it says so itself (image data), and a
    # form parse for routes must find it as unreadable as Glance does.
    environ[UNFRAMED] = True


def refuse(environ: WSGIEnvironment, start_response: Any
           ) -> Iterable[bytes] | None:
    """Answer a request refused at the entry; ``None`` to go on."""
    refusal = of(environ).refusal
    if refusal is None:
        return None
    return refusal(environ, start_response)
