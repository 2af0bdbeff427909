"""Which absolute links the proxy moves to ``public_endpoint``."""

from __future__ import annotations

import urllib.parse

import pytest

from instance_aware.proxy import links

PUBLIC = 'https://images.example/image'
UPSTREAM = urllib.parse.urlsplit('http://glance-internal:9292')
ENVIRON = {'wsgi.url_scheme': 'http', 'HTTP_HOST': 'stack:9292'}


@pytest.mark.parametrize(('sent', 'url', 'public'), [
    pytest.param({}, 'http://glance-internal:9292/v2/', PUBLIC + '/v2/',
                 id='upstream'),
    pytest.param({}, 'http://stack:9292/v2/images/1?a=b',
                 PUBLIC + '/v2/images/1?a=b', id='client-host'),
    pytest.param({}, 'HTTP://STACK:9292/v2/Images', PUBLIC + '/v2/Images',
                 id='host-case'),
    pytest.param({'Host': 'sent.example'}, 'http://sent.example/v2/',
                 PUBLIC + '/v2/', id='host-sent'),
    pytest.param({'X-Forwarded-Host': 'front.example',
                  'X-Forwarded-Proto': 'https'},
                 'https://front.example/v2/', PUBLIC + '/v2/',
                 id='x-forwarded'),
    pytest.param({'X-Forwarded-Host': 'front.example'},
                 'http://front.example/v2/', PUBLIC + '/v2/',
                 id='x-forwarded-host-own-scheme'),
    pytest.param({'X-Forwarded-Host': 'front.example:443',
                  'X-Forwarded-Proto': 'https'},
                 'https://front.example/v2/', PUBLIC + '/v2/',
                 id='default-port-left-out'),
    pytest.param({'X-Forwarded-Host': 'front.example:443',
                  'X-Forwarded-Proto': 'https'},
                 'https://front.example:443/v2/', PUBLIC + '/v2/',
                 id='default-port-kept'),
    pytest.param({'X-Forwarded-Host': 'front.example',
                  'X-Forwarded-Proto': 'https',
                  'X-Forwarded-Prefix': '/image/'},
                 'https://front.example/image/v2/', PUBLIC + '/v2/',
                 id='x-forwarded-prefix'),
    pytest.param({'Forwarded': 'for=192.0.2.1;proto=https;'
                               'host="front.example", for=10.0.0.1'},
                 'https://front.example/v2/', PUBLIC + '/v2/',
                 id='forwarded'),
    pytest.param({'Forwarded': 'proto=https;host="front.example"'},
                 'https://"front.example"/v2/', PUBLIC + '/v2/',
                 id='forwarded-quoted-as-oslo-reads-it'),
    pytest.param({'X-Forwarded-Host': 'front.example'},
                 'http://front.example.evil/v2/',
                 'http://front.example.evil/v2/', id='longer-host'),
    pytest.param({}, 'http://glance-internal:92920/v2/',
                 'http://glance-internal:92920/v2/', id='longer-port'),
    pytest.param({'X-Forwarded-Host': 'front.example'},
                 'https://elsewhere.example/v2/',
                 'https://elsewhere.example/v2/', id='other-host'),
    pytest.param({}, 'ftp://stack:9292/v2/', 'ftp://stack:9292/v2/',
                 id='other-scheme'),
])
def test_to_public(sent: dict[str, str], url: str, public: str) -> None:
    known = links.origins(UPSTREAM, ENVIRON, sent)
    assert links.to_public(url, PUBLIC, known) == public


def test_upstream_prefix_is_part_of_the_origin() -> None:
    upstream = urllib.parse.urlsplit('http://glance-internal/Image/')
    known = links.origins(upstream, ENVIRON, {'X-Forwarded-Prefix': '/p'})
    assert links.to_public('http://glance-internal/Image/v2/', PUBLIC,
                           known) == PUBLIC + '/v2/'
    assert links.to_public('http://stack:9292/p/Image/v2/', PUBLIC,
                           known) == PUBLIC + '/v2/'
    # The path is compared with its case.
    assert links.to_public('http://glance-internal/image/v2/', PUBLIC,
                           known) == 'http://glance-internal/image/v2/'
    # Longest first: the prefix goes with the host.
    assert links.to_public('http://glance-internal/Image', PUBLIC,
                           known) == PUBLIC


def test_rewrite_hrefs_touches_only_string_hrefs() -> None:
    document = {'versions': [{'href': 'a', 'links': [
        {'href': 'b', 'rel': 'self'}, {'href': 3}]}], 'href': None}
    assert links.rewrite_hrefs(document, str.upper) == {
        'versions': [{'href': 'A', 'links': [
            {'href': 'B', 'rel': 'self'}, {'href': 3}]}], 'href': None}
