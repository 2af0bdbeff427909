"""The relation index and the query API on it.

``ia_relations`` holds, per image, the instance it came from, its Nova
installation and its image and backup types, indexed by instance
(``ix_ia_relations_instance``).  :class:`Relations` answers the query API
from it (:mod:`instance_aware.api.instances`); filtered lists on the same
keys use its clauses too (:mod:`instance_aware.store.matching`).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any, TypeVar

import sqlalchemy as sa

from instance_aware.store import models
from instance_aware.store.answers import Related, RelationFields
from instance_aware.store.scoped import ScopedRows

SelectT = TypeVar('SelectT', bound='sa.Select[*tuple[Any, ...]]')

#: Captured keys held by ``ia_relations``, and its column for each.
RELATION_COLUMNS = {
    'instance_uuid': models.Relation.instance_uuid,
    'nova_installation_uuid': models.Relation.installation_uuid,
    'image_type': models.Relation.image_type,
    'backup_type': models.Relation.backup_type,
}
#: Relation keys kept in canonical UUID form.
UUID_KEYS = ('instance_uuid', 'nova_installation_uuid')


def related_refs(names: tuple[str, ...]) -> sa.Select[int]:
    """Row ids of the images whose relation has the bound values.

    Used as an ``IN`` subquery so the relation index drives: as a join,
    SQLite's planner (no value statistics) starts from the project index
    instead, a scan of most of the table.
    """
    return sa.select(models.Relation.image_ref).where(
        *[RELATION_COLUMNS[name] == sa.bindparam(f'relation_{name}')
          for name in names])


def scoped(query: SelectT, is_scoped: bool) -> SelectT:
    """``query`` limited to the bound ``projects``, if ``is_scoped``."""
    if not is_scoped:
        return query
    return query.where(models.Image.project_id.in_(
        sa.bindparam('projects', expanding=True)))


#: Newest first, as the query API orders: the registry's creation time,
#: or the row's for an image the registry has not confirmed yet.
_NEWEST = sa.func.coalesce(models.Image.image_created_at,
                           models.Image.created_at)


def _instance_images(names: tuple[str, ...], is_scoped: bool
                     ) -> sa.Select[*tuple[Any, ...]]:
    """The images related to an instance (query API), driven by the
    instance index whatever the planner thinks of the project and state
    indexes (SQLite keeps no value statistics)."""
    return scoped(sa.select(
        models.Image.id, models.Image.image_id, models.Image.project_id,
        models.Image.state, _NEWEST, models.Image.deleted_at).where(
        models.Image.id.in_(related_refs(names)),
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.state.in_(sa.bindparam('states', expanding=True))),
        is_scoped)


@functools.lru_cache(maxsize=64)
def _instance_anchor_statement(names: tuple[str, ...], is_scoped: bool
                               ) -> sa.Select[*tuple[Any, ...]]:
    """The query API's ``marker`` image, if it is among the answers."""
    return _instance_images(names, is_scoped).where(
        models.Image.image_id == sa.bindparam('marker'))


@functools.lru_cache(maxsize=64)
def _instance_page_statement(names: tuple[str, ...], is_scoped: bool,
                             after_marker: bool
                             ) -> sa.Select[*tuple[Any, ...]]:
    """One page of the query API; built once per shape, so a request
    binds values instead of building and compiling a statement."""
    query = _instance_images(names, is_scoped)
    newest = _NEWEST
    if after_marker:
        created = sa.bindparam('anchor_created',
                               type_=models.Image.created_at.type)
        query = query.where(sa.or_(
            newest < created,
            sa.and_(newest == created,
                    models.Image.id < sa.bindparam('anchor_ref'))))
    return query.order_by(newest.desc(), models.Image.id.desc()).limit(
        sa.bindparam('limit', type_=sa.Integer))


#: Relation and instance keys of some images (by row id), for the query
#: API's page.
_RELATIONS_ON = sa.select(
    models.Relation.image_ref, models.Relation.instance_uuid,
    models.Relation.installation_uuid, models.Relation.image_type,
    models.Relation.backup_type, models.Relation.trusted,
    models.Relation.asserted_by, models.Property.name,
    models.Property.value).outerjoin(
    models.Property, sa.and_(
        models.Property.image_ref == models.Relation.image_ref,
        models.Property.concern == models.INSTANCE)).where(
    models.Relation.image_ref.in_(sa.bindparam('refs', expanding=True)))


class Relations(ScopedRows):
    """The query API's reads: one image's relation, an instance's images."""

    def related(self, image_id: str) -> Related | None:
        """The relation of one image in any state but pending."""
        with self.db.session() as session:
            image = self._get(session, image_id)
            if image is None or image.relation is None or (
                    image.state == models.PENDING):
                return None
            return Related.of(image, self.registry_id)

    def of_instance(self, instance_uuid: str, projects: Collection[str] | None,
                    *, image_type: str | None = None,
                    backup_type: str | None = None,
                    installation_uuid: str | None = None,
                    include_deleted: bool = False, limit: int = 25,
                    marker: str | None = None) -> list[Related]:
        """Images related to an instance, newest first (query API).

        Served by ``ix_ia_relations_instance``; ``marker`` is the image id
        of the last entry of the previous page.  The registry's
        ``created_at`` has whole seconds: images of the same second are
        ordered by when their row was written (the row id), which for
        creates through the stack is their creation order.
        """
        wanted = {'instance_uuid': instance_uuid, 'image_type': image_type,
                  'backup_type': backup_type,
                  'nova_installation_uuid': installation_uuid}
        names = tuple(name for name, value in wanted.items()
                      if value is not None)
        params: dict[str, Any] = {
            f'relation_{name}': wanted[name] for name in names}
        params.update(registry_id=self.registry_id, limit=limit,
                      states=[models.ACTIVE] + (
                          [models.DELETED] if include_deleted else []))
        if projects is not None:
            params['projects'] = list(projects)
        is_scoped = projects is not None
        # Plain statements built once per shape, no ORM session: the page,
        # then the relations and keys of its images in one more (this is
        # the query API's whole cost).
        with self.db.reader() as connection:
            if marker is not None:
                anchor = connection.execute(
                    _instance_anchor_statement(names, is_scoped),
                    {**params, 'marker': marker}).first()
                if anchor is None:
                    raise LookupError(marker)
                params.update(anchor_ref=anchor[0], anchor_created=anchor[4])
            page = connection.execute(
                _instance_page_statement(names, is_scoped,
                                         marker is not None),
                params).all()
            details = self._relations_on(connection, [row[0] for row in page])
        return [Related(image_id=image_id, registry_id=self.registry_id,
                        project_id=project_id, state=state,
                        properties=details[ref][1],
                        relation=details[ref][0], created_at=created,
                        deleted_at=deleted)
                for ref, image_id, project_id, state, created, deleted
                in page]

    @staticmethod
    def _relations_on(connection: sa.Connection, refs: list[int]
                      ) -> dict[int, tuple[RelationFields, dict[str, str]]]:
        """Relation and instance keys of the images with row ids
        ``refs`` (each has a relation: they were found through it)."""
        if not refs:
            return {}
        found: dict[int, tuple[RelationFields, dict[str, str]]] = {}
        rows = connection.execute(_RELATIONS_ON, {'refs': refs})
        for (ref, instance, installation, image_type, backup_type, trusted,
             asserted_by, name, value) in rows:
            entry = found.get(ref)
            if entry is None:
                entry = found[ref] = (RelationFields(
                    instance, installation, image_type, backup_type,
                    bool(trusted), asserted_by), {})
            if name is not None:
                entry[1][name] = value
        return found
