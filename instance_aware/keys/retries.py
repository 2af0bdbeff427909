"""Finishing failed key operations (``instance-aware-manage reconcile``).

A failed registration or release is recorded as ``failed`` with
``last_error``; reconcile retries it later as a service identity, there
being no caller.  ``last_error`` starts with the step that failed, so
that the retry knows which way to go even before the image row says
``deleted``.
"""

from __future__ import annotations

import dataclasses
import logging

from castellan.key_manager import key_manager as castellan_base

from instance_aware.keys import consumers, deletion, failures
from instance_aware.keys.auth import ServiceContextFactory
from instance_aware.store import models
from instance_aware.store.encryption_keys import KeyRows

LOG = logging.getLogger(__name__)

#: The steps ``last_error`` starts with.
CREATED = 'on_created'
DELETED = 'on_deleted'


@dataclasses.dataclass
class RetrySummary:
    """What :func:`retry_failed` did.

    ``states`` counts the state each retried row ended in.
    """

    retried: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    states: dict[str, int] = dataclasses.field(default_factory=dict)


def retry_failed(rows: KeyRows, key_manager: castellan_base.KeyManager,
                 service_context_factory: ServiceContextFactory,
                 limit: int | None = None) -> RetrySummary:
    """Retry every ``failed`` key of ``rows``' registry, oldest first.

    ``service_context_factory(project_id)`` gives the identity to act
    as (:func:`~instance_aware.keys.auth.service_contexts`).  A key whose
    image was deleted is released; one whose image is active is
    registered again; one whose image is still ``pending`` is skipped
    (``reconcile`` settles it first).

    :raises StoreError: the mapping database failed.
    """
    summary = RetrySummary()
    for key in rows.failed(limit):
        deleting = (key.image_state == models.DELETED
                    or (key.last_error or '').startswith(DELETED))
        if not deleting and key.image_state != models.ACTIVE:
            summary.skipped += 1
            continue
        summary.retried += 1
        try:
            km_context = service_context_factory(key.project_id)
            if deleting:
                state = deletion.release(key_manager, km_context, key)
            else:
                state = consumers.register(key_manager, km_context,
                                           key.key_id, key.image_id)
        except failures.KeyLifecycleError as exc:
            step = DELETED if deleting else CREATED
            LOG.warning('Retry for key %s of image %s failed: %s',
                        key.key_id, key.image_id, exc)
            state = models.KEY_FAILED
            rows.record(key.image_id, key.key_property, key.key_id,
                        models.KEY_FAILED, f'{step}: {exc}',
                        only_if=models.KEY_FAILED)
            summary.failed += 1
        else:
            rows.record(key.image_id, key.key_property, key.key_id,
                        state, only_if=models.KEY_FAILED)
            summary.succeeded += 1
        summary.states[state] = summary.states.get(state, 0) + 1
    return summary
