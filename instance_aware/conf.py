"""Configuration options of the ``[instance_aware]`` group.

Options live in the service's own config file (Glance's ``glance-api.conf``)
under ``[instance_aware]``.  Each one may also be set as a key in the paste
filter section; such a key wins for that filter only.  Paste values are
converted by the option's own type into a private overrides mapping, so the
global :data:`oslo_config.cfg.CONF` is never mutated (unlike
``ConfigurableMiddleware._conf_get``, which calls ``set_override``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from oslo_config import cfg

GROUP = 'instance_aware'

SQLITE_FILE = 'instance_aware.sqlite'

OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        'connection',
        secret=True,
        help='SQLAlchemy URL of the mapping database that keeps instance '
             'relations and encryption records.  Unset means the SQLite '
             f'file ``{SQLITE_FILE}`` in ``state_path``.  PostgreSQL '
             '(postgresql+psycopg://..., or postgresql+psycopg2://...) '
             'and MySQL/MariaDB '
             '(mysql+pymysql://...) are supported.'),
    cfg.StrOpt(
        'state_path',
        default='/var/lib/glance',
        help='Directory of the default SQLite mapping database.'),
    cfg.StrOpt(
        'registry_id',
        default='default',
        regex=r'^[A-Za-z0-9._-]{1,64}$',
        help='Identifier of this Glance deployment in the mapping '
             'database.  Several Glance deployments may share one '
             'database; each must use its own registry id.'),
    cfg.IntOpt(
        'db_pool_size',
        default=5,
        min=1,
        help='Connections kept in the pool per API worker process '
             '(ignored for SQLite).'),
    cfg.IntOpt(
        'db_max_overflow',
        default=10,
        min=0,
        help='Connections opened beyond ``db_pool_size`` under load '
             '(ignored for SQLite).'),
    cfg.IntOpt(
        'db_pool_timeout',
        default=10,
        min=1,
        help='Seconds to wait for a pooled connection before the request '
             'fails with 503.'),
    cfg.IntOpt(
        'db_connect_timeout',
        default=5,
        min=1,
        help='Seconds to wait when connecting to the mapping database '
             'before the request fails with 503.'),
    cfg.FloatOpt(
        'db_ping_after_idle',
        default=1.0,
        min=0,
        help='A pooled connection to a database server that sat idle for '
             'longer than this many seconds is checked (``SELECT 1``) '
             'before use, and replaced if the server closed it (restart, '
             'failover, idle timeout).  One returned to the pool more '
             'recently is used at once: checking costs a round trip on '
             'every request.  0 checks every time.'),
    cfg.IntOpt(
        'db_max_retries',
        default=5,
        min=0,
        help='Times a write transaction of the mapping database is re-run '
             'from its start when the server rolled it back to break a '
             'deadlock, a serialization failure or a lock wait timeout '
             "(Galera's certification failures included), as oslo.db's "
             '``wrap_db_retry`` does.  Several API workers and nodes '
             'writing the same instance make these races likely on '
             'PostgreSQL and MySQL/MariaDB.  When the retries are used up '
             'the request fails with 409.  Conflicts in the data (an image '
             'id that already exists) are never retried.  0 disables '
             'retries.'),
    cfg.FloatOpt(
        'db_retry_interval',
        default=0.05,
        min=0,
        help='Seconds before the first retry of a write transaction that '
             'lost a race.  Each next retry waits a random time up to '
             'twice the previous bound (exponential backoff with jitter), '
             'at most ``db_max_retry_interval``.'),
    cfg.FloatOpt(
        'db_max_retry_interval',
        default=1.0,
        min=0,
        help='Longest wait, in seconds, between two retries of a write '
             'transaction that lost a race.'),
    cfg.ListOpt(
        'instance_keys',
        default=['instance_uuid', 'image_type', 'backup_type', 'user_id',
                 'base_image_ref', 'owner_project_name', 'owner_user_name',
                 'owner_id', 'boot_roles', 'image_location', 'image_state',
                 'nova_installation_uuid'],
        help='Image properties captured as instance metadata: stored in '
             'the mapping database, stripped before the registry sees '
             'them, given back to callers allowed by '
             '``instance_aware:get_instance_metadata``.  The default is '
             'what Nova sets on snapshots and backups, plus the Nova '
             'installation UUID.'),
    cfg.ListOpt(
        'encryption_formats',
        default=['luks', 'luks2', 'LUKSv1', 'LUKSv2'],
        help='Accepted values of ``os_encrypt_format``.  The Glance spec '
             '"Standardized image encryption" (2025.1) names LUKS as the '
             "mechanism ('luks' as the disk format) and 'LUKSv1' as an "
             'example of the specific format; the default accepts both '
             'spellings of LUKS 1 and 2.'),
    cfg.BoolOpt(
        'image_conversion_enabled',
        default=False,
        help="Set when Glance's ``image_conversion`` import plugin is "
             'enabled.  Glance no longer sees the encryption properties, so '
             'the filter refuses (400) an import of an encrypted image that '
             'the plugin would convert, as the encryption spec requires; '
             'the image stays ``queued``.  It also tells the data integrity '
             'check that imports may rewrite staged data, for a registry '
             "whose ``[image_import_opts]`` the stack cannot read."),
    cfg.StrOpt(
        'list_strategy',
        default='auto',
        choices=[
            ('shows', 'Fetch each matching image by id, in the order of '
                      'the index (sort by created_at only).'),
            ('registry', 'Ask the registry for one page of the matching '
                         'ids (``id=in:``), sorted and paged by it.'),
            ('auto', '``registry`` when the stack runs inside Glance on a '
                     'database server, or on SQLite with planner '
                     'statistics (``ANALYZE``); ``shows`` on SQLite '
                     'without them and in front of a remote registry.'),
        ],
        help='How a list filtered on captured keys fetches the matching '
             "images from the registry.  Glance's list is one UNION over "
             'every image the project can see, each part restricted to '
             'the ids: an indexed query where the planner has statistics '
             '(PostgreSQL and MySQL always, SQLite after ``ANALYZE``), a '
             'walk of the whole ``os_hidden`` index on SQLite without '
             'them (about a second at a million images), while a show by '
             'id stays constant.  ``auto`` decides once per process: '
             'restart after analyzing a SQLite registry database.'),
    cfg.IntOpt(
        'max_json_body_size',
        default=1024 * 1024,
        min=1024,
        help='Largest JSON request body (bytes) the filters read to '
             'capture properties.  Larger metadata bodies are refused with '
             '413.  Image data bodies are never read.'),
    cfg.BoolOpt(
        'verify_image_data',
        default=True,
        help='Record the digest of image data as uploads and stages '
             "stream through (Glance's ``[DEFAULT] hashing_algorithm``, "
             'sha512 by default) and check every full download against '
             'it: a download whose data no longer matches is cut short, '
             'logged as an alert and the image marked ``tampered`` in the '
             'mapping database.  A range covering the whole image is '
             'checked as a full download; partial ranges and images '
             'whose data the stack never saw are not.'),
    cfg.BoolOpt(
        'fingerprint_image_data',
        default=True,
        help='With ``verify_image_data``: also record a BLAKE3 fingerprint '
             'of the data (computed in the same pass as the digest) and '
             'check full downloads against it instead of the digest.  '
             'BLAKE3 is a cryptographic hash, as collision-resistant as '
             'sha512 for this purpose, and about six times faster, so a '
             'checked download keeps pace with the registry.  Records '
             'without a fingerprint (made before, or adopted from an '
             "import's digest) are checked against their digest and learn "
             'the fingerprint at that verified download.  False: every '
             "download is checked with Glance's ``hashing_algorithm``."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[instance_aware]`` options; safe to call twice."""
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Options for ``oslo-config-generator`` (deep copies, never shared).

    Includes the registry client group the manage command reads, the key
    lifecycle group and the standalone proxy's group.
    """
    from instance_aware import proxy  # only when listing
    from instance_aware.cmd import glance as registry
    from instance_aware.keys import opts as key_opts

    return [(GROUP, copy.deepcopy(OPTS)), *registry.list_opts(),
            *key_opts.list_opts(), *proxy.list_opts()]


class FilterConfig(Mapping[str, Any]):
    """Read-only view of ``[instance_aware]`` with paste overrides first.

    Paste values are strings; each is parsed by its option's type and
    checked once, at filter construction, so a bad paste key fails the
    service start instead of a request.
    """

    def __init__(self, conf: cfg.ConfigOpts,
                 local_conf: Mapping[str, Any] | None = None) -> None:
        register_opts(conf)
        self._conf = conf
        self._overrides: dict[str, Any] = {}
        known = {opt.dest: opt for opt in OPTS}
        for key, raw in (local_conf or {}).items():
            opt = known.get(key)
            if opt is None:
                continue
            try:
                value = opt.type(raw) if isinstance(raw, str) else raw
            except (ValueError, TypeError) as exc:
                raise cfg.ConfigFileValueError(
                    f'paste option {key}={raw!r}: {exc}') from exc
            self._overrides[key] = value

    def __getitem__(self, key: str) -> Any:
        if key in self._overrides:
            value = self._overrides[key]
        else:
            value = getattr(self._conf[GROUP], key)
        if key == 'connection' and not value:
            value = f"sqlite:///{self['state_path']}/{SQLITE_FILE}"
        return value

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except (KeyError, cfg.NoSuchOptError) as exc:
            raise AttributeError(key) from exc

    def __iter__(self) -> Iterator[str]:
        return iter(opt.dest for opt in OPTS)

    def __len__(self) -> int:
        return len(OPTS)

    @property
    def oslo_conf(self) -> cfg.ConfigOpts:
        """The service's configuration object (for oslo.policy and logs)."""
        return self._conf
