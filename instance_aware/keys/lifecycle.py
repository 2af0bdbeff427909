"""The key lifecycle of encrypted images, through castellan.

The standardized image-encryption spec asks the image service to register
each encrypted image as a consumer of its secret
(:mod:`~instance_aware.keys.consumers`), to remove that consumer when the
image is deleted, and to delete the secret when the image's deletion
policy says so (:mod:`~instance_aware.keys.deletion`).  Glance 33 does
none of it for ``os_encrypt_*``; for the legacy ``cinder_encryption_*``
pair it deletes the key itself, which stops once our filter strips those
properties.  :class:`KeyLifecycle` takes both over, each pair on its own
(one ``ia_encryption_keys`` row per key property, each with its policy).

The filter calls :meth:`KeyLifecycle.check_readable` before the registry
creates an image with a key (a missing or foreign secret is the client's
error, an unreachable key manager is not), :meth:`KeyLifecycle.on_created`
once the registry created it, and :meth:`KeyLifecycle.on_deleted` once
it deleted it (never raises: a key manager problem never blocks an image
deletion).

Where each key stands is recorded through
:class:`~instance_aware.store.encryption_keys.KeyRows`; ``reconcile``
finishes the ``failed`` ones (:mod:`~instance_aware.keys.retries`).
Calls for a request act as the caller (:mod:`~instance_aware.keys.auth`).

Deployers configure castellan as for Glance and, for the retry path,
service credentials in ``[instance_aware_keys]``; the Barbican policy
those credentials need is in the architecture page of the admin guide.
"""

from __future__ import annotations

import logging

from castellan import key_manager as castellan_key_manager
from castellan.key_manager import key_manager as castellan_base
from oslo_config import cfg
from oslo_context import context as oslo_context

from instance_aware.keys import (
    auth,
    consumers,
    deletion,
    failures,
    opts,
    retries,
)
from instance_aware.keys.auth import ServiceContextFactory, service_contexts
from instance_aware.keys.consumers import consumer
from instance_aware.keys.deletion import DO_NOT_DELETE, ON_IMAGE_DELETION
from instance_aware.keys.failures import (
    ConsumersRemain,
    KeyLifecycleError,
    KeyManagerNotConfigured,
    KeyManagerUnavailable,
    KeyNotAccessible,
)
from instance_aware.keys.opts import list_opts
from instance_aware.keys.retries import RetrySummary
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.encryption_keys import KeyRow, KeyRows
from instance_aware.store.engine import Database

__all__ = [
    'CONSUMER_REGISTERED', 'CONSUMER_REMOVED', 'DO_NOT_DELETE', 'FAILED',
    'KEY_DELETED', 'NONE', 'ON_IMAGE_DELETION', 'ConsumersRemain',
    'KeyLifecycle', 'KeyLifecycleError', 'KeyManagerUnavailable',
    'KeyNotAccessible', 'RetrySummary', 'ServiceContextFactory',
    'consumer', 'count_failed', 'list_opts', 'service_contexts',
]

LOG = logging.getLogger(__name__)

# ``ia_encryption_keys.lifecycle_state``.
NONE = models.KEY_NONE
CONSUMER_REGISTERED = models.CONSUMER_REGISTERED
CONSUMER_REMOVED = models.CONSUMER_REMOVED
KEY_DELETED = models.KEY_DELETED
FAILED = models.KEY_FAILED

# The properties that name a secret, each with its own lifecycle row.
STANDARD_KEY = 'os_encrypt_key_id'
LEGACY_KEY = 'cinder_encryption_key_id'


def count_failed(db: Database, registry_id: str) -> int:
    """How many key operations wait for a retry (no key manager needed:
    ``reconcile`` reports them when it cannot retry).

    :raises StoreError: the mapping database failed.
    """
    return KeyRows(db, registry_id).count_failed()


