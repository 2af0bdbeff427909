"""Options of the ``[instance_aware_keys]`` group.

The key manager itself is configured where castellan reads it, exactly as
for Glance: ``[key_manager] backend`` (default ``barbican``) and
``[barbican] barbican_endpoint`` / ``auth_endpoint`` / ``verify_ssl`` ...
This group only says how *we* authenticate to it:

* ``auth_mode`` decides what identity goes with a key manager call made
  for a request.  ``token`` (production) forwards the caller's Keystone
  token, and the service token when the request carried one, as Glance's
  own castellan calls do.  ``trusted_headers`` sends keystonemiddleware's
  identity headers instead: only for a key manager whose pipeline trusts
  them (the local Barbican of the tests), never in production.
* The keystoneauth options (``auth_type``, ``auth_url``, ``username`` ...)
  are the service credentials of the *retry* path: ``instance-aware-manage
  reconcile`` has no caller whose token it could forward.
"""

from __future__ import annotations

import copy
import dataclasses

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from instance_aware import config

GROUP = 'instance_aware_keys'

TOKEN = 'token'  # noqa: S105 - an option value, not a secret
TRUSTED_HEADERS = 'trusted_headers'

OPTS: list[cfg.Opt] = [
    cfg.BoolOpt(
        'enabled',
        default=True,
        help='Own the key lifecycle of encrypted images through castellan: '
             'check that the creator can read the secret, register the '
             'image as its consumer, remove the consumer and delete the '
             'secret (deletion policy ``on_image_deletion``) when the image '
             'is deleted.  Turn off only where no key manager is deployed: '
             'the properties are then validated and stored, but secrets '
             'are never checked, consumed or deleted.'),
    cfg.StrOpt(
        'auth_mode',
        default=TOKEN,
        choices=[
            (TOKEN, "Forward the caller's X-Auth-Token (and X-Service-Token "
                    'when present) to the key manager.'),
            (TRUSTED_HEADERS, 'Send X-Identity-Status/X-Project-Id/'
                              'X-User-Id/X-Roles headers and no token.  '
                              'Only for a key manager without authtoken '
                              '(local tests); never in production.'),
        ],
        help='How the key manager calls made for a request authenticate '
             '(they act as the caller, as Glance\'s own do).  The retry '
             'path of ``reconcile`` uses the service credentials of this '
             'group in ``token`` mode, and asserts the admin role in the '
             'image owner\'s project in ``trusted_headers`` mode.'),
    cfg.FloatOpt(
        'timeout',
        default=10.0,
        min=0.1,
        help='Seconds a single key manager HTTP call may take.  castellan '
             'sets no timeout of its own; a key manager that hangs would '
             'otherwise hold the API thread forever.'),
]


@dataclasses.dataclass(frozen=True)
class KeyOptions:
    """``[instance_aware_keys]``, read once (keystoneauth reads the service
    credentials of the group itself)."""

    enabled: bool
    auth_mode: str
    timeout: float

    @classmethod
    def load(cls, conf: cfg.ConfigOpts) -> KeyOptions:
        register_opts(conf)
        return config.load(cls, config.read(conf, GROUP, OPTS))


#: castellan's names of its Barbican backend (``[key_manager] backend``).
BARBICAN_BACKENDS = frozenset({
    'barbican', 'castellan.key_manager.barbican_key_manager.'
                'BarbicanKeyManager'})


def missing_key_manager(conf: cfg.ConfigOpts) -> str | None:
    """What in the configuration keeps every key manager call from
    working, naming the option; ``None`` when nothing visibly does.

    castellan's options must be registered (by its ``key_manager.API``).
    Only Barbican is checked: other backends have options of their own.
    An ``auth_endpoint`` left at castellan's default counts as unset: a
    deployer who configured Barbican set one of the two.
    """
    if conf.key_manager.backend not in BARBICAN_BACKENDS:
        return None
    if conf.barbican.barbican_endpoint:
        return None
    if KeyOptions.load(conf).auth_mode == TRUSTED_HEADERS:
        return ('[barbican] barbican_endpoint is not set: '
                f'[{GROUP}] auth_mode = {TRUSTED_HEADERS} sends no token, '
                'so there is no service catalog to find Barbican in')
    where = conf.get_location('auth_endpoint', 'barbican')
    if where is None or where.location == cfg.Locations.opt_default:
        return ('no key manager is configured: neither [barbican] '
                'barbican_endpoint nor [barbican] auth_endpoint is set')
    return None


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the group, with the service credentials; idempotent."""
    conf.register_opts(OPTS, group=GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For ``oslo-config-generator``: deep copies, with the ``password``
    plugin's options as the documented example of service credentials."""
    opts = copy.deepcopy(OPTS)
    opts += ks_loading.get_auth_common_conf_options()
    opts += ks_loading.get_auth_plugin_conf_options('password')
    return [(GROUP, opts)]
