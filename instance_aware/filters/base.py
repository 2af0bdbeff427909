"""The base of every instance-aware filter.

Shaped like :class:`oslo_middleware.base.ConfigurableMiddleware`: a paste
``factory`` classmethod, and subclasses that implement
:meth:`~Filter.process_request` (return a response to stop, ``None`` to go
on) and :meth:`~Filter.process_response`.  The base adds:

* options are read through :class:`instance_aware.config.FilterConfig`, so
  paste keys override ``[instance_aware]`` for this filter only;
* :meth:`~Filter.handles`: a request this filter does not act on (image
  data above all) is handed to the next application untouched, with no
  webob request or response built, so uploads and downloads stream at
  full speed;
* one way through the filters of a stack.  A filter reaches the next
  application through :meth:`~Filter.forward`.  When that application is
  itself a :class:`Filter` (as :func:`~instance_aware.filters.stack.compose`
  and a paste pipeline of our filters leave it), ``forward`` calls its
  :meth:`~Filter.respond` with the same request object and gets a response
  object back: no WSGI round trip, and a JSON document one filter parsed
  reaches the next still parsed (:mod:`instance_aware.http.documents`).
  Any other application is called through WSGI and answers bytes.  The
  WSGI call (``__call__``) is the same :meth:`~Filter.respond` served, its
  document encoded once, by the outermost filter.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import webob
import webob.exc
from oslo_config import cfg
from oslo_log import log as logging

from instance_aware import config, database
from instance_aware.http import codec, documents, faults, reading
from instance_aware.http.request import Request
from instance_aware.policies.checks import Checks
from instance_aware.store import engine as store_engine
from instance_aware.store import errors as store_errors
from instance_aware.store.records import Records

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

LOG = logging.getLogger(__name__)

_BODY_HEADERS = frozenset({'HTTP_CONTENT_LENGTH', 'HTTP_CONTENT_TYPE',
                           'HTTP_TRANSFER_ENCODING', 'HTTP_EXPECT'})


class Filter:
    """A filter in the instance-aware stack."""

    #: Route names (see :mod:`instance_aware.http.routing`) this filter
    #: acts on; every other request passes straight through.
    ROUTES: ClassVar[frozenset[str | None]] = frozenset()

    @classmethod
    def factory(cls, global_conf: dict[str, Any] | None,
                **local_conf: Any
                ) -> Callable[[WSGIApplication], WSGIApplication]:
        """Paste filter factory: paste keys override ``[instance_aware]``."""
        paste = {**(global_conf or {}), **local_conf}

        def _factory(app: WSGIApplication) -> WSGIApplication:
            return cls(app, paste)

        return _factory

    def __init__(self, application: WSGIApplication,
                 conf: config.Paste | None = None,
                 oslo_conf: cfg.ConfigOpts | None = None) -> None:
        """``conf``: the paste keys; ``oslo_conf``: the service's
        configuration (default the global one), also oslo.policy's."""
        self.application = application
        self.oslo_conf = oslo_conf if oslo_conf is not None else cfg.CONF
        self.config = config.FilterConfig.load(self.oslo_conf, conf)

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        """WSGI: :meth:`respond` served, with the request this filter does
        not act on passed on untouched (no webob objects built)."""
        # The first filter of ours to see the request reads it (see
        # :mod:`instance_aware.http.reading`) and refuses what must not pass.
        refusal = reading.of(environ).refusal
        if refusal is not None:
            return refusal(environ, start_response)
        if not self.handles(environ):
            return self.application(environ, start_response)
        response = self._process(Request(environ))
        # Whoever called us through WSGI gets bytes.
        return documents.finish(response)(environ, start_response)

    def handles(self, environ: WSGIEnvironment) -> bool:
        """Whether this filter acts on the request (by default: its route
        is in :attr:`ROUTES`); anything else passes through untouched."""
        return reading.of(environ).route.name in self.ROUTES

    def respond(self, req: Request) -> webob.Response:
        """This filter's answer to ``req`` as a response object: the way in
        from the filter above (:meth:`forward`) and, served, from WSGI.
        A JSON document is left parsed for the caller."""
        refusal = req.reading.refusal
        if refusal is not None:
            return refusal
        if not self.handles(req.environ):
            return self.forward(req)
        return self._process(req)

    def _process(self, req: Request) -> webob.Response:
        """``process_request``, ``forward``, ``process_response``; store
        faults and refusals become error responses."""
        try:
            response = self.process_request(req)
            if response is None:
                response = self.process_response(self.forward(req), req)
        except webob.exc.WSGIHTTPException as exc:
            return exc
        except store_errors.Conflict as exc:
            LOG.warning('Mapping database conflict for %s %s: %s',
                        req.method, req.path, exc)
            return faults.conflict(
                'A concurrent request changed the instance-aware record '
                'of the same image.  Retry the request.')
        except store_errors.StoreUnavailable as exc:
            LOG.error('Mapping database unavailable for %s %s: %s',
                      req.method, req.path, exc)
            return faults.unavailable(
                'The instance-aware mapping database is unavailable; '
                'nothing was changed.  Retry later.')
        return response

    def forward(self, req: webob.Request) -> webob.Response:
        """Pass ``req`` on to the next application and return its answer:
        the way out.

        A next application that is a :class:`Filter` is called directly
        (:meth:`respond`, same request object, a JSON document may come
        back parsed); any other through WSGI.
        """
        following = self.application
        if not isinstance(following, Filter):
            return req.get_response(following)
        if not isinstance(req, Request):
            req = Request(req.environ)
        response = following.respond(req)
        if isinstance(response, webob.exc.WSGIHTTPException):
            # Rendered as its WSGI call would be (body per Accept), so
            # this filter sees the same error body either way.
            response = req.get_response(response)
        return response

    @functools.cached_property
    def database(self) -> store_engine.Database:
        """The mapping database (engine shared per process and URL)."""
        return database.open_database(self.config)

    @functools.cached_property
    def records(self) -> Records:
        """Captured properties of this registry's images."""
        return Records(self.database, self.config.registry_id)

    def subrequest(self, req: Request, method: str, path: str,
                   body: Any = None,
                   content_type: str | None = None) -> webob.Response:
        """Ask the next application something as the same caller.

        Only the identity travels: the caller's headers (for a remote
        registry) and the registry's own per-request attributes (Glance's
        context, when the stack runs inside its pipeline).
        """
        environ = {k: v for k, v in req.environ.items()
                   if k.startswith('HTTP_') and k not in _BODY_HEADERS}
        for key in ('SCRIPT_NAME', 'SERVER_NAME', 'SERVER_PORT',
                    'wsgi.url_scheme', 'REMOTE_ADDR'):
            if key in req.environ:
                environ[key] = req.environ[key]
        if 'webob.adhoc_attrs' in req.environ:
            environ['webob.adhoc_attrs'] = dict(
                req.environ['webob.adhoc_attrs'])
        sub = Request.blank(path, environ=environ, method=method)
        if body is not None:
            sub.body = codec.dumps(body)
            sub.content_type = content_type or 'application/json'
        response = sub.get_response(self.application)
        # Read whole, which closes the body: a subrequest's answer is a
        # small document, and one left open would hold what the
        # application below keeps for it (the standalone proxy's upstream
        # connection and transfer slot) until it is garbage collected.
        response.body  # noqa: B018
        return response

    def show_image(self, req: Request, image_id: str) -> webob.Response:
        """The image as the caller sees it: Glance's own answer to a show
        (200, or its 401/403/404), the id quoted as one path segment."""
        return self.subrequest(
            req, 'GET', '/v2/images/' + urllib.parse.quote(image_id, safe=''))

    def process_request(self, req: Request) -> webob.Response | None:
        """Return a response to stop here, or ``None`` to go on."""
        return None

    def process_response(self, response: webob.Response,
                         request: Request) -> webob.Response:
        """Adjust the next application's response."""
        return response

    @functools.cached_property
    def checks(self) -> Checks:
        """The named policy checks, on the service's policy file."""
        return Checks(self.oslo_conf)
