"""The image as a consumer of its key manager secret.

The standardized image-encryption spec asks the image service to register
each encrypted image as a *consumer* of its secret, so that the key
manager knows the secret is in use, and to remove that consumer when the
image no longer needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from castellan.key_manager import key_manager as castellan_base
from oslo_context import context as oslo_context

from instance_aware import uuids
from instance_aware.keys import failures
from instance_aware.store import models

LOG = logging.getLogger(__name__)


def consumer(image_id: str) -> dict[str, str]:
    """The consumer an image is registered as (the spec's values)."""
    return {'service': 'image', 'resource_type': 'image',
            'resource_id': image_id}


def name(entry: Mapping[str, str]) -> str:
    """``service/resource_type/resource_id`` of a consumer."""
    return '/'.join(str(entry.get(k)) for k in
                    ('service', 'resource_type', 'resource_id'))


def check_key_id(key_id: str) -> None:
    """Refuse a reference that cannot name a secret, as the client's
    error.

    barbicanclient raises ``ValueError`` (not an HTTP error) for a
    reference that is not a UUID: keep client input out of the
    "unavailable" path.

    :raises KeyNotAccessible: ``key_id`` is not a UUID.
    """
    try:
        uuids.canonical(key_id)
    except (ValueError, TypeError, AttributeError):
        raise failures.KeyNotAccessible(
            f'{key_id!r} is not a key manager secret id',
            failures.NOT_FOUND) from None


def register(key_manager: castellan_base.KeyManager,
             km_context: oslo_context.RequestContext, key_id: str,
             image_id: str) -> str:
    """Register the image on ``key_id``; the resulting state
    (``none`` for a backend without consumers, such as Vault).

    :raises KeyLifecycleError: as :func:`failures.classify` says.
    """
    try:
        key_manager.add_consumer(km_context, key_id, consumer(image_id))
    except NotImplementedError:
        LOG.debug('Key manager backend has no secret consumers')
        return models.KEY_NONE
    except Exception as exc:
        raise failures.classify(exc, key_id) from exc
    return models.CONSUMER_REGISTERED


def remove_quietly(key_manager: castellan_base.KeyManager,
                   km_context: oslo_context.RequestContext, key_id: str,
                   image_id: str) -> None:
    """Drop the image's consumer of a secret it no longer names, never
    the secret (its policy applied to the image that named it); a
    failure is a warning."""
    try:
        key_manager.remove_consumer(km_context, key_id, consumer(image_id))
    except Exception as exc:
        LOG.warning('Consumer of image %s on replaced secret %s not '
                    'removed: %s', image_id, key_id, exc)
