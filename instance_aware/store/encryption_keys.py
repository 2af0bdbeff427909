"""Rows of ``ia_encryption_keys``: every query the key lifecycle makes.

:mod:`instance_aware.keys` decides what to do with a key manager; it
reads and records where each key stands only through :class:`KeyRows`.
Each method is one short transaction: none is held open across a key
manager call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from instance_aware.store import models, retry
from instance_aware.store.scoped import ScopedRows


@dataclasses.dataclass(frozen=True)
class KeyRow:
    """One key row and its image, read before a key manager call."""

    image_id: str
    project_id: str | None
    image_state: str
    key_property: str
    key_id: str
    deletion_policy: str | None
    lifecycle_state: str
    last_error: str | None

    @classmethod
    def of(cls, image: models.Image, row: models.EncryptionKey) -> KeyRow:
        return cls(image.image_id, image.project_id, image.state,
                   row.key_property, row.key_id, row.deletion_policy,
                   row.lifecycle_state, row.last_error)


@dataclasses.dataclass(frozen=True)
class Change:
    """What a write of a key row replaced or removed.

    ``previous`` is the row as it was (``None``: there was none);
    ``others`` the key ids the image's other rows still name.
    """

    previous: KeyRow | None
    others: frozenset[str]


def _row(image: models.Image,
         key_property: str) -> models.EncryptionKey | None:
    return next((row for row in image.encryption_keys
                 if row.key_property == key_property), None)


def _failed_rows(registry_id: str) -> sa.Select[Any]:
    """Images of ``registry_id`` with a key in the ``failed`` state."""
    return (
        sa.select(models.Image)
        .join(models.EncryptionKey,
              models.EncryptionKey.image_ref == models.Image.id)
        .where(models.Image.registry_id == registry_id,
               models.EncryptionKey.lifecycle_state == models.KEY_FAILED))


class KeyRows(ScopedRows):
    """The key rows of one registry's images."""

    def read(self, image_id: str) -> list[KeyRow]:
        """The image's key rows (none if the image has no row)."""
        with self.db.session() as session:
            image = self._get(session, image_id)
            if image is None:
                return []
            return [KeyRow.of(image, row) for row in image.encryption_keys]

    @retry.transaction
    def attach(self, image_id: str, key_property: str, key_id: str,
               deletion_policy: str | None) -> Change:
        """Write key and policy on the property's row (a new key starts
        over at ``none``).

        :raises LookupError: the image has no row.
        """
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            if image is None:
                raise LookupError(f'no record of image {image_id} in '
                                  f'registry {self.registry_id}')
            row = _row(image, key_property)
            previous = None if row is None else KeyRow.of(image, row)
            if row is None:
                row = models.EncryptionKey(key_property=key_property,
                                           key_id=key_id,
                                           lifecycle_state=models.KEY_NONE,
                                           attempts=0)
                image.encryption_keys.append(row)
            elif row.key_id != key_id:
                row.lifecycle_state = models.KEY_NONE
                row.last_error = None
            row.key_id = key_id
            row.deletion_policy = deletion_policy
            others = frozenset(r.key_id for r in image.encryption_keys
                               if r is not row)
        return Change(previous, others)

    @retry.transaction
    def detach(self, image_id: str, key_property: str) -> Change:
        """Remove the property's row, if there is one."""
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            row = None if image is None else _row(image, key_property)
            if image is None or row is None:
                return Change(None, frozenset())
            gone = KeyRow.of(image, row)
            image.encryption_keys.remove(row)
            others = frozenset(r.key_id for r in image.encryption_keys)
        return Change(gone, others)

    @retry.transaction
    def record(self, image_id: str, key_property: str, key_id: str,
               state: str, error: str | None = None, *,
               only_if: str | None = None) -> None:
        """Write an outcome, unless the row changed meanwhile (another
        key, or a state other than ``only_if``); an error counts an
        attempt."""
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            row = None if image is None else _row(image, key_property)
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

    def failed(self, limit: int | None = None) -> list[KeyRow]:
        """Rows in the ``failed`` state, least recently updated first."""
        query = (
            _failed_rows(self.registry_id)
            .add_columns(models.EncryptionKey)
            .order_by(models.EncryptionKey.updated_at,
                      models.EncryptionKey.id))
        if limit is not None:
            query = query.limit(limit)
        with self.db.session() as session:
            return [KeyRow.of(image, row)
                    for image, row in session.execute(query)]

    def count_failed(self) -> int:
        """How many rows are in the ``failed`` state."""
        query = sa.select(sa.func.count()).select_from(
            _failed_rows(self.registry_id).subquery())
        with self.db.session() as session:
            return int(session.scalar(query) or 0)
