"""Options of the standalone proxy, ``[instance_aware_proxy]``.

Every option may also be a key of the paste section of
``instance_aware_proxy``, which wins (read by :mod:`instance_aware.config`,
as the filters' options are).
"""

from __future__ import annotations

import copy
import dataclasses

from oslo_config import cfg

from instance_aware import config

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
             'wait, not the whole transfer (see ``transfer_timeout``).'),
    cfg.FloatOpt(
        'transfer_timeout',
        default=3600.0,
        min=0.0,
        help='Seconds a whole exchange with the upstream may take, from '
             'connecting to the last byte of the response (the body of '
             'an upload included).  Beyond it the request fails with '
             '504, or a response already started is cut short.  Bounds '
             'how long an upstream that sends a trickle holds a thread: '
             'allow for the largest image at the slowest rate you '
             'accept.  0 means no limit.'),
    cfg.IntOpt(
        'max_concurrent_transfers',
        default=3,
        min=1,
        help='Requests one worker process forwards to the upstream at '
             'the same time, each from connecting until its response is '
             'delivered (every one holds a thread of the worker).  More '
             'are answered 503 with Retry-After at once.  Keep it below '
             "the worker's threads, so that health checks and the "
             "stack's own API always find a free thread.  "
             '``./tools/dev serve`` sets it to its threads less one.'),
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
             'URLs that Glance may have built for this request (from '
             "the upstream's address, the Host sent to it, or the "
             'X-Forwarded-Proto/-Host/-Prefix and Forwarded proto/host '
             'sent to it) in Location and Content-Location headers and '
             'in version documents are rewritten to start with it.  '
             'Unset: links are left as Glance wrote them.'),
    cfg.StrOpt(
        'ca_file',
        help='CA bundle to verify an https upstream (default: the '
             "system's)."),
    cfg.BoolOpt(
        'insecure',
        default=False,
        help='Do not verify the certificate of an https upstream.'),
]


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
    transfer_timeout: float
    max_concurrent_transfers: int
    pool_maxsize: int
    preserve_host: bool
    trust_forwarded_headers: bool
    public_endpoint: str | None
    ca_file: str | None
    insecure: bool

    @classmethod
    def load(cls, conf: cfg.ConfigOpts,
             paste: config.Paste | None = None) -> Settings:
        """Read the group, paste keys first; ``upstream`` is required.

        A bad or missing value fails the service start, not a request.
        """
        values = config.read(conf, GROUP, OPTS, paste)
        if not values['upstream']:
            raise cfg.RequiredOptError('upstream', cfg.OptGroup(GROUP))
        return config.load(cls, values)
