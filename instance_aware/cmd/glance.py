"""The Glance client of ``reconcile`` and ``adopt`` (operator commands).

They compare the store with what Glance itself holds, so they call
Glance's API from outside the stack, as an administrator, with
credentials from the ``[instance_aware_registry]`` group (keystoneauth
options, as every OpenStack service configures its clients), or, for a
header-trusting local deployment only (``./tools/dev serve``), with
trusted identity headers.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

from keystoneauth1 import loading as ks_loading
from keystoneauth1 import plugin as ks_plugin
from keystoneauth1 import session as ks_session
from oslo_config import cfg

from instance_aware import config
from instance_aware.capture import bodies, listing
from instance_aware.keys.auth import HeadersAuth

GROUP = 'instance_aware_registry'
_NIL_UUID = '00000000-0000-0000-0000-000000000000'

OPTS: list[cfg.Opt] = [
    cfg.URIOpt(
        'endpoint',
        help='Image API endpoint (for example http://glance:9292).  Unset: '
             'taken from the service catalog (service type ``image``).'),
    cfg.StrOpt(
        'interface',
        default='internal',
        help='Catalog interface used when ``endpoint`` is unset.'),
    cfg.StrOpt(
        'region_name',
        help='Catalog region of the image endpoint when ``endpoint`` is '
             'unset.  Set it wherever the catalog lists Glance in more '
             'than one region: without it the first image endpoint of the '
             'catalog is used, whichever region it belongs to.'),
    cfg.BoolOpt(
        'trusted_headers',
        default=False,
        help='Send X-Identity-Status/X-Roles headers instead of a token.  '
             'Only for a local registry whose pipeline trusts them (no '
             'authtoken), such as ``./tools/dev serve``; never in '
             'production.'),
]


@dataclasses.dataclass(frozen=True)
class RegistryOptions:
    """``[instance_aware_registry]``, read once (keystoneauth reads its
    own options of the group itself)."""

    endpoint: str | None
    interface: str
    region_name: str | None
    trusted_headers: bool

    @classmethod
    def load(cls, conf: cfg.ConfigOpts) -> RegistryOptions:
        register_opts(conf)
        return config.load(cls, config.read(conf, GROUP, OPTS))


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)
    ks_loading.register_session_conf_options(conf, GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For ``oslo-config-generator``: deep copies, with the ``password``
    plugin's options as the documented example of the credentials."""
    opts = copy.deepcopy(OPTS)
    opts += ks_loading.get_session_conf_options()
    opts += ks_loading.get_auth_common_conf_options()
    opts += ks_loading.get_auth_plugin_conf_options('password')
    return [(GROUP, opts)]


#: The administrator identity asserted with ``trusted_headers``, no token.
_TRUSTED_HEADERS = {'X-Identity-Status': 'Confirmed', 'X-Roles': 'admin',
                    'X-Project-Id': 'instance-aware',
                    'X-User-Id': 'instance-aware-manage'}


class GlanceClient:
    """The few image API calls reconcile and adopt need."""

    def __init__(self, session: ks_session.Session, endpoint: str,
                 timeout: float = 30) -> None:
        self.session = session
        self.endpoint = endpoint.rstrip('/')
        self.timeout = timeout

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts,
                  endpoint: str | None = None) -> GlanceClient:
        group = RegistryOptions.load(conf)
        auth: ks_plugin.BaseAuthPlugin | None
        if group.trusted_headers:
            auth = HeadersAuth(_TRUSTED_HEADERS)
        else:
            auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
        session = ks_loading.load_session_from_conf_options(conf, GROUP,
                                                            auth=auth)
        url = endpoint or group.endpoint or session.get_endpoint(
            service_type='image', interface=group.interface,
            region_name=group.region_name)
        if not url:
            raise ValueError('No image API endpoint: set '
                             f'[{GROUP}] endpoint or configure auth.')
        return cls(session, url)

    def _get(self, path: str, **params: str) -> Any:
        response = self.session.get(
            self.endpoint + path, params=params, raise_exc=False,
            timeout=self.timeout, headers={'Accept': 'application/json'})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def show(self, image_id: str) -> dict[str, Any] | None:
        """The image, or ``None`` if Glance no longer has it."""
        image = self._get(f'/v2/images/{image_id}')
        return image if isinstance(image, dict) else None

    def behind_stack(self) -> bool:
        """Whether the endpoint answers through the instance-aware stack
        (its query API answers; bare Glance has no such route)."""
        answer = self._get(f'/v2/instances/{_NIL_UUID}/images')
        return isinstance(answer, dict) and 'images' in answer

    def images(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every image Glance has (hidden ones too), page by page."""
        for hidden in ('false', 'true'):
            params: dict[str, str] = {
                'visibility': 'all', 'member_status': 'all',
                'os_hidden': hidden, 'limit': str(page_size),
                'sort_key': 'created_at', 'sort_dir': 'asc'}
            while True:
                page = self._get('/v2/images', **params) or {}
                yield from page.get('images', [])
                marker = listing.marker_of(page.get('next'))
                if marker is None:
                    break
                params['marker'] = marker

    def remove_properties(self, image_id: str, keys: list[str]) -> None:
        """Delete ``keys`` from the image's properties in Glance."""
        response = self.session.patch(
            f'{self.endpoint}/v2/images/{image_id}', raise_exc=False,
            timeout=self.timeout,
            json=[{'op': 'remove', 'path': bodies.encode_pointer(key)}
                  for key in keys],
            headers={'Content-Type':
                     'application/openstack-images-v2.1-json-patch',
                     'Accept': 'application/json'})
        response.raise_for_status()

    def present(self, image_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Which of ``image_ids`` Glance still has (two lists per
        batch: hidden and not; shows for the rest, e.g. killed images)."""
        found: dict[str, dict[str, Any]] = {}
        for hidden in ('false', 'true'):
            listed = self._get('/v2/images', id='in:' + ','.join(image_ids),
                               visibility='all', os_hidden=hidden,
                               member_status='all',
                               limit=str(len(image_ids)))
            for image in (listed or {}).get('images', []):
                found[image['id']] = image
        for image_id in image_ids:
            if image_id not in found:
                image = self.show(image_id)
                if image is not None:
                    found[image_id] = image
        return found
