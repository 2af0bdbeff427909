"""Standalone mode: the stack as its own service in front of a remote Glance.

Paste application ``instance_aware_proxy`` (``instance_aware.proxy:
app_factory``): the whole stack (:func:`instance_aware.filters.stack.
compose`) around :class:`ProxyApp`, which forwards every request to the
Glance API at ``upstream``.  Glance itself is not changed::

    [pipeline:image-api]
    pipeline = cors request_id authtoken instance_aware_proxy

    [app:instance_aware_proxy]
    use = egg:instance-aware#instance_aware_proxy
    upstream = http://glance-internal:9292

Options live in ``[instance_aware_proxy]`` (see :data:`OPTS`); every one
may also be a key of the paste section, which wins.

What the proxy does with a request and its response:

* **Streaming.**  Request bodies (``Content-Length`` or chunked) are read
  from ``wsgi.input`` piece by piece and sent as they come (chunked
  upstream when the client sent chunked); responses come back through an
  iterator, ``Content-Length`` and ``Content-Encoding`` untouched (nothing
  is decoded).  Memory stays constant whatever the image size.
* **Connections.**  One urllib3 pool per process keeps at most
  ``pool_maxsize`` keep-alive connections to the upstream; a request
  arriving when all are busy opens one more, closed after use.  A
  response is handed back to the pool only once read to its end: when the
  client goes away earlier, the server closes the iterator and the
  upstream connection is closed with it (never reused half-read).
* **Hop-by-hop headers** (``Connection``, ``Keep-Alive``,
  ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``,
  and every header named in ``Connection``) are dropped both ways;
  ``Expect`` is answered by the serving WSGI server, never forwarded.
* **Host.**  The client's ``Host`` is forwarded (``preserve_host``), so
  Glance writes the absolute URLs it builds (the ``Location`` of a
  create, the links of the version document) for the address the client
  used, and openstacksdk's version discovery keeps talking to the stack.
  With ``preserve_host = False`` Glance sees the upstream's own host
  (for an upstream behind name-based virtual hosting); set
  ``public_endpoint`` then.
* **X-Forwarded-For / -Proto / -Host** tell Glance about the client
  (``X-Forwarded-For`` is the client's address).  They can be faked: the
  client's own ``X-Forwarded-*`` and ``Forwarded`` headers are dropped
  and replaced unless ``trust_forwarded_headers`` says that the stack
  runs behind a proxy that sets them; then they are kept and this hop is
  appended.  Glance uses them only with ``[oslo_middleware]
  enable_proxy_headers_parsing = True`` (its stock ``http_proxy_to_wsgi``
  filter).  The serving WSGI server may trust them too: gunicorn takes
  ``X-Forwarded-Proto`` from the addresses in its ``forwarded_allow_ips``
  (127.0.0.1 by default) as the request's scheme; keep the two settings
  in agreement (``instance-aware serve`` sets ``forwarded_allow_ips``
  empty).
* **Links** are left as Glance wrote them.  Image ``self``, ``file`` and
  ``schema`` links are relative paths, right as they are.  When
  ``public_endpoint`` is set, absolute URLs that start with the upstream's
  or the forwarded address are rewritten to start with it instead: in
  ``Location`` and ``Content-Location`` headers and in the ``href`` links
  of the version document (``GET /`` and ``GET /versions``).
* **Failures** are answered in Glance's error style (:mod:`instance_aware.
  errors`): 502 when the upstream cannot be reached, refuses the
  connection or sends no valid response, 504 when it does not accept the
  connection within ``connect_timeout`` or stays silent for
  ``read_timeout`` seconds.  The messages do not name the upstream (it is
  logged).  A failure after the response started cuts the connection, so
  the client sees a short body, never a complete-looking wrong one.
"""

from __future__ import annotations

import copy
import dataclasses
import http
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import urllib3
import urllib3.exceptions
import webob.exc
from oslo_config import cfg
from oslo_log import log as logging
from urllib3.util import SKIP_HEADER

from instance_aware import errors, reading, routing
from instance_aware.filters import stack

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

LOG = logging.getLogger(__name__)

GROUP = 'instance_aware_proxy'

