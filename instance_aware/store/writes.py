"""Writes of captured properties, one short transaction each.

The write protocol that keeps the store and the registry consistent:

* create: :meth:`Writes.begin` writes the image row as ``pending`` with
  the captured values *before* the registry is called; after the
  registry's answer, :meth:`Writes.commit` makes it ``active`` or
  :meth:`Writes.abort` removes what this request added.  A crash in
  between leaves a ``pending`` row that ``reconcile`` settles.
* update: :meth:`Writes.replace` writes the new values after the registry
  accepted the rest of the patch.
* delete: :meth:`Writes.mark_deleted` keeps the rows as history.

Each write is one transaction that reads, checks and writes; when the
database rolls it back to break a deadlock, it is re-run whole
(:func:`instance_aware.store.retry.transaction`).

Several filters (concerns) may attach values to the same image row within
one request; each only touches its own concern's property rows.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from instance_aware.store import errors, models, retry
from instance_aware.store.answers import RelationFields
from instance_aware.store.scoped import ScopedRows


class Writes(ScopedRows):
    """Create, update, delete and abort of captured properties."""

    @retry.transaction
    def begin(self, image_id: str, project_id: str | None, concern: str,
              values: Mapping[str, str],
              relation: RelationFields | None = None,
              joining: bool = False) -> None:
        """Write ``values`` as pending before the registry creates the image.

        ``joining`` means another filter of this request already began the
        row; otherwise an existing row for the id is a conflict (the
        registry would refuse the duplicate id too).  A new row is a few
        plain INSERTs, not an ORM flush: every create through the stack
        waits for it.
        """
        if not joining:
            try:
                self._insert(image_id, project_id, concern, values, relation)
            except errors.LostRace:
                raise
            except errors.Conflict as exc:
                # The unique constraint refused a second row of the id.
                raise errors.Conflict(
                    f'image {image_id} already has a record') from exc
            return
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            if image is None:
                image = models.Image(registry_id=self.registry_id,
                                     image_id=image_id,
                                     project_id=project_id,
                                     state=models.PENDING)
                session.add(image)
            elif image.state != models.PENDING:
                raise errors.Conflict(
                    f'image {image_id} already has a record')
            self._set_values(session, image, concern, values, relation)

    def _insert(self, image_id: str, project_id: str | None, concern: str,
                values: Mapping[str, str],
                relation: RelationFields | None) -> None:
        with self.db.writer() as connection:
            key = connection.execute(sa.insert(models.Image).values(
                registry_id=self.registry_id, image_id=image_id,
                project_id=project_id, state=models.PENDING)
            ).inserted_primary_key
            if key is None:  # pragma: no cover - every backend returns it
                raise errors.StoreError(f'no row id for image {image_id}')
            if values:
                connection.execute(sa.insert(models.Property), [
                    {'image_ref': key[0], 'concern': concern, 'name': name,
                     'value': value,
                     'value_index': value[:models.INDEXED_VALUE_LENGTH]}
                    for name, value in values.items()])
            if concern == models.INSTANCE and relation is not None:
                connection.execute(sa.insert(models.Relation).values(
                    image_ref=key[0], **dataclasses.asdict(relation)))

    @retry.transaction
    def commit(self, image_id: str, concern: str, project_id: str | None,
               image_created_at: datetime.datetime | None) -> None:
        """The registry created the image: make the row active (one
        UPDATE; nothing if the row is gone)."""
        changes: dict[str, Any] = {'state': models.ACTIVE,
                                   'image_created_at': image_created_at}
        if project_id:
            changes['project_id'] = project_id
        with self.db.writer() as connection:
            connection.execute(
                sa.update(models.Image).where(*self._one(image_id)).values(
                    **changes))

    @retry.transaction
    def abort(self, image_id: str, concern: str) -> None:
        """The registry refused: remove what this concern began, and the
        row once nothing hangs on it (:meth:`models.Image.holds_nothing`)."""
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            if image is None or image.state != models.PENDING:
                return
            for prop in [p for p in image.properties
                         if p.concern == concern]:
                image.properties.remove(prop)
            if concern == models.INSTANCE:
                image.relation = None
            if image.holds_nothing():
                session.delete(image)

    @retry.transaction
    def replace(self, image_id: str, concern: str,
                project_id: str | None, values: Mapping[str, str],
                relation: RelationFields | None,
                image_created_at: datetime.datetime | None) -> None:
        """Store the values a successful update left (active row).

        A row a concurrent delete marked in the meantime stays deleted
        (the registry never brings an image id back), with these values
        as its history.
        """
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            if image is None:
                image = models.Image(registry_id=self.registry_id,
                                     image_id=image_id)
                session.add(image)
            if image.state != models.DELETED:
                image.state = models.ACTIVE
                image.deleted_at = None
            image.project_id = project_id or image.project_id
            image.image_created_at = (image_created_at
                                      or image.image_created_at)
            self._set_values(session, image, concern, values, relation)

    @retry.transaction
    def move(self, image_id: str, project_id: str) -> None:
        """The registry gave the image to another project."""
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            if image is not None and image.state == models.ACTIVE:
                image.project_id = project_id

    @retry.transaction
    def mark_deleted(self, image_id: str) -> bool:
        """The registry deleted the image: keep the row as history.

        ``True`` if this call marked it (one UPDATE; a row already marked
        or missing is left alone).
        """
        with self.db.writer() as connection:
            marked = connection.execute(
                sa.update(models.Image).where(
                    *self._one(image_id),
                    models.Image.state != models.DELETED).values(
                    state=models.DELETED, deleted_at=models.utcnow()))
            return bool(marked.rowcount)

    def _set_values(self, session: orm.Session, image: models.Image,
                    concern: str, values: Mapping[str, str],
                    relation: RelationFields | None) -> None:
        existing = {p.name: p for p in image.properties
                    if p.concern == concern}
        for name, prop in existing.items():
            if name not in values:
                image.properties.remove(prop)
        for name, value in values.items():
            found = existing.get(name)
            if found is None:
                image.properties.append(models.Property(
                    concern=concern, name=name, value=value,
                    value_index=value[:models.INDEXED_VALUE_LENGTH]))
            else:
                found.value = value
                found.value_index = value[:models.INDEXED_VALUE_LENGTH]
        if concern != models.INSTANCE:
            return
        if relation is None:
            image.relation = None
            return
        row = image.relation or models.Relation()
        row.instance_uuid = relation.instance_uuid
        row.installation_uuid = relation.installation_uuid
        row.image_type = relation.image_type
        row.backup_type = relation.backup_type
        row.trusted = relation.trusted
        row.asserted_by = relation.asserted_by
        image.relation = row
        session.flush()
