"""The base of every instance-aware filter.

Shaped like :class:`oslo_middleware.base.ConfigurableMiddleware` (a paste
``factory`` classmethod, ``process_request`` / ``process_response``), with
four differences that matter here:

* options are read through :class:`instance_aware.config.FilterConfig`, so
  paste keys override ``[instance_aware]`` for this filter only;
* ``__call__`` is a plain ``process_request`` / ``process_response`` flow
  without per-request introspection;
* a request on a route the filter does not handle (image data above all) is
  handed to the next application untouched: no webob response wrapping, no
  body access, so uploads and downloads stream at full speed;
* filters composed into one stack pass the request object to each other
  directly (:meth:`Filter.forward`), not through WSGI.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import webob
import webob.dec
import webob.exc
from oslo_config import cfg
from oslo_log import log as logging

from instance_aware import config, database
from instance_aware.filters import headroom
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
    #: looks at; every other request passes straight through.
    ROUTES: ClassVar[frozenset[str | None]] = frozenset()
    #: Whether a filter of ours above may call :meth:`respond` instead of
    #: the WSGI interface (filters whose WSGI call does more than
    #: :meth:`accepts` and :meth:`answer` say no).
    DIRECT: ClassVar[bool] = True

    @classmethod
    def factory(cls, global_conf: dict[str, Any] | None,
                **local_conf: Any
                ) -> Callable[[WSGIApplication], WSGIApplication]:
        """Paste filter factory: paste keys override ``[instance_aware]``;
        the filter runs with room on the frame stack (:mod:`.headroom`)."""
        paste = {**(global_conf or {}), **local_conf}

        def _factory(app: WSGIApplication) -> WSGIApplication:
            return headroom.Headroom(cls(app, paste))

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
        # The first filter of ours to see the request reads it (see
        # :mod:`instance_aware.http.reading`) and refuses what must not pass.
        refused = reading.refuse(environ, start_response)
        if refused is not None:
            return refused
        if not self.accepts(environ):
            return self.application(environ, start_response)
        return self._handle(environ, start_response)

    def accepts(self, environ: WSGIEnvironment) -> bool:
        """Whether this filter handles the request (it notes the route);
        anything else passes through untouched."""
        route = reading.of(environ).route
        if not self.handles(route.name):
            return False
        environ['instance_aware.route'] = route
        return True

    def handles(self, route_name: str | None) -> bool:
        """Whether requests on this route are this filter's business."""
        return route_name in self.ROUTES

    @webob.dec.wsgify(RequestClass=Request)
    def _handle(self, req: Request) -> webob.Response:
        handed = req.environ.pop(documents.HANDOFF, None) is self
        response = self.answer(req)
        # A filter of ours above takes the document as it is; anybody
        # else gets bytes.
        return response if handed else documents.finish(response)

    def respond(self, req: Request) -> webob.Response:
        """Answer ``req`` for the filter of ours just above, which called
        this one directly instead of through WSGI (see :meth:`forward`);
        a JSON document is left parsed."""
        refusal = req.reading.refusal
        if refusal is not None:
            return refusal
        if not self.accepts(req.environ):
            return self.forward(req)
        return self.answer(req)

    def answer(self, req: Request) -> webob.Response:
        """This filter's answer to a request it handles; store faults
        and refusals become error responses."""
        try:
            response = self.process_request(req)
            if response is None:
                response = self.forward(req)
                response = self.process_response(response, req)
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
        """Pass ``req`` on to the next application and return its answer.

        When the next application is a filter of ours composed into the
        same stack (:func:`~instance_aware.filters.stack.compose`), it is
        called directly with this request: each WSGI round trip between
        two filters costs a request and a response object built and taken
        apart again.  Otherwise the next application is told that its
        caller is a filter of ours, so a JSON document may come back
        unencoded (see :mod:`instance_aware.http.documents`).
        """
        following = self.application
        if isinstance(following, Filter) and following.DIRECT:
            if not isinstance(req, Request):
                req = Request(req.environ)
            response = following.respond(req)
            if isinstance(response, webob.exc.WSGIHTTPException):
                # Rendered as its WSGI call would be (body per Accept),
                # so this filter sees the same error body either way.
                response = req.get_response(response)
            return response
        req.environ[documents.HANDOFF] = following
        return req.get_response(following)

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