OPTS: list[cfg.Opt] = [
    cfg.URIOpt(
        'upstream',
        schemes=['http', 'https'],
        help='Base URL of the Glance API the stack forwards to, for '
             'example http://glance-internal:9292 (a path is kept as a '
             'prefix).  Required in standalone mode.'),
    cfg.FloatOpt(
        'connect_timeout',
        default=10.0,
        min=0.1,
        help='Seconds to wait for the upstream to accept a connection '
             'before the request fails with 504.'),
    cfg.FloatOpt(
        'read_timeout',
        default=120.0,
        min=0.1,
        help='Seconds the upstream may stay silent (no response yet, or '
             'no byte of it) before the request fails with 504, or a '
             'response already started is cut short.  It bounds each '
             'wait, not the whole transfer: large images still stream.'),
    cfg.IntOpt(
        'pool_maxsize',
        default=10,
        min=1,
        help='Keep-alive connections to the upstream kept per process.  '
             'More concurrent requests open extra connections that are '
             'closed after use.'),
    cfg.BoolOpt(
        'preserve_host',
        default=True,
        help="Forward the client's Host header, so Glance builds its "
             'absolute URLs for the address the client used.  False '
             "sends the upstream's own host instead (set "
             '``public_endpoint`` then).'),
    cfg.BoolOpt(
        'trust_forwarded_headers',
        default=False,
        help='Keep the X-Forwarded-For/-Proto/-Host/-Prefix and '
             'Forwarded headers of incoming requests (this hop is '
             'appended).  Only when every request reaches the stack '
             'through a proxy that sets them: clients can fake them.  '
             "False drops the client's and sends this hop's own."),
    cfg.URIOpt(
        'public_endpoint',
        schemes=['http', 'https'],
        help='URL clients use to reach the stack.  When set, absolute '
             "URLs of the upstream's or the forwarded address in "
             'Location and Content-Location headers and in version '
             'documents are rewritten to start with it.  Unset: links '
             'are left as Glance wrote them.'),
    cfg.StrOpt(
        'ca_file',
        help='CA bundle to verify an https upstream (default: the '
             "system's)."),
    cfg.BoolOpt(
        'insecure',
        default=False,
        help='Do not verify the certificate of an https upstream.'),
]

#: Bytes of a request body read and sent upstream at a time: Glance
#: reads 64 KiB at a time, and gunicorn copies what is left of a larger
#: chunk on every read of a chunked body.
CHUNK_SIZE = 64 * 1024
#: Bytes of a response read from the upstream at a time.
RESPONSE_CHUNK_SIZE = 256 * 1024
#: Largest version document rewritten for ``public_endpoint``.
_MAX_VERSION_DOCUMENT = 64 * 1024

#: Hop-by-hop headers (RFC 9110 7.6.1), lower case.  ``Proxy-*`` too.
HOP_BY_HOP = frozenset({'connection', 'keep-alive', 'te', 'trailer',
                        'transfer-encoding', 'upgrade',
                        'proxy-connection'})
#: Request headers the serving WSGI server has dealt with.
_SERVER_HANDLED = frozenset({'expect', 'host', 'content-length',
                             'content-type'})
_FORWARDED_FOR = 'X-Forwarded-For'
_FORWARDED_PROTO = 'X-Forwarded-Proto'
_FORWARDED_HOST = 'X-Forwarded-Host'
#: Methods retried once when a kept-alive connection turns out closed;
#: never with a body (it is streamed, so it cannot be sent twice).
_RETRY_METHODS = frozenset({'GET', 'HEAD', 'OPTIONS'})
_VERSION_PATHS = frozenset({'/', '/versions'})


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register ``[instance_aware_proxy]``; safe to call twice."""
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Options for ``oslo-config-generator`` (deep copies)."""
    return [(GROUP, copy.deepcopy(OPTS))]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The proxy's options, read once: paste keys first, then config."""

    upstream: str
    connect_timeout: float
    read_timeout: float
    pool_maxsize: int
    preserve_host: bool
    trust_forwarded_headers: bool
    public_endpoint: str | None
    ca_file: str | None
    insecure: bool

    @classmethod
    def load(cls, conf: cfg.ConfigOpts,
             local_conf: Mapping[str, Any] | None = None) -> Settings:
        """Parse paste values with each option's type; check ``upstream``.

        A bad value fails the service start, not a request.
        """
        register_opts(conf)
        values: dict[str, Any] = {}
        local = dict(local_conf or {})
        for opt in OPTS:
            raw = local.get(opt.dest)
            if raw is None:
                values[opt.dest] = getattr(conf[GROUP], opt.dest)
                continue
            try:
                values[opt.dest] = opt.type(raw) if isinstance(
                    raw, str) else raw
            except (ValueError, TypeError) as exc:
                raise cfg.ConfigFileValueError(
                    f'paste option {opt.dest}={raw!r}: {exc}') from exc
        if not values['upstream']:
            raise cfg.RequiredOptError('upstream', cfg.OptGroup(GROUP))
        return cls(**values)


