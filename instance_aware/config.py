"""The one reader of options: a paste key first, then ``[group]``.

Options live in the service's own configuration file (Glance's
``glance-api.conf``, or ``instance-aware.conf`` of the standalone stack).
Each one may also be a key of the paste section that builds a filter, the
proxy or the healthcheck; such a key wins for that object only.  As in
keystonemiddleware, a paste value is parsed by its option's own type into
a private overrides mapping when the object is built, so a bad value stops
the service start instead of failing requests, and the global
:data:`oslo_config.cfg.CONF` is never mutated (``ConfigurableMiddleware.
_conf_get`` calls ``set_override``).

A group is read once per object into a frozen dataclass of typed fields
(:func:`load`): :class:`FilterConfig` for ``[instance_aware]`` (the
filters, the healthcheck, the command line), the proxy's ``Settings`` for
``[instance_aware_proxy]``.  The ``[instance_aware]`` options are here
because this module is the only one that reads them; the other groups stay
beside their owners and are gathered for the generator by
:mod:`instance_aware.opts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from oslo_config import cfg

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

GROUP = 'instance_aware'

SQLITE_FILE = 'instance_aware.sqlite'

#: Keys of a paste section (strings), or of a test's dictionary.
Paste = Mapping[str, object]

D = TypeVar('D', bound='DataclassInstance')

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
    cfg.StrOpt(
        'hashing_algorithm',
        default='sha512',
        help="Digest algorithm of image data (a ``hashlib`` name) where "
             "Glance's ``[DEFAULT] hashing_algorithm`` is not loaded in "
             'the process, as in the standalone stack: set it to the '
             "registry's value.  Inside Glance, Glance's option wins."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[instance_aware]`` options; safe to call twice."""
    conf.register_opts(OPTS, group=GROUP)


def paste_overrides(opts: Iterable[cfg.Opt],
                    paste: Paste | None) -> dict[str, object]:
    """The paste keys naming one of ``opts``, each parsed by its type.

    Other keys (paste's own, other groups') are ignored; a value that is
    not a string (a test's dictionary) is taken as it is.
    """
    known = {opt.dest: opt for opt in opts}
    parsed: dict[str, object] = {}
    for key, raw in (paste or {}).items():
        opt = known.get(key)
        if opt is None or raw is None:
            continue
        try:
            parsed[key] = opt.type(raw) if isinstance(raw, str) else raw
        except (ValueError, TypeError) as exc:
            raise cfg.ConfigFileValueError(
                f'paste option {key}={raw!r}: {exc}') from exc
    return parsed


def read(conf: cfg.ConfigOpts, group: str, opts: Sequence[cfg.Opt],
         paste: Paste | None = None) -> dict[str, object]:
    """Every option of ``group``: its paste key if given, else ``conf``'s
    value (``opts`` are registered first, which is idempotent)."""
    conf.register_opts(opts, group=group)
    values = paste_overrides(opts, paste)
    section = conf[group]
    for opt in opts:
        if opt.dest not in values:
            values[opt.dest] = getattr(section, opt.dest)
    return values


def load(kind: type[D], values: Mapping[str, object]) -> D:
    """``kind`` built from the values :func:`read` returned: one typed
    field per option (the option types guarantee the field types)."""
    return kind(**{field.name: values[field.name]
                   for field in dataclasses.fields(kind)})


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """The ``[instance_aware]`` options one filter (or command) runs with.

    ``connection`` is never empty: unset, it names the SQLite file in
    ``state_path``.
    """

    connection: str
    state_path: str
    registry_id: str
    db_pool_size: int
    db_max_overflow: int
    db_pool_timeout: int
    db_connect_timeout: int
    db_ping_after_idle: float
    db_max_retries: int
    db_retry_interval: float
    db_max_retry_interval: float
    instance_keys: list[str]
    encryption_formats: list[str]
    image_conversion_enabled: bool
    list_strategy: str
    max_json_body_size: int
    verify_image_data: bool
    fingerprint_image_data: bool
    hashing_algorithm: str

    @classmethod
    def load(cls, conf: cfg.ConfigOpts,
             paste: Paste | None = None) -> FilterConfig:
        """Read ``[instance_aware]`` of ``conf``, ``paste`` keys first."""
        values = read(conf, GROUP, OPTS, paste)
        if not values['connection']:
            values['connection'] = (
                f"sqlite:///{values['state_path']}/{SQLITE_FILE}")
        return load(cls, values)
