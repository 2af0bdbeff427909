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

Options live in ``[instance_aware_proxy]`` (:mod:`.options`); every one
may also be a key of the paste section, which wins.

What the proxy does with a request and its response:

* **Streaming** (:mod:`.transfer`).  Request bodies (``Content-Length``
  or chunked) are read from ``wsgi.input`` piece by piece and sent as
  they come (chunked upstream when the client sent chunked).  Response
  bodies are passed on as they arrive: each read returns what the
  upstream has sent so far.  The status and headers go out with the
  first bytes of the body (or at once for an empty one); Glance, a WSGI
  application, sends its headers with its first bytes too.
  ``Content-Length`` and ``Content-Encoding`` are untouched (nothing is
  decoded).  Memory stays constant whatever the image size.
* **Connections.**  One urllib3 pool per process keeps at most
  ``pool_maxsize`` keep-alive connections to the upstream; a request
  arriving when all are busy opens one more, closed after use.  A
  response is handed back to the pool only once read to its end: when
  the client goes away earlier, the server closes the iterator and the
  upstream connection is closed with it (never reused half-read).
* **Bounds.**  ``read_timeout`` bounds each wait for the upstream,
  ``transfer_timeout`` the whole exchange.  A worker process runs at
  most ``max_concurrent_transfers`` exchanges at once; more requests are
  answered 503 with ``Retry-After`` at once, so that a slow upstream
  cannot hold every thread and health checks always find one.
* **Hop-by-hop headers** (:mod:`.headers`) are dropped both ways;
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
  in agreement (``./tools/dev serve`` sets ``forwarded_allow_ips``
  empty).
* **Links** (:mod:`.links`) are left as Glance wrote them.  Image
  ``self``, ``file`` and ``schema`` links are relative paths, right as
  they are.  When ``public_endpoint`` is set, absolute URLs that start
  with an address Glance may have built them from (the upstream's, the
  ``Host`` sent to it, the forwarded proto, host and prefix sent to it)
  are rewritten to start with it instead: in ``Location`` and
  ``Content-Location`` headers and in the ``href`` links of the version
  document (``GET /`` and ``GET /versions``).
* **Failures** are answered in Glance's error style (:mod:`instance_aware.
  errors`) until the first byte of the body: 502 when the upstream cannot
  be reached, refuses the connection, sends no valid response or breaks
  off before its body starts; 504 when it does not accept the connection
  within ``connect_timeout``, stays silent for ``read_timeout`` seconds
  or the exchange outlives ``transfer_timeout``.  The messages do not
  name the upstream (it is logged).  A failure after the first byte
  cuts the connection, so the client sees a short body (or a chunked
  body without its last chunk), never a complete-looking wrong one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from instance_aware.filters import stack
from instance_aware.proxy.app import ProxyApp
from instance_aware.proxy.options import (
    GROUP,
    OPTS,
    Settings,
    list_opts,
    register_opts,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ['GROUP', 'OPTS', 'ProxyApp', 'Settings', 'app_factory',
           'list_opts', 'register_opts']


def app_factory(global_conf: dict[str, Any] | None,
                **local_conf: Any) -> WSGIApplication:
    """Paste ``paste.app_factory``: the whole stack around the proxy."""
    conf = dict(global_conf or {})
    conf.update(local_conf)
    return stack.compose(ProxyApp(conf), conf)