class _BodyReader:
    """The client's body as an iterable of chunks, read as it is sent.

    Remembers a failure to read, so that an aborted upload is told apart
    from an upstream failure (urllib3 reports both as a broken request).
    """

    def __init__(self, stream: Any, length: int | None) -> None:
        self.stream = stream
        self.remaining = length
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self.remaining is None or self.remaining > 0:
                size = CHUNK_SIZE if self.remaining is None else min(
                    CHUNK_SIZE, self.remaining)
                chunk = self.stream.read(size)
                if not chunk:
                    if self.remaining:
                        raise OSError(f'request body ended '
                                      f'{self.remaining} bytes early')
                    return
                if self.remaining is not None:
                    self.remaining -= len(chunk)
                yield chunk
        except Exception as exc:
            self.error = exc
            raise


class _ResponseBody:
    """The upstream response as the WSGI body: streamed, then released.

    A response read to its end gives its connection back to the pool;
    one closed earlier (the client went away) closes its connection.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse,
                 where: str) -> None:
        self.response = response
        self.where = where
        self._complete = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.response.stream(RESPONSE_CHUNK_SIZE,
                                              decode_content=False):
                if chunk:
                    yield chunk
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Headers are sent: only cutting the connection tells the
            # client that the body is incomplete.
            LOG.error('Upstream response to %s broke off: %s',
                      self.where, exc)
            raise
        self._complete = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Unread bytes left (length unknown, or not 0 as after HEAD, 204,
        # 304): the connection cannot carry another request.
        if not self._complete and self.response.length_remaining != 0:
            self.response.close()
        self.response.release_conn()


class ProxyApp:
    """Forward every request to ``upstream`` (innermost application)."""

    def __init__(self, conf: Mapping[str, Any] | None = None,
                 oslo_conf: cfg.ConfigOpts | None = None) -> None:
        self.settings = Settings.load(
            oslo_conf if oslo_conf is not None else cfg.CONF, conf)
        upstream = urllib.parse.urlsplit(self.settings.upstream)
        self.scheme = upstream.scheme
        self.netloc = upstream.netloc
        self.prefix = upstream.path.rstrip('/')
        self.timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.read_timeout)
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
        # The method as sent: the stack judged it so, and Glance's router
        # compares it case-sensitively.
        method = str(environ.get('REQUEST_METHOD', 'GET'))
        reading.adapt_input(environ)  # an iterable input is streamed too
        url = self.prefix + _request_uri(environ)
        headers = self.request_headers(environ)
        body = _body(environ)
        if body is not None and body.remaining is not None:
            headers['Content-Length'] = str(body.remaining)
        try:
            response = self._send(method, url, headers, body)
        except Exception as exc:
            if not isinstance(exc, urllib3.exceptions.HTTPError) and (
                    body is None or body.error is None):
                raise
            failure = self._failure(method, url, exc, body)
            return failure(environ, start_response)
        reason = response.reason or _reason(response.status)
        status = f'{response.status} {reason}'
        headers_out = self.response_headers(environ, response.headers)
        if self._is_version_document(environ, method):
            try:
                document = self._version_document(environ, response, url)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                failure = self._failure(method, url, exc, None)
                return failure(environ, start_response)
            if document is not None:
                headers_out = [(name, value) for name, value in headers_out
                               if name.lower() != 'content-length']
                headers_out.append(('Content-Length', str(len(document))))
                start_response(status, headers_out)
                return [document]
        start_response(status, headers_out)
        return _ResponseBody(response, f'{method} {url}')

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: _BodyReader | None) -> urllib3.BaseHTTPResponse:
        attempts = 2 if body is None and method in _RETRY_METHODS else 1
        for attempt in range(attempts):
            try:
                return self.pool.urlopen(
                    method, url, body=body, headers=headers,
                    chunked=body is not None and body.remaining is None,
                    retries=False, redirect=False, timeout=self.timeout,
                    preload_content=False, decode_content=False,
                    release_conn=False, assert_same_host=False)
            except urllib3.exceptions.ProtocolError:
                # A kept-alive connection the upstream had just closed.
                if attempt + 1 == attempts:
                    raise
        raise AssertionError('unreachable')  # pragma: no cover

    def _failure(self, method: str, url: str, exc: Exception,
                 body: _BodyReader | None
                 ) -> webob.exc.WSGIHTTPException:
        where = f'{method} {self.scheme}://{self.netloc}{url}'
        if body is not None and body.error is not None:
            LOG.warning('Client request body for %s failed: %s', where,
                        body.error)
            return errors.bad_request(
                'The request body could not be read to its end.')
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            LOG.error('Upstream unreachable for %s: %s', where, exc)
            return errors.bad_gateway(
                'The image service behind this endpoint could not be '
                'reached.  Retry later.')
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            LOG.error('Upstream connection timed out for %s: %s', where,
                      exc)
            return errors.gateway_timeout(
                'The image service behind this endpoint did not accept '
                f'the connection within {self.settings.connect_timeout:g} '
                'seconds.  Retry later.')
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            LOG.error('Upstream timed out for %s: %s', where, exc)
            return errors.gateway_timeout(
                'The image service behind this endpoint did not answer '
                f'within {self.settings.read_timeout:g} seconds.')
        LOG.error('Upstream failed for %s: %s', where, exc)
        return errors.bad_gateway(
            'The image service behind this endpoint sent no valid '
            'response.')

    # -- headers ---------------------------------------------------------

    def request_headers(self, environ: WSGIEnvironment) -> dict[str, str]:
        """Headers for the upstream: the client's, less hop-by-hop ones,
        with the forwarding headers of this hop (the body's framing is
        added by the caller)."""
        received: dict[str, str] = {}
        for key, value in environ.items():
            if key.startswith('HTTP_'):
                received[key[5:].replace('_', '-').title()] = value
        named = _connection_tokens(received.get('Connection', ''))
        headers: dict[str, str] = {}
        forwarded: dict[str, str] = {}
        for name, value in received.items():
            lower = name.lower()
            if (lower in HOP_BY_HOP or lower in named
                    or lower in _SERVER_HANDLED
                    or lower.startswith('proxy-')):
                continue
            if lower.startswith('x-forwarded-') or lower == 'forwarded':
                forwarded[name] = value
                continue
            headers[name] = value
        if environ.get('CONTENT_TYPE'):
            headers['Content-Type'] = environ['CONTENT_TYPE']
        host = _client_host(environ)
        if self.settings.preserve_host:
            headers['Host'] = host
        # urllib3 would add its own; send only what the client sent.
        headers.setdefault('User-Agent', SKIP_HEADER)
        headers.setdefault('Accept-Encoding', SKIP_HEADER)
        headers.update(self._forwarding(environ, forwarded, host))
        return headers

    def _forwarding(self, environ: WSGIEnvironment,
                    received: dict[str, str], host: str) -> dict[str, str]:
        client = str(environ.get('REMOTE_ADDR') or 'unknown')
        proto = str(environ.get('wsgi.url_scheme') or 'http')
        if not self.settings.trust_forwarded_headers:
            return {_FORWARDED_FOR: client, _FORWARDED_PROTO: proto,
                    _FORWARDED_HOST: host}
        headers = dict(received)
        chain = headers.get(_FORWARDED_FOR)
        headers[_FORWARDED_FOR] = f'{chain}, {client}' if chain else client
        headers.setdefault(_FORWARDED_PROTO, proto)
        headers.setdefault(_FORWARDED_HOST, host)
        if 'Forwarded' in headers:
            node = f'"[{client}]"' if ':' in client else client
            headers['Forwarded'] += (f', for={node};proto={proto};'
                                     f'host="{host}"')
        return headers

    def response_headers(self, environ: WSGIEnvironment,
                         received: urllib3.HTTPHeaderDict
                         ) -> list[tuple[str, str]]:
        """The upstream's headers for the client, less hop-by-hop ones."""
        items = list(received.iteritems())
        named: set[str] = set()
        for name, value in items:
            if name.lower() == 'connection':
                named |= _connection_tokens(value)
        headers = []
        for name, value in items:
            lower = name.lower()
            if (lower in HOP_BY_HOP or lower in named
                    or lower.startswith('proxy-')):
                continue
            if lower in ('location', 'content-location'):
                value = self.public_url(environ, value)
            headers.append((name, value))
        return headers

    # -- links -----------------------------------------------------------

    def public_url(self, environ: WSGIEnvironment, url: str) -> str:
        """``url`` with the upstream's or the forwarded address replaced
        by ``public_endpoint`` (unchanged when unset or not matching)."""
        public = self.settings.public_endpoint
        if not public:
            return url
        schemes = {self.scheme, str(environ.get('wsgi.url_scheme'))}
        hosts = {self.netloc, _client_host(environ)}
        for scheme in schemes:
            for host in hosts:
                origin = f'{scheme}://{host}{self.prefix}'
                if url == origin or url.startswith(
                        (origin + '/', origin + '?')):
                    return public.rstrip('/') + url[len(origin):]
        return url

    def _is_version_document(self, environ: WSGIEnvironment,
                             method: str) -> bool:
        return bool(self.settings.public_endpoint) and method == 'GET' and (
            routing.normalise_path(environ.get('PATH_INFO', ''))
            in _VERSION_PATHS)

    def _version_document(self, environ: WSGIEnvironment,
                          response: urllib3.BaseHTTPResponse,
                          url: str) -> bytes | None:
        """A small JSON version document with its ``href`` links
        rewritten (read whole); ``None`` leaves the response as it is."""
        headers = response.headers
        length = headers.get('Content-Length', '')
        if (not length.isdigit() or int(length) > _MAX_VERSION_DOCUMENT
                or headers.get('Content-Encoding')
                or 'json' not in headers.get('Content-Type', '')):
            return None
        body = _ResponseBody(response, f'GET {url}')
        try:
            data = b''.join(body)
        finally:
            body.close()
        try:
            document = json.loads(data)
        except ValueError:
            return data
        return json.dumps(_rewrite_hrefs(
            document, lambda href: self.public_url(environ, href))
        ).encode('utf-8')


