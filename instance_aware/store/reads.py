"""Reads of single images' records: the hot path of every show and list.

:meth:`Reads.values_of` gives the captured keys back on every show and
list, so its fixed cost is the stack's: it runs on the driver's cursor
(:mod:`instance_aware.store.direct`).  :meth:`Reads.snapshot`, read before
every patch and delete, is one plain Core statement.  :meth:`Reads.load`
and :meth:`Reads.get`, for rarer callers, load ORM rows.  The benchmarks
page has the figures behind these choices.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from instance_aware.store import direct, models
from instance_aware.store.answers import (
    RelationFields,
    Snapshot,
    Stored,
    stored,
)
from instance_aware.store.scoped import ScopedRows

#: Ids per statement of :meth:`Reads.values_of` and :meth:`Reads.load`.
VALUES_BATCH = 500


def _values_statement(count: int) -> direct.Statement:
    """Every concern's values of ``count`` images (bound ``image_id_N``)."""
    return sa.select(
        models.Image.image_id, models.Property.concern,
        models.Property.name, models.Property.value).join(
        models.Property, models.Property.image_ref == models.Image.id).where(
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.image_id.in_([sa.bindparam(f'image_id_{index}')
                                   for index in range(count)]))


#: One statement per batch size, rendered once per dialect.
_VALUES_OF = direct.Shapes(_values_statement)

#: One image row with all its properties and its relation
#: (see :meth:`Reads.snapshot`).
_SNAPSHOT = sa.select(
    models.Image.image_id, models.Image.project_id, models.Image.state,
    models.Image.image_created_at, models.Image.deleted_at,
    models.Property.concern, models.Property.name, models.Property.value,
    models.Relation.id.label('relation_ref'), models.Relation.instance_uuid,
    models.Relation.installation_uuid, models.Relation.image_type,
    models.Relation.backup_type, models.Relation.trusted,
    models.Relation.asserted_by).outerjoin(
    models.Property, models.Property.image_ref == models.Image.id).outerjoin(
    models.Relation, models.Relation.image_ref == models.Image.id).where(
    models.Image.registry_id == sa.bindparam('registry_id'),
    models.Image.image_id == sa.bindparam('image_id'))


class Reads(ScopedRows):
    """Records of given images: values, snapshots, stored concerns."""

    def load(self, image_ids: Collection[str], concern: str,
             states: Collection[str] = (models.ACTIVE,)
             ) -> dict[str, Stored]:
        """Stored values of ``image_ids`` (one query, any batch size)."""
        if not image_ids:
            return {}
        found: dict[str, Stored] = {}
        ids = list(dict.fromkeys(image_ids))
        with self.db.session() as session:
            for start in range(0, len(ids), VALUES_BATCH):
                # States are checked here, not in SQL: a planner without
                # statistics would pick the state index (most rows are
                # active) over the unique (registry, image id) one.
                query = self._select(ids[start:start + VALUES_BATCH])
                for image in session.scalars(query):
                    if image.state in states:
                        found[image.image_id] = stored(image, concern)
        return found

    def values_of(self, image_ids: Collection[str]
                  ) -> dict[str, dict[str, dict[str, str]]]:
        """Values of ``image_ids``: image id -> concern -> values.

        What giving keys back on every show and list needs, for every
        concern at once: one statement per :data:`VALUES_BATCH` ids on
        the driver's cursor (:mod:`instance_aware.store.direct`), no ORM
        and no SQLAlchemy execution machinery (this runs on every read
        request, so its fixed cost is the stack's).

        Rows in every state: it is for images the registry has just
        returned, and the registry decides which images exist.  A row
        still pending (the create is being committed) or just marked
        deleted (a delete finished while the answer was built) holds the
        values the image has in that answer, as bare Glance would show
        them.
        """
        found: dict[str, dict[str, dict[str, str]]] = {}
        ids = list(dict.fromkeys(image_ids))
        for start in range(0, len(ids), VALUES_BATCH):
            batch = ids[start:start + VALUES_BATCH]
            values = {f'image_id_{index}': image_id
                      for index, image_id in enumerate(batch)}
            values['registry_id'] = self.registry_id
            for image_id, concern, name, value in self.db.rows(
                    _VALUES_OF, len(batch), values):
                found.setdefault(image_id, {}).setdefault(
                    concern, {})[name] = value
        return found

    def get(self, image_id: str, concern: str) -> Stored | None:
        """Stored values of one image in any state."""
        return self.load([image_id], concern,
                         (models.PENDING, models.ACTIVE,
                          models.DELETED)).get(image_id)

    def snapshot(self, image_id: str) -> Snapshot | None:
        """One image in any state, every concern at once.

        One plain statement (the image row joined with its properties and
        relation), not an ORM load: every patch and delete through the
        stack reads it first.
        """
        with self.db.reader() as connection:
            rows = connection.execute(_SNAPSHOT, {
                'registry_id': self.registry_id,
                'image_id': image_id}).all()
        if not rows:
            return None
        values: dict[str, dict[str, str]] = {}
        for row in rows:
            if row.concern is not None:
                values.setdefault(row.concern, {})[row.name] = row.value
        first = rows[0]
        relation = None if first.relation_ref is None else RelationFields(
            first.instance_uuid, first.installation_uuid, first.image_type,
            first.backup_type, first.trusted, first.asserted_by)
        return Snapshot(
            image_id=first.image_id, project_id=first.project_id,
            state=first.state, values=values, relation=relation,
            image_created_at=first.image_created_at,
            deleted_at=first.deleted_at)
