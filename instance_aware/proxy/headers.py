"""Headers across the proxy: hop-by-hop ones dropped, forwarding added.

Hop-by-hop headers (RFC 9110 7.6.1: ``Connection``, ``Keep-Alive``,
``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade`` and
every header named in ``Connection``) belong to one connection and are
dropped both ways.  The ``X-Forwarded-*`` and ``Forwarded`` headers the
client sent can be faked: they are replaced by this hop's own unless the
deployer says the stack runs behind a proxy that sets them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from urllib3.util import SKIP_HEADER

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: Hop-by-hop headers, lower case.  ``Proxy-*`` too.
HOP_BY_HOP = frozenset({'connection', 'keep-alive', 'te', 'trailer',
                        'transfer-encoding', 'upgrade',
                        'proxy-connection'})
#: Request headers the serving WSGI server has dealt with.
_SERVER_HANDLED = frozenset({'expect', 'host', 'content-length',
                             'content-type'})
FORWARDED_FOR = 'X-Forwarded-For'
FORWARDED_PROTO = 'X-Forwarded-Proto'
FORWARDED_HOST = 'X-Forwarded-Host'
FORWARDED_PREFIX = 'X-Forwarded-Prefix'
FORWARDED = 'Forwarded'


def request_headers(environ: WSGIEnvironment, *, preserve_host: bool,
                    trust_forwarded: bool) -> dict[str, str]:
    """Headers for the upstream: the client's, less hop-by-hop ones,
    with the forwarding headers of this hop (the body's framing is
    added by the caller)."""
    received: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith('HTTP_'):
            received[key[5:].replace('_', '-').title()] = value
    named = connection_tokens(received.get('Connection', ''))
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
    host = client_host(environ)
    if preserve_host:
        headers['Host'] = host
    # urllib3 would add its own; send only what the client sent.
    headers.setdefault('User-Agent', SKIP_HEADER)
    headers.setdefault('Accept-Encoding', SKIP_HEADER)
    headers.update(_forwarding(environ, forwarded if trust_forwarded
                               else None, host))
    return headers


def _forwarding(environ: WSGIEnvironment, received: dict[str, str] | None,
                host: str) -> dict[str, str]:
    """This hop's forwarding headers; appended to ``received`` (the
    client's, when trusted)."""
    client = str(environ.get('REMOTE_ADDR') or 'unknown')
    proto = str(environ.get('wsgi.url_scheme') or 'http')
    if received is None:
        return {FORWARDED_FOR: client, FORWARDED_PROTO: proto,
                FORWARDED_HOST: host}
    headers = dict(received)
    chain = headers.get(FORWARDED_FOR)
    headers[FORWARDED_FOR] = f'{chain}, {client}' if chain else client
    headers.setdefault(FORWARDED_PROTO, proto)
    headers.setdefault(FORWARDED_HOST, host)
    if FORWARDED in headers:
        node = f'"[{client}]"' if ':' in client else client
        headers[FORWARDED] += (f', for={node};proto={proto};'
                               f'host="{host}"')
    return headers


def response_headers(received: Iterable[tuple[str, str]]
                     ) -> list[tuple[str, str]]:
    """The upstream's headers for the client, less hop-by-hop ones."""
    items = list(received)
    named: set[str] = set()
    for name, value in items:
        if name.lower() == 'connection':
            named |= connection_tokens(value)
    return [(name, value) for name, value in items
            if not (name.lower() in HOP_BY_HOP or name.lower() in named
                    or name.lower().startswith('proxy-'))]


def client_host(environ: WSGIEnvironment) -> str:
    """The Host the client addressed (or the server's name and port)."""
    host = environ.get('HTTP_HOST')
    if host:
        return str(host)
    name = str(environ.get('SERVER_NAME') or 'localhost')
    port = str(environ.get('SERVER_PORT') or '')
    default = '443' if environ.get('wsgi.url_scheme') == 'https' else '80'
    return name if port in ('', default) else f'{name}:{port}'


def connection_tokens(value: str) -> set[str]:
    """The header names listed in a ``Connection`` header, lower case."""
    return {token.strip().lower() for token in value.split(',')
            if token.strip()}


def first_forwarded_element(value: str) -> dict[str, str]:
    """The parameters of the first element of a ``Forwarded`` header
    (RFC 7239), names lower case, values unquoted: the one
    oslo.middleware's ``http_proxy_to_wsgi`` reads."""
    element: dict[str, str] = {}
    for pair in value.split(',', 1)[0].split(';'):
        name, _, raw = pair.partition('=')
        if name.strip():
            element[name.strip().lower()] = raw.strip().strip('"')
    return element