def _rewrite_hrefs(document: Any, rewrite: Callable[[str], str]) -> Any:
    if isinstance(document, dict):
        return {key: rewrite(value) if key == 'href' and isinstance(
            value, str) else _rewrite_hrefs(value, rewrite)
            for key, value in document.items()}
    if isinstance(document, list):
        return [_rewrite_hrefs(value, rewrite) for value in document]
    return document


def _request_uri(environ: WSGIEnvironment) -> str:
    """The path and query the client asked for, as it was escaped."""
    raw = str(environ.get('PATH_INFO') or '/').encode('latin-1')
    path = urllib.parse.quote(raw, safe="/;=,:@!$&'()*+~")
    query = environ.get('QUERY_STRING')
    return f'{path}?{query}' if query else path


def _content_length(environ: WSGIEnvironment) -> int | None:
    raw = str(environ.get('CONTENT_LENGTH') or '').strip()
    return int(raw) if raw.isdigit() else None


def _body(environ: WSGIEnvironment) -> _BodyReader | None:
    """The client's body to stream upstream, ``None`` when it has none."""
    stream = environ.get('wsgi.input')
    if stream is None:
        return None
    if 'chunked' in str(environ.get('HTTP_TRANSFER_ENCODING', '')).lower(
            ) or environ.get(reading.UNFRAMED):
        # Sent chunked: its length is unknown.
        return _BodyReader(stream, None)
    length = _content_length(environ)
    if not length:
        return None
    return _BodyReader(stream, length)


def _client_host(environ: WSGIEnvironment) -> str:
    """The Host the client addressed (or the server's name and port)."""
    host = environ.get('HTTP_HOST')
    if host:
        return str(host)
    name = str(environ.get('SERVER_NAME') or 'localhost')
    port = str(environ.get('SERVER_PORT') or '')
    default = '443' if environ.get('wsgi.url_scheme') == 'https' else '80'
    return name if port in ('', default) else f'{name}:{port}'


def _connection_tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(',')
            if token.strip()}


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return 'Unknown'


def app_factory(global_conf: dict[str, Any] | None,
                **local_conf: Any) -> WSGIApplication:
    """Paste ``paste.app_factory``: the whole stack around the proxy."""
    conf = dict(global_conf or {})
    conf.update(local_conf)
    return stack.compose(ProxyApp(conf), conf)
