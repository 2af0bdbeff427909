"""The innermost application of the standalone stack: forward upstream.

:class:`ProxyApp` sends each request to the Glance at ``upstream`` and
hands its response back; the modules beside it deal with the headers
(:mod:`.headers`), the links (:mod:`.links`) and the bodies, their
deadline and the number of concurrent exchanges (:mod:`.transfer`).
"""

from __future__ import annotations

import http
import json
import threading
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import urllib3
import urllib3.exceptions
import webob.exc
from oslo_config import cfg
from oslo_log import log as logging

from instance_aware import config
from instance_aware.http import faults, reading, routing
from instance_aware.proxy import failures, links, options, transfer
from instance_aware.proxy import headers as proxy_headers

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

LOG = logging.getLogger(__name__)

#: Methods retried once when a kept-alive connection turns out closed;
#: never with a body (it is streamed, so it cannot be sent twice).
_RETRY_METHODS = frozenset({'GET', 'HEAD', 'OPTIONS'})


class ProxyApp:
    """Forward every request to ``upstream`` (innermost application)."""

    def __init__(self, conf: config.Paste | None = None,
                 oslo_conf: cfg.ConfigOpts | None = None) -> None:
        self.settings = options.Settings.load(
            oslo_conf if oslo_conf is not None else cfg.CONF, conf)
        self.upstream = urllib.parse.urlsplit(self.settings.upstream)
        self.scheme = self.upstream.scheme
        self.netloc = self.upstream.netloc
        self.prefix = self.upstream.path.rstrip('/')
        self.timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.read_timeout)
        self.slots = transfer.Slots(self.settings.max_concurrent_transfers)
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> urllib3.HTTPConnectionPool:
        """The connection pool, made in the serving process on first use
        (never inherited across a fork)."""
        with self._lock:
            if self._pool is None:
                kwargs: dict[str, Any] = {}
                if self.scheme == 'https':
                    kwargs['cert_reqs'] = ('CERT_NONE' if
                                           self.settings.insecure else
                                           'CERT_REQUIRED')
                    if self.settings.ca_file:
                        kwargs['ca_certs'] = self.settings.ca_file
                manager = urllib3.PoolManager(
                    num_pools=1, maxsize=self.settings.pool_maxsize,
                    block=False, timeout=self.timeout, retries=False,
                    **kwargs)
                self._pool = manager.connection_from_url(
                    self.settings.upstream)
            return self._pool

    # -- WSGI ------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        slot = self.slots.take()
        if slot is None:
            LOG.warning('%d transfers to the upstream already run in this '
                        'worker (max_concurrent_transfers): %s %s '
                        'answered 503', self.slots.size,
                        environ.get('REQUEST_METHOD'),
                        environ.get('PATH_INFO'))
            busy = faults.unavailable(
                'This endpoint is busy with other transfers to the image '
                'service.  Retry later.')
            return busy(environ, start_response)
        handed_over = False
        try:
            body = self._exchange(environ, slot)
            if isinstance(body, webob.exc.WSGIHTTPException):
                return body(environ, start_response)
            handed_over = True
            return self._respond(environ, start_response, body)
        finally:
            if not handed_over:
                slot.release()

    def _exchange(self, environ: WSGIEnvironment, slot: transfer.Slot
                  ) -> transfer.ResponseBody | webob.exc.WSGIHTTPException:
        """Send the request; the response, its first bytes read, or the
        error response for a failure until then."""
        # The method as sent: the stack judged it so, and Glance's router
        # compares it case-sensitively.
        method = str(environ.get('REQUEST_METHOD', 'GET'))
        reading.adapt_input(environ)  # an iterable input is streamed too
        url = self.prefix + _request_uri(environ)
        deadline = transfer.Deadline(self.settings.transfer_timeout)
        headers = self.request_headers(environ)
        body = transfer.request_body(environ, deadline)
        if body is not None and body.remaining is not None:
            headers['Content-Length'] = str(body.remaining)
        try:
            response = self._send(method, url, headers, body, deadline)
        except Exception as exc:
            if not isinstance(exc, (urllib3.exceptions.HTTPError,
                                    transfer.TransferTimeout)) and (
                    body is None or body.error is None):
                raise
            return self._failure(method, url, exc, body, deadline)
        environ['instance_aware.proxy.sent_headers'] = headers
        streamed = transfer.ResponseBody(
            response, f'{method} {url}', deadline,
            self.settings.read_timeout, slot,
            fault=lambda exc: self._failure(method, url, exc, None,
                                            deadline, log=False))
        try:
            streamed.start()
        except (*transfer.UPSTREAM_ERRORS, transfer.TransferTimeout) as exc:
            streamed.close()
            return self._failure(method, url, exc, None, deadline)
        except BaseException:
            streamed.close()
            raise
        return streamed

    def _respond(self, environ: WSGIEnvironment,
                 start_response: StartResponse,
                 body: transfer.ResponseBody) -> Iterable[bytes]:
        """Start the response (its first bytes are in) and hand its body
        over; a small version document is rewritten whole."""
        try:
            response = body.response
            reason = response.reason or _reason(response.status)
            status = f'{response.status} {reason}'
            headers_out = self.response_headers(environ, response.headers)
            if self._is_version_document(environ, response):
                try:
                    document = self._version_document(environ, body)
                except webob.exc.WSGIHTTPException as failure:
                    # The body broke off (logged): its error response.
                    return failure(environ, start_response)
                headers_out = [(name, value) for name, value in headers_out
                               if name.lower() != 'content-length']
                headers_out.append(('Content-Length', str(len(document))))
                start_response(status, headers_out)
                return [document]
            start_response(status, headers_out)
            return body
        except BaseException:
            body.close()
            raise

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: transfer.RequestBody | None,
              deadline: transfer.Deadline) -> urllib3.BaseHTTPResponse:
        attempts = 2 if body is None and method in _RETRY_METHODS else 1
        for attempt in range(attempts):
            deadline.check()
            timeout = urllib3.Timeout(
                connect=self.settings.connect_timeout,
                read=self.settings.read_timeout, total=deadline.remaining())
            try:
                return self.pool.urlopen(
                    method, url, body=body, headers=headers,
                    chunked=body is not None and body.remaining is None,
                    retries=False, redirect=False, timeout=timeout,
                    preload_content=False, decode_content=False,
                    release_conn=False, assert_same_host=False)
            except urllib3.exceptions.ProtocolError:
                # A kept-alive connection the upstream had just closed.
                if attempt + 1 == attempts:
                    raise
        raise AssertionError('unreachable')  # pragma: no cover

    def _failure(self, method: str, url: str, exc: Exception,
                 body: transfer.RequestBody | None,
                 deadline: transfer.Deadline, *, log: bool = True
                 ) -> webob.exc.WSGIHTTPException:
        """The error response for ``exc``, logged unless ``log`` is
        false (the caller did)."""
        level, what, response = failures.classify(
            exc, body, deadline, self.settings.connect_timeout,
            self.settings.read_timeout)
        if log:
            LOG.log(level, '%s for %s %s://%s%s: %s', what, method,
                    self.scheme, self.netloc, url,
                    body.error if body is not None and body.error else exc)
        return response

    # -- headers ---------------------------------------------------------

    def request_headers(self, environ: WSGIEnvironment) -> dict[str, str]:
        """Headers for the upstream (see :mod:`.headers`)."""
        return proxy_headers.request_headers(
            environ, preserve_host=self.settings.preserve_host,
            trust_forwarded=self.settings.trust_forwarded_headers)

    def response_headers(self, environ: WSGIEnvironment,
                         received: urllib3.HTTPHeaderDict
                         ) -> list[tuple[str, str]]:
        """The upstream's headers for the client, less hop-by-hop ones,
        links moved to ``public_endpoint``."""
        headers = proxy_headers.response_headers(received.iteritems())
        if not self.settings.public_endpoint:
            return headers
        return [(name, self.public_url(environ, value)
                 if name.lower() in ('location', 'content-location')
                 else value) for name, value in headers]

    # -- links -----------------------------------------------------------

    def public_url(self, environ: WSGIEnvironment, url: str) -> str:
        """``url`` moved to ``public_endpoint`` when it starts with an
        address Glance may have written it for (see :mod:`.links`);
        unchanged when unset or not matching."""
        public = self.settings.public_endpoint
        if not public:
            return url
        sent = environ.get('instance_aware.proxy.sent_headers')
        if sent is None:
            sent = self.request_headers(environ)
        return links.to_public(url, public,
                               links.origins(self.upstream, environ, sent))

    def _is_version_document(self, environ: WSGIEnvironment,
                             response: urllib3.BaseHTTPResponse) -> bool:
        if not (self.settings.public_endpoint
                and environ.get('REQUEST_METHOD', 'GET').upper() == 'GET'
                and routing.normalise_path(environ.get('PATH_INFO', ''))
                in links.VERSION_PATHS):
            return False
        headers = response.headers
        length = headers.get('Content-Length', '')
        return (length.isdigit()
                and int(length) <= links.MAX_VERSION_DOCUMENT
                and not headers.get('Content-Encoding')
                and 'json' in headers.get('Content-Type', ''))

    def _version_document(self, environ: WSGIEnvironment,
                          body: transfer.ResponseBody) -> bytes:
        """The version document read whole, its ``href`` links
        rewritten (as it came when it is not JSON)."""
        data = body.read_all()
        try:
            document = json.loads(data)
        except ValueError:
            return data
        return json.dumps(links.rewrite_hrefs(
            document, lambda href: self.public_url(environ, href))
        ).encode('utf-8')


def _request_uri(environ: WSGIEnvironment) -> str:
    """The path and query the client asked for, as it was escaped."""
    raw = str(environ.get('PATH_INFO') or '/').encode('latin-1')
    path = urllib.parse.quote(raw, safe="/;=,:@!$&'()*+~")
    query = environ.get('QUERY_STRING')
    return f'{path}?{query}' if query else path


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return 'Unknown'
