"""Releasing the key of a deleted image: consumer, then secret by policy.

The image's deletion policy (``os_encrypt_key_deletion_policy`` or the
legacy ``cinder_encryption_key_deletion_policy``) says whether the secret
goes with it (``on_image_deletion``).  A secret other consumers still use
is kept with a warning, as the spec wants.
"""

from __future__ import annotations

import logging

from castellan.key_manager import key_manager as castellan_base
from oslo_context import context as oslo_context

from instance_aware.keys import consumers, failures
from instance_aware.store import models
from instance_aware.store.encryption_keys import KeyRow

LOG = logging.getLogger(__name__)

# Deletion policies (``os_encrypt_key_deletion_policy`` and legacy).
ON_IMAGE_DELETION = 'on_image_deletion'
DO_NOT_DELETE = 'do_not_delete'


def _gone(error: failures.KeyLifecycleError) -> bool:
    return (isinstance(error, failures.KeyNotAccessible)
            and error.reason == failures.NOT_FOUND)


def release(key_manager: castellan_base.KeyManager,
            km_context: oslo_context.RequestContext, key: KeyRow) -> str:
    """Remove the consumer, delete per policy; the resulting state.

    :raises KeyLifecycleError: a step failed (a 404 is not a failure:
        the consumer or the secret is already gone).
    """
    mine = consumers.consumer(key.image_id)
    try:
        key_manager.remove_consumer(km_context, key.key_id, mine)
    except NotImplementedError:
        pass
    except Exception as exc:
        error = failures.classify(exc, key.key_id)
        if not _gone(error):
            raise error from exc
    if key.deletion_policy != ON_IMAGE_DELETION:
        return models.CONSUMER_REMOVED
    others: list[str] = []
    try:
        # Ask first: castellan and barbicanclient log a refused delete
        # as an error, and the spec wants a warning.
        secret = key_manager.get(km_context, key.key_id, metadata_only=True)
        others = [consumers.name(c) for c in secret.consumers
                  if consumers.name(c) != consumers.name(mine)]
        if not others:
            key_manager.delete(km_context, key.key_id)
    except Exception as exc:
        error = failures.classify(exc, key.key_id)
        if isinstance(error, failures.ConsumersRemain):
            others = ['a consumer added meanwhile']
        elif _gone(error):
            LOG.info('Secret %s of deleted image %s was already gone',
                     key.key_id, key.image_id)
            return models.KEY_DELETED
        else:
            raise error from exc
    if others:
        LOG.warning('Secret %s of deleted image %s kept despite %s: '
                    'still used by %s', key.key_id, key.image_id,
                    ON_IMAGE_DELETION, ', '.join(others))
        return models.CONSUMER_REMOVED
    LOG.info('Secret %s of deleted image %s deleted (%s)', key.key_id,
             key.image_id, ON_IMAGE_DELETION)
    return models.KEY_DELETED
