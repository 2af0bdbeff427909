"""The key lifecycle of encrypted images, through castellan.

The standardized image-encryption spec asks the image service to register
each encrypted image as a *consumer* of its key manager secret, to remove
that consumer when the image is deleted, and to delete the secret when the
image's deletion policy says so (``os_encrypt_key_deletion_policy`` or the
legacy ``cinder_encryption_key_deletion_policy`` = ``on_image_deletion``).
Glance 33 does none of it for ``os_encrypt_*``; for the legacy pair it
deletes the key itself, which stops once our filter strips those
properties.  :class:`KeyLifecycle` takes both over, each pair on its own:
an image naming a secret in each has two consumers, two existence checks
and two deletions, each by its own policy (one ``ia_encryption_keys`` row
per key property).

What the filter calls, and when:

* :meth:`KeyLifecycle.check_readable` before the registry is asked to
  create an image with a key: a missing or foreign secret is the client's
  error (:class:`~.errors.KeyNotAccessible`), an unreachable key manager
  is not (:class:`~.errors.KeyManagerUnavailable`);
* :meth:`KeyLifecycle.on_created` once the registry created it (the
  ``ia_images`` row exists): registers the consumer, raises on failure
  after recording it;
* :meth:`KeyLifecycle.on_deleted` once the registry deleted it: never
  raises, so a key manager problem never blocks an image deletion.

Both record where the image's key stands in ``ia_encryption_keys``
(``lifecycle_state``); failures are ``failed`` with ``attempts`` and
``last_error``, and ``instance-aware-manage reconcile`` finishes them with
:meth:`KeyLifecycle.retry_failed` and a service identity.

Calls for a request act as the caller, as Glance's own key manager calls
do (see :mod:`instance_aware.keys.auth`).  No database transaction is
held open across a key manager call: the row is read, the key manager is
called, then the outcome is written in a new short transaction.

Deployers configure castellan as for Glance (``[key_manager] backend``,
``[barbican] barbican_endpoint``, or ``auth_endpoint`` for a catalog
lookup) and, for the retry path, service credentials in
``[instance_aware_keys]`` (see :mod:`instance_aware.keys.opts`).  With
Barbican's default policy those credentials need the ``admin`` role:
``secret:delete`` allows any admin, but ``secret_consumers:delete`` only
an admin *of the secret's project*, so either grant that or extend the
rule (for example ``... or role:admin``) in Barbican's policy file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from castellan import key_manager as castellan_key_manager
from castellan.key_manager import key_manager as castellan_base
from oslo_config import cfg
from oslo_context import context as oslo_context
from sqlalchemy import orm

from instance_aware import uuids
from instance_aware.keys import auth, errors, opts
from instance_aware.keys.auth import ServiceContextFactory, service_contexts
from instance_aware.keys.errors import (
    ConsumersRemain,
    KeyLifecycleError,
    KeyManagerUnavailable,
    KeyNotAccessible,
)
from instance_aware.keys.opts import list_opts
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store import retry as store_retry
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
NONE = 'none'
CONSUMER_REGISTERED = 'consumer_registered'
CONSUMER_REMOVED = 'consumer_removed'
KEY_DELETED = 'key_deleted'
FAILED = 'failed'

# Deletion policies (``os_encrypt_key_deletion_policy`` and legacy).
ON_IMAGE_DELETION = 'on_image_deletion'
DO_NOT_DELETE = 'do_not_delete'

# The properties that name a secret, each with its own lifecycle row.
STANDARD_KEY = 'os_encrypt_key_id'
LEGACY_KEY = 'cinder_encryption_key_id'

# ``last_error`` starts with the step that failed, so that the retry path
# knows which way to go even before the image row says ``deleted``.
_CREATED = 'on_created'
_DELETED = 'on_deleted'


def consumer(image_id: str) -> dict[str, str]:
    """The consumer an image is registered as (the spec's values)."""
    return {'service': 'image', 'resource_type': 'image',
            'resource_id': image_id}


def _name(entry: Mapping[str, str]) -> str:
    """``service/resource_type/resource_id`` of a consumer."""
    return '/'.join(str(entry.get(k)) for k in
                    ('service', 'resource_type', 'resource_id'))


def _check_key_id(key_id: str) -> None:
    # barbicanclient raises ValueError (not an HTTP error) for a reference
    # that is not a UUID: keep client input out of the "unavailable" path.
    try:
        uuids.canonical(key_id)
    except (ValueError, TypeError, AttributeError):
        raise KeyNotAccessible(f'{key_id!r} is not a key manager secret id',
                               errors.NOT_FOUND) from None


def _failed_rows(registry_id: str) -> sa.Select[Any]:
    """Images of ``registry_id`` with a key in the ``failed`` state."""
    return (
        sa.select(models.Image)
        .join(models.EncryptionKey,
              models.EncryptionKey.image_ref == models.Image.id)
        .where(models.Image.registry_id == registry_id,
               models.EncryptionKey.lifecycle_state == FAILED))


def count_failed(db: Database, registry_id: str) -> int:
    """How many key operations wait for a retry (no key manager needed:
    ``reconcile`` reports them when it cannot retry).

    :raises StoreError: the mapping database failed.
    """
    query = sa.select(sa.func.count()).select_from(
        _failed_rows(registry_id).subquery())
    with db.session() as session:
        return int(session.scalar(query) or 0)


@dataclasses.dataclass
class RetrySummary:
    """What :meth:`KeyLifecycle.retry_failed` did.

    ``states`` counts the state each retried row ended in.
    """

    retried: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    states: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Key:
    """One row, read before a key manager call."""

    image_id: str
    project_id: str | None
    image_state: str
    key_property: str
    key_id: str
    deletion_policy: str | None
    lifecycle_state: str
    last_error: str | None


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

    # -- calls made for a request ----------------------------------------

    def _caller(self, context: oslo_context.RequestContext
                ) -> oslo_context.RequestContext:
        """The castellan context acting as the caller.

        :raises KeyManagerNotConfigured: see :attr:`missing`.
        """
        if self.missing is not None:
            raise errors.KeyManagerNotConfigured(self.missing)
        return auth.caller_context(self.conf, context)

    def check_readable(self, context: oslo_context.RequestContext,
                       key_id: str) -> None:
        """Check that the caller can see secret ``key_id`` (its metadata).

        :raises KeyNotAccessible: no such secret, or not the caller's
            (``reason`` says which; tell the client neither).
        :raises KeyManagerUnavailable: the key manager could not answer.
        :raises KeyManagerNotConfigured: the deployment has none.
        """
        _check_key_id(key_id)
        km_context = self._caller(context)
        try:
            self.key_manager.get(km_context, key_id, metadata_only=True)
        except Exception as exc:
            raise errors.classify(exc, key_id) from exc

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
        _check_key_id(key_id)
        replaced = self._attach(image_id, key_property, key_id,
                                deletion_policy)
        try:
            km_context = self._caller(context)
            if replaced is not None:
                self._release_quietly(km_context, replaced, image_id)
            state = self._register(km_context, key_id, image_id)
        except KeyLifecycleError as exc:
            self._record(image_id, key_property, key_id, FAILED,
                         f'{_CREATED}: {exc}')
            raise
        self._record(image_id, key_property, key_id, state)
        return state

    def on_detached(self, context: oslo_context.RequestContext,
                    image_id: str, key_property: str) -> None:
        """The image no longer names a key in ``key_property``: forget
        the row and drop the image's consumer, never the secret (its
        policy applied to the image that named it).  Never raises."""
        try:
            gone = self._detach(image_id, key_property)
        except store_errors.StoreError as exc:
            LOG.error('Key %s of image %s not detached: the mapping '
                      'database failed: %s', key_property, image_id, exc)
            return
        if gone is None:
            return
        try:
            km_context = auth.caller_context(self.conf, context)
        except KeyLifecycleError as exc:
            LOG.warning('Consumer of image %s on secret %s not removed: '
                        '%s', image_id, gone.key_id, exc)
            return
        self._release_quietly(km_context, gone, image_id)

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
            keys = self._read(image_id)
        except store_errors.StoreError as exc:
            LOG.error('Key lifecycle of deleted image %s not handled: the '
                      'mapping database failed: %s', image_id, exc)
            return None
        states = [self._release_one(context, key) for key in keys]
        return states[0] if states else None

    def _release_one(self, context: oslo_context.RequestContext,
                     key: _Key) -> str:
        if key.lifecycle_state == KEY_DELETED:
            return KEY_DELETED
        try:
            km_context = self._caller(context)
            state = self._release(km_context, key)
        except KeyLifecycleError as exc:
            LOG.warning('Key %s of deleted image %s not released (%s); '
                        'instance-aware-manage reconcile will retry',
                        key.key_id, key.image_id, exc)
            return self._record_quietly(key, FAILED, f'{_DELETED}: {exc}')
        return self._record_quietly(key, state)

    # -- reconcile -------------------------------------------------------

    def retry_failed(self, service_context_factory: ServiceContextFactory,
                     *, limit: int | None = None) -> RetrySummary:
        """Retry every ``failed`` key of this registry, oldest first.

        ``service_context_factory(project_id)`` gives the identity to act
        as (:func:`~instance_aware.keys.auth.service_contexts`): there is
        no caller here.  A key whose image was deleted is released; one
        whose image is active is registered again; one whose image is
        still ``pending`` is skipped (``reconcile`` settles it first).

        :raises StoreError: the mapping database failed.
        """
        summary = RetrySummary()
        for key in self._failed(limit):
            deleting = (key.image_state == models.DELETED
                        or (key.last_error or '').startswith(_DELETED))
            if not deleting and key.image_state != models.ACTIVE:
                summary.skipped += 1
                continue
            summary.retried += 1
            try:
                km_context = service_context_factory(key.project_id)
                if deleting:
                    state = self._release(km_context, key)
                else:
                    state = self._register(km_context, key.key_id,
                                           key.image_id)
            except KeyLifecycleError as exc:
                step = _DELETED if deleting else _CREATED
                LOG.warning('Retry for key %s of image %s failed: %s',
                            key.key_id, key.image_id, exc)
                state = FAILED
                self._record(key.image_id, key.key_property, key.key_id,
                             FAILED, f'{step}: {exc}', only_if=FAILED)
                summary.failed += 1
            else:
                self._record(key.image_id, key.key_property, key.key_id,
                             state, only_if=FAILED)
                summary.succeeded += 1
            summary.states[state] = summary.states.get(state, 0) + 1
        return summary

    # -- key manager steps -----------------------------------------------

    def _register(self, km_context: oslo_context.RequestContext,
                  key_id: str, image_id: str) -> str:
        try:
            self.key_manager.add_consumer(km_context, key_id,
                                          consumer(image_id))
        except NotImplementedError:
            LOG.debug('Key manager backend has no secret consumers')
            return NONE
        except Exception as exc:
            raise errors.classify(exc, key_id) from exc
        return CONSUMER_REGISTERED

    def _release(self, km_context: oslo_context.RequestContext,
                 key: _Key) -> str:
        """Remove the consumer, delete per policy; the resulting state."""
        mine = consumer(key.image_id)
        try:
            self.key_manager.remove_consumer(km_context, key.key_id, mine)
        except NotImplementedError:
            pass
        except Exception as exc:
            error = errors.classify(exc, key.key_id)
            # 404: the consumer (or the whole secret) is already gone.
            if not (isinstance(error, KeyNotAccessible)
                    and error.reason == errors.NOT_FOUND):
                raise error from exc
        if key.deletion_policy != ON_IMAGE_DELETION:
            return CONSUMER_REMOVED
        others: list[str] = []
        try:
            # Ask first: castellan and barbicanclient log a refused delete
            # as an error, and the spec wants a warning.
            secret = self.key_manager.get(km_context, key.key_id,
                                          metadata_only=True)
            others = [_name(c) for c in secret.consumers
                      if _name(c) != _name(mine)]
            if not others:
                self.key_manager.delete(km_context, key.key_id)
        except Exception as exc:
            error = errors.classify(exc, key.key_id)
            if isinstance(error, ConsumersRemain):
                others = ['a consumer added meanwhile']
            elif (isinstance(error, KeyNotAccessible)
                    and error.reason == errors.NOT_FOUND):
                LOG.info('Secret %s of deleted image %s was already gone',
                         key.key_id, key.image_id)
                return KEY_DELETED
            else:
                raise error from exc
        if others:
            LOG.warning('Secret %s of deleted image %s kept despite %s: '
                        'still used by %s', key.key_id, key.image_id,
                        ON_IMAGE_DELETION, ', '.join(others))
            return CONSUMER_REMOVED
        LOG.info('Secret %s of deleted image %s deleted (%s)', key.key_id,
                 key.image_id, ON_IMAGE_DELETION)
        return KEY_DELETED

    def _release_quietly(self, km_context: oslo_context.RequestContext,
                         key: _Key, image_id: str) -> None:
        # The image's key was replaced: drop our consumer of the old one,
        # never its secret (the new key's owner did not ask for that).
        try:
            self.key_manager.remove_consumer(km_context, key.key_id,
                                             consumer(image_id))
        except Exception as exc:
            LOG.warning('Consumer of image %s on replaced secret %s not '
                        'removed: %s', image_id, key.key_id, exc)

    # -- store -----------------------------------------------------------

    def _image(self, session: orm.Session, image_id: str,
               lock: bool = False) -> models.Image | None:
        query = sa.select(models.Image).where(
            models.Image.registry_id == self.registry_id,
            models.Image.image_id == image_id)
        if lock:
            query = query.with_for_update()
        image: models.Image | None = session.scalars(query).one_or_none()
        return image

    @staticmethod
    def _key(image: models.Image, row: models.EncryptionKey) -> _Key:
        return _Key(image.image_id, image.project_id, image.state,
                    row.key_property, row.key_id, row.deletion_policy,
                    row.lifecycle_state, row.last_error)

    @staticmethod
    def _row(image: models.Image,
             key_property: str) -> models.EncryptionKey | None:
        return next((row for row in image.encryption_keys
                     if row.key_property == key_property), None)

    def _read(self, image_id: str) -> list[_Key]:
        """The image's keys, the standard pair's first."""
        with self.db.session() as session:
            image = self._image(session, image_id)
            if image is None:
                return []
            rows = sorted(image.encryption_keys,
                          key=lambda r: r.key_property != STANDARD_KEY)
            return [self._key(image, row) for row in rows]

    @store_retry.transaction
    def _attach(self, image_id: str, key_property: str, key_id: str,
                deletion_policy: str | None) -> _Key | None:
        """Write key and policy on the property's row; the replaced key,
        if its consumer is ours to drop."""
        with self.db.session(write=True) as session:
            image = self._image(session, image_id, lock=True)
            if image is None:
                raise LookupError(f'no record of image {image_id} in '
                                  f'registry {self.registry_id}')
            row = self._row(image, key_property)
            previous = None if row is None else self._key(image, row)
            if row is None:
                row = models.EncryptionKey(key_property=key_property,
                                           key_id=key_id,
                                           lifecycle_state=NONE, attempts=0)
                image.encryption_keys.append(row)
            elif row.key_id != key_id:
                row.lifecycle_state = NONE
                row.last_error = None
            row.key_id = key_id
            row.deletion_policy = deletion_policy
            shared = {r.key_id for r in image.encryption_keys if r is not row}
        if previous is not None and previous.key_id != key_id and (
                previous.lifecycle_state == CONSUMER_REGISTERED
                and previous.key_id not in shared):
            return previous
        return None

    @store_retry.transaction
    def _detach(self, image_id: str, key_property: str) -> _Key | None:
        """Remove the property's row; the key, if its consumer is ours to
        drop (registered, and not the other pair's secret too)."""
        with self.db.session(write=True) as session:
            image = self._image(session, image_id, lock=True)
            row = None if image is None else self._row(image, key_property)
            if image is None or row is None:
                return None
            gone = self._key(image, row)
            image.encryption_keys.remove(row)
            shared = {r.key_id for r in image.encryption_keys}
        if gone.lifecycle_state != CONSUMER_REGISTERED or (
                gone.key_id in shared):
            return None
        return gone

    @store_retry.transaction
    def _record(self, image_id: str, key_property: str, key_id: str,
                state: str, error: str | None = None, *,
                only_if: str | None = None) -> None:
        """Write an outcome, unless the row changed meanwhile."""
        with self.db.session(write=True) as session:
            image = self._image(session, image_id, lock=True)
            row = None if image is None else self._row(image, key_property)
            if row is None or row.key_id != key_id:
                return
            if only_if is not None and row.lifecycle_state != only_if:
                return
            row.lifecycle_state = state
            if error is None:
                row.last_error = None
            else:
                row.attempts = (row.attempts or 0) + 1
                row.last_error = error

    def _record_quietly(self, key: _Key, state: str,
                        error: str | None = None) -> str:
        try:
            self._record(key.image_id, key.key_property, key.key_id, state,
                         error)
        except store_errors.StoreError as exc:
            LOG.error('Key %s of deleted image %s ended %s, but the mapping '
                      'database failed to record it: %s', key.key_id,
                      key.image_id, state, exc)
        return state

    def _failed(self, limit: int | None) -> list[_Key]:
        query = (
            _failed_rows(self.registry_id)
            .add_columns(models.EncryptionKey)
            .order_by(models.EncryptionKey.updated_at,
                      models.EncryptionKey.id))
        if limit is not None:
            query = query.limit(limit)
        with self.db.session() as session:
            return [self._key(image, row)
                    for image, row in session.execute(query)]


def configuration_problem(conf: cfg.ConfigOpts) -> str | None:
    """Why the key lifecycle cannot work with this configuration
    (``None``: it may, or it is off), checked once at start-up."""
    if not opts.KeyOptions.load(conf).enabled:
        return None
    castellan_key_manager.API(conf)  # registers [key_manager], [barbican]
    return opts.missing_key_manager(conf)
