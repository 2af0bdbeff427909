"""Named policy checks: the only way code outside ``policies`` asks a rule.

As in Glance's ``api/v2/policy.py``, a caller asks a question by name
(``checks.get_instance_metadata(context, owner)``) and never spells a rule;
the rule names live in the rule modules beside their defaults.  A check
says yes or no; what a refusal means (403, 404, keys left out) is the
caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from oslo_config import cfg
from oslo_context import context as oslo_context

from instance_aware.policies import (
    base,
    encryption,
    enforcer,
    instances,
    locations,
)
from instance_aware.policies.context import policy_target

Context = oslo_context.RequestContext


class Checks:
    """The named checks, bound to one service configuration."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    def _allowed(self, rule: str, context: Context, owner: str | None,
                 extra: Mapping[str, Any] | None = None) -> bool:
        return enforcer.allowed(self.conf, rule, context,
                                policy_target(owner, extra))

    def is_admin(self, context: Context, owner: str | None = None) -> bool:
        """Whether the caller is an instance-aware administrator."""
        return self._allowed(base.CONTEXT_IS_ADMIN, context, owner)

    # Instance relations.
    def get_instance_metadata(self, context: Context,
                              owner: str | None) -> bool:
        """May read the instance keys of an image of ``owner``."""
        return self._allowed(instances.GET_INSTANCE_METADATA, context, owner)

    def set_instance_metadata(self, context: Context,
                              owner: str | None) -> bool:
        """May assert a *trusted* relation on an image of ``owner``."""
        return self._allowed(instances.SET_INSTANCE_METADATA, context, owner)

    def list_instance_images(self, context: Context,
                             project: str | None) -> bool:
        """May list the images of an instance in ``project``."""
        return self._allowed(instances.LIST_INSTANCE_IMAGES, context,
                             project)

    # Encryption properties.
    def get_encryption_properties(self, context: Context,
                                  owner: str | None) -> bool:
        """May read the encryption properties of an image of ``owner``."""
        return self._allowed(encryption.GET_ENCRYPTION_PROPERTIES, context,
                             owner)

    def set_encryption_properties(self, context: Context,
                                  owner: str | None) -> bool:
        """May set the encryption properties of an image of ``owner``."""
        return self._allowed(encryption.SET_ENCRYPTION_PROPERTIES, context,
                             owner)

    # Image locations.
    def get_image_location(self, context: Context,
                           owner: str | None) -> bool:
        """May see ``locations``/``direct_url`` of an image of ``owner``."""
        return self._allowed(locations.GET_IMAGE_LOCATION, context, owner)

    def fetch_image_location(self, context: Context,
                             owner: str | None) -> bool:
        """May call ``GET /v2/images/{id}/locations``."""
        return self._allowed(locations.FETCH_IMAGE_LOCATION, context, owner)

    def set_image_location(self, context: Context,
                           owner: str | None) -> bool:
        """May add or replace locations through a patch or a create."""
        return self._allowed(locations.SET_IMAGE_LOCATION, context, owner)

    def delete_image_location(self, context: Context,
                              owner: str | None) -> bool:
        """May remove locations through a patch."""
        return self._allowed(locations.DELETE_IMAGE_LOCATION, context,
                             owner)

    def add_image_location(self, context: Context,
                           owner: str | None) -> bool:
        """May call ``POST /v2/images/{id}/locations``."""
        return self._allowed(locations.ADD_IMAGE_LOCATION, context, owner)


#: A named check taken unbound (``Checks.set_image_location``), for code
#: that picks the check from the operation it sees.
Check = Callable[[Checks, Context, 'str | None'], bool]