class KeyLifecycle:
    """Consumer registration, removal and secret deletion for one registry.

    ``conf`` is the service's configuration: castellan's own options
    (``[key_manager]``, ``[barbican]``) and ``[instance_aware_keys]`` are
    registered on it; nothing is overridden.  ``key_manager`` replaces
    castellan's configured backend (tests).
    """

    def __init__(self, conf: cfg.ConfigOpts, db: Database, registry_id: str,
                 *, key_manager: castellan_base.KeyManager | None = None
                 ) -> None:
        opts.register_opts(conf)
        self.conf = conf
        self.db = db
        self.registry_id = registry_id
        self.rows = KeyRows(db, registry_id)
        #: Why no key manager call can work (the configuration lacks it).
        self.missing: str | None = None
        if key_manager is not None:
            self.key_manager = key_manager
            return
        # castellan registers the backend's options on ``conf`` here.  Its
        # ``options.set_defaults`` is not used: it instantiates every
        # backend on the global CONF.
        self.key_manager = castellan_key_manager.API(conf)
        self.missing = opts.missing_key_manager(conf)

    def _caller(self, context: oslo_context.RequestContext
                ) -> oslo_context.RequestContext:
        """The castellan context acting as the caller (or
        :class:`KeyManagerNotConfigured`, see :attr:`missing`)."""
        if self.missing is not None:
            raise KeyManagerNotConfigured(self.missing)
        return auth.caller_context(self.conf, context)

    def check_readable(self, context: oslo_context.RequestContext,
                       key_id: str) -> None:
        """Check that the caller can see secret ``key_id`` (its metadata).

        :raises KeyNotAccessible: no such secret, or not the caller's
            (``reason`` says which; tell the client neither).
        :raises KeyManagerUnavailable: the key manager could not answer.
        :raises KeyManagerNotConfigured: the deployment has none.
        """
        consumers.check_key_id(key_id)
        km_context = self._caller(context)
        try:
            self.key_manager.get(km_context, key_id, metadata_only=True)
        except Exception as exc:
            raise failures.classify(exc, key_id) from exc

    def on_created(self, context: oslo_context.RequestContext,
                   image_id: str, key_id: str,
                   deletion_policy: str | None,
                   key_property: str = STANDARD_KEY) -> str:
        """Register image ``image_id`` as a consumer of ``key_id``.

        ``key_property`` says which pair names the key: each has a row of
        its own.  Records the key and its policy (the image's row must
        exist), then the outcome: ``consumer_registered`` (or ``none`` for
        a backend without consumers, such as Vault).  Idempotent.

        :returns: the new ``lifecycle_state``.
        :raises KeyNotAccessible: the secret is missing or not the
            caller's; recorded as ``failed`` first.
        :raises KeyManagerUnavailable: likewise, for any other failure;
            ``reconcile`` retries the registration while the image lives.
        :raises LookupError: no ``ia_images`` row for ``image_id``.
        :raises StoreError: the mapping database failed.
        """
        consumers.check_key_id(key_id)
        replaced = self._attach(image_id, key_property, key_id,
                                deletion_policy)
        try:
            km_context = self._caller(context)
            if replaced is not None:
                consumers.remove_quietly(self.key_manager, km_context,
                                         replaced.key_id, image_id)
            state = consumers.register(self.key_manager, km_context,
                                       key_id, image_id)
        except KeyLifecycleError as exc:
            self.rows.record(image_id, key_property, key_id, FAILED,
                             f'{retries.CREATED}: {exc}')
            raise
        self.rows.record(image_id, key_property, key_id, state)
        return state

    def _attach(self, image_id: str, key_property: str, key_id: str,
                deletion_policy: str | None) -> KeyRow | None:
        """Record key and policy; the replaced key, if its consumer is
        ours to drop (registered, and no other pair names it)."""
        change = self.rows.attach(image_id, key_property, key_id,
                                  deletion_policy)
        previous = change.previous
        if previous is not None and previous.key_id != key_id and (
                previous.lifecycle_state == CONSUMER_REGISTERED
                and previous.key_id not in change.others):
            return previous
        return None

    def on_detached(self, context: oslo_context.RequestContext,
                    image_id: str, key_property: str) -> None:
        """The image no longer names a key in ``key_property``: forget
        the row and drop the image's consumer, never the secret (its
        policy applied to the image that named it).  Never raises."""
        try:
            change = self.rows.detach(image_id, key_property)
        except store_errors.StoreError as exc:
            LOG.error('Key %s of image %s not detached: the mapping '
                      'database failed: %s', key_property, image_id, exc)
            return
        gone = change.previous
        if gone is None or gone.lifecycle_state != CONSUMER_REGISTERED or (
                gone.key_id in change.others):
            return
        try:
            km_context = auth.caller_context(self.conf, context)
        except KeyLifecycleError as exc:
            LOG.warning('Consumer of image %s on secret %s not removed: '
                        '%s', image_id, gone.key_id, exc)
            return
        consumers.remove_quietly(self.key_manager, km_context, gone.key_id,
                                 image_id)

    def on_deleted(self, context: oslo_context.RequestContext,
                   image_id: str) -> str | None:
        """Release every key of deleted image ``image_id``; never raises.

        For each key property on record: removes the consumer, then
        deletes the secret if that pair's policy is ``on_image_deletion``.
        A secret kept because other consumers remain is a warning and ends
        ``consumer_removed``; any failure is recorded as ``failed`` for
        ``reconcile`` and logged.

        :returns: the new ``lifecycle_state`` of the first key on record
            (the standard pair's when there are two; each is recorded);
            ``None`` if the image has no key on record (or the store could
            not be read).
        """
        try:
            return self._on_deleted(context, image_id)
        except Exception:
            # Last resort: whatever went wrong, the deletion proceeds.
            LOG.exception('Key lifecycle of deleted image %s failed',
                          image_id)
            return None

    def _on_deleted(self, context: oslo_context.RequestContext,
                    image_id: str) -> str | None:
        try:
            keys = sorted(self.rows.read(image_id),
                          key=lambda k: k.key_property != STANDARD_KEY)
        except store_errors.StoreError as exc:
            LOG.error('Key lifecycle of deleted image %s not handled: the '
                      'mapping database failed: %s', image_id, exc)
            return None
        states = [self._release_one(context, key) for key in keys]
        return states[0] if states else None

    def _release_one(self, context: oslo_context.RequestContext,
                     key: KeyRow) -> str:
        if key.lifecycle_state == KEY_DELETED:
            return KEY_DELETED
        try:
            km_context = self._caller(context)
            state = deletion.release(self.key_manager, km_context, key)
        except KeyLifecycleError as exc:
            LOG.warning('Key %s of deleted image %s not released (%s); '
                        'instance-aware-manage reconcile will retry',
                        key.key_id, key.image_id, exc)
            return self._record_quietly(key, FAILED,
                                        f'{retries.DELETED}: {exc}')
        return self._record_quietly(key, state)

    def _record_quietly(self, key: KeyRow, state: str,
                        error: str | None = None) -> str:
        try:
            self.rows.record(key.image_id, key.key_property, key.key_id,
                             state, error)
        except store_errors.StoreError as exc:
            LOG.error('Key %s of deleted image %s ended %s, but the mapping '
                      'database failed to record it: %s', key.key_id,
                      key.image_id, state, exc)
        return state

    def retry_failed(self, service_context_factory: ServiceContextFactory,
                     *, limit: int | None = None) -> RetrySummary:
        """Retry every ``failed`` key of this registry, oldest first
        (:func:`~instance_aware.keys.retries.retry_failed`).

        :raises StoreError: the mapping database failed.
        """
        return retries.retry_failed(self.rows, self.key_manager,
                                    service_context_factory, limit)


def configuration_problem(conf: cfg.ConfigOpts) -> str | None:
    """Why the key lifecycle cannot work with this configuration
    (``None``: it may, or it is off), checked once at start-up."""
    if not opts.KeyOptions.load(conf).enabled:
        return None
    castellan_key_manager.API(conf)  # registers [key_manager], [barbican]
    return opts.missing_key_manager(conf)
