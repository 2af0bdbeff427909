"""Filter ``instance_aware``: the whole stack for a one-word insertion.

Order, outermost first:

1. ``location_policy``: refuses location writes before anything else is
   done and scrubs locations from everything the inner filters return;
2. ``encryption_properties``: validates and captures encryption keys;
3. ``instance_metadata``: captures instance keys and serves the query API;
4. ``data_integrity``: innermost, next to the registry, so the bytes it
   hashes on upload and checks on download are exactly the registry's,
   whatever the outer filters do (they pass image data through untouched).

Each filter treats the next one exactly like the registry, so none knows
another's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from instance_aware.filters import (
    base,
    data_integrity,
    encryption_properties,
    instance_metadata,
    location_policy,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

#: Outermost first.
ORDER: tuple[type[base.Filter], ...] = (
    location_policy.LocationPolicyFilter,
    encryption_properties.EncryptionPropertiesFilter,
    instance_metadata.InstanceMetadataFilter,
    data_integrity.DataIntegrityFilter,
)


class InstanceAwareFilter:
    """Paste factory composing every filter of the stack."""

    @classmethod
    def factory(cls, global_conf: dict[str, Any] | None,
                **local_conf: Any) -> Callable[[WSGIApplication],
                                               WSGIApplication]:
        conf = dict(global_conf or {})
        conf.update(local_conf)

        def _factory(app: WSGIApplication) -> WSGIApplication:
            return compose(app, conf)

        return _factory


def compose(app: WSGIApplication, conf: dict[str, Any] | None = None,
            oslo_conf: cfg.ConfigOpts | None = None) -> WSGIApplication:
    """Wrap ``app`` in every filter of the stack, in :data:`ORDER`."""
    for filter_class in reversed(ORDER):
        app = filter_class(app, conf, oslo_conf)
    return app
