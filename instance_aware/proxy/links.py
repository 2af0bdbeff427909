"""Absolute links Glance wrote for this request, moved to the public URL.

Glance builds absolute URLs (the ``Location`` of a create, the ``href``
links of the version document) from the address it sees: its scheme and
the ``Host`` it was sent, or, with ``[oslo_middleware]
enable_proxy_headers_parsing``, the proto, host and prefix of the
forwarding headers (the first element of ``Forwarded`` when there is
one, else ``X-Forwarded-Proto``/``-Host``; ``X-Forwarded-Prefix`` before
its own path).  :func:`origins` lists every address Glance may have used
for a request from the headers that were really sent to it;
:func:`to_public` moves a URL that starts with one of them to
``public_endpoint``.  Any other URL is left alone.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from instance_aware.proxy import headers as proxy_headers

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_DEFAULT_PORTS = {'http': '80', 'https': '443'}
#: Paths of the version document.
VERSION_PATHS = frozenset({'/', '/versions'})
#: Largest version document rewritten.
MAX_VERSION_DOCUMENT = 64 * 1024


def origins(upstream: urllib.parse.SplitResult, environ: WSGIEnvironment,
            sent: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(scheme://host, /prefix)`` addresses Glance may have written
    links for, given the headers ``sent`` to it; longest first (scheme
    and host lower case: they are compared without case, the path
    with).

    Schemes: the upstream's, the client's, and the forwarded protos.
    Hosts: the upstream's, the client's ``Host``, the ``Host`` sent and
    the forwarded hosts (``Forwarded``'s with and without quotes; each
    also without the scheme's default port, as webob writes it).
    Prefixes: the upstream's path, behind the forwarded prefix too.
    """
    prefix = upstream.path.rstrip('/')
    element = proxy_headers.first_forwarded_element(
        sent.get(proxy_headers.FORWARDED, ''))
    schemes = {upstream.scheme, str(environ.get('wsgi.url_scheme') or
                                    'http')}
    for proto in (sent.get(proxy_headers.FORWARDED_PROTO),
                  element.get('proto')):
        if proto:
            schemes.add(proto.strip().lower())
    hosts = {upstream.netloc, proxy_headers.client_host(environ)}
    for host in (sent.get('Host'), sent.get(proxy_headers.FORWARDED_HOST)):
        if host:
            hosts.add(host.strip())
    if element.get('host'):
        # oslo.middleware takes a quoted value with its quotes.
        hosts |= {element['host'], f'"{element["host"]}"'}
    prefixes = {prefix}
    forwarded_prefix = sent.get(proxy_headers.FORWARDED_PREFIX, '').strip()
    if forwarded_prefix:
        prefixes.add(forwarded_prefix.rstrip('/') + prefix)
    found = {(f'{scheme}://{form}', path)
             for scheme in schemes for host in hosts
             for form in _host_forms(scheme, host) for path in prefixes}
    return sorted(found, key=lambda origin: len(origin[0] + origin[1]),
                  reverse=True)


def _host_forms(scheme: str, host: str) -> set[str]:
    """``host`` lower case, and without ``scheme``'s default port."""
    host = host.lower()
    forms = {host}
    default = _DEFAULT_PORTS.get(scheme)
    if default and host.endswith(':' + default) and not host.endswith(']'):
        forms.add(host[:-len(default) - 1])
    return forms


def to_public(url: str, public: str,
              known: Sequence[tuple[str, str]]) -> str:
    """``url`` with the first of ``known`` it starts with replaced by
    ``public``; unchanged when none matches."""
    for base, path in known:
        origin = base + path
        rest = url[len(origin):]
        if (url[:len(base)].lower() == base
                and url[len(base):len(origin)] == path
                and (not rest or rest[0] in '/?#')):
            return public.rstrip('/') + rest
    return url


def rewrite_hrefs(document: Any, rewrite: Callable[[str], str]) -> Any:
    """``document`` with every string ``href`` passed through
    ``rewrite``."""
    if isinstance(document, dict):
        return {key: rewrite(value) if key == 'href' and isinstance(
            value, str) else rewrite_hrefs(value, rewrite)
            for key, value in document.items()}
    if isinstance(document, list):
        return [rewrite_hrefs(value, rewrite) for value in document]
    return document
