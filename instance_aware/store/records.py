"""Reads and writes of captured properties, one short transaction each.

The write protocol that keeps the store and the registry consistent:

* create: :meth:`Records.begin` writes the image row as ``pending`` with
  the captured values *before* the registry is called; after the
  registry's answer, :meth:`Records.commit` makes it ``active`` or
  :meth:`Records.abort` removes what this request added.  A crash in
  between leaves a ``pending`` row that ``reconcile`` settles.
* update: :meth:`Records.replace` writes the new values after the registry
  accepted the rest of the patch.
* delete: :meth:`Records.mark_deleted` keeps the rows as history.

Each write is one transaction that reads, checks and writes; when the
database rolls it back to break a deadlock, it is re-run whole
(:func:`instance_aware.store.retry.transaction`).

Several filters (concerns) may attach values to the same image row within
one request; each only touches its own concern's property rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import orm

from instance_aware import uuids
from instance_aware.store import direct, errors, models, retry
from instance_aware.store.engine import Database

SelectT = TypeVar('SelectT', bound='sa.Select[*tuple[Any, ...]]')

#: Ids per statement of :meth:`Records.values_of`.
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
#: (see :meth:`Records.snapshot`).
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


@dataclasses.dataclass(frozen=True)
class RelationFields:
    """The indexed instance relation derived from the instance keys."""

    instance_uuid: str | None
    installation_uuid: str | None
    image_type: str | None
    backup_type: str | None
    trusted: bool
    asserted_by: str | None


@dataclasses.dataclass(frozen=True)
class Stored:
    """What the store holds for one image and one concern."""

    image_id: str
    project_id: str | None
    state: str
    values: dict[str, str]
    relation: RelationFields | None
    image_created_at: datetime.datetime | None
    deleted_at: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One image's record in any state, with every concern's values."""

    image_id: str
    project_id: str | None
    state: str
    values: dict[str, dict[str, str]]
    relation: RelationFields | None
    image_created_at: datetime.datetime | None
    deleted_at: datetime.datetime | None

    def of(self, concern: str) -> Stored:
        """What :meth:`Records.get` answers for ``concern``."""
        return Stored(
            image_id=self.image_id, project_id=self.project_id,
            state=self.state, values=dict(self.values.get(concern, {})),
            relation=self.relation, image_created_at=self.image_created_at,
            deleted_at=self.deleted_at)


def _relation_fields(image: models.Image) -> RelationFields | None:
    r = image.relation
    if r is None:
        return None
    return RelationFields(r.instance_uuid, r.installation_uuid,
                          r.image_type, r.backup_type, r.trusted,
                          r.asserted_by)


def _snapshot(image: models.Image) -> Snapshot:
    values: dict[str, dict[str, str]] = {}
    for prop in image.properties:
        values.setdefault(prop.concern, {})[prop.name] = prop.value
    return Snapshot(
        image_id=image.image_id, project_id=image.project_id,
        state=image.state, values=values, relation=_relation_fields(image),
        image_created_at=image.image_created_at,
        deleted_at=image.deleted_at)


def _stored(image: models.Image, concern: str) -> Stored:
    return _snapshot(image).of(concern)


#: Keys whose values identify few images, most selective first; any other
#: key ranks after these, and the keys with a handful of distinct values
#: (``image_type``, ``backup_type``, ...) last.
SELECTIVITY = ('instance_uuid', 'nova_installation_uuid', 'base_image_ref',
               'user_id', 'owner_id', 'owner_user_name')
_LEAST_SELECTIVE = ('image_state', 'backup_type', 'image_type')


def _rank(name: str) -> tuple[int, int]:
    if name in SELECTIVITY:
        return (0, SELECTIVITY.index(name))
    if name in _LEAST_SELECTIVE:
        return (2, _LEAST_SELECTIVE.index(name))
    return (1, 0)


def _value_equals(prop: Any, index: int, long: bool) -> list[Any]:
    """Conditions for filter ``index`` that use the value index."""
    conditions = [prop.name == sa.bindparam(f'name_{index}'),
                  prop.value_index == sa.bindparam(f'value_index_{index}')]
    if long:  # beyond the indexed prefix: compare the whole value too
        conditions.append(prop.value == sa.bindparam(f'value_{index}'))
    return conditions


#: Most matches whose values :meth:`Records.matching` reads along.
PREFETCH = 200

#: Captured keys held by ``ia_relations``, and its column for each.
RELATION_COLUMNS = {
    'instance_uuid': models.Relation.instance_uuid,
    'nova_installation_uuid': models.Relation.installation_uuid,
    'image_type': models.Relation.image_type,
    'backup_type': models.Relation.backup_type,
}
#: Relation keys kept in canonical UUID form.
UUID_KEYS = ('instance_uuid', 'nova_installation_uuid')


def _by_relation(filters: Mapping[str, str]) -> bool:
    """Whether ``ia_relations`` answers ``filters`` exactly.

    It does for filters on the instance (its index leads with it) and the
    other relation keys; a UUID spelled other than canonically cannot be
    in a relation row, and a value longer than a relation column not
    either: those go the general way.
    """
    return ('instance_uuid' in filters
            and filters.keys() <= RELATION_COLUMNS.keys()
            and all(uuids.is_canonical(filters[key])
                    for key in UUID_KEYS if key in filters)
            and all(len(value) <= RELATION_COLUMNS[key].type.length
                    for key, value in filters.items()))


def _related(names: tuple[str, ...]) -> sa.Select[int]:
    """Row ids of the images whose relation has the bound values.

    Used as an ``IN`` subquery so the relation index drives: as a join,
    SQLite's planner (no value statistics) starts from the project index
    instead, a scan of most of the table (216 ms at a million images
    against 0.03 ms).
    """
    return sa.select(models.Relation.image_ref).where(
        *[RELATION_COLUMNS[name] == sa.bindparam(f'relation_{name}')
          for name in names])


@functools.lru_cache(maxsize=64)
def _relation_statement(names: tuple[str, ...], scoped: bool,
                        descending: bool
                        ) -> sa.Select[*tuple[Any, ...]]:
    """The relation-driven statement of :meth:`Records.matching`.

    Selects, after id and creation time, the stored value of each UUID key
    among ``names`` (in ``names`` order) for the exact comparison.
    """
    uuid_names = [name for name in names if name in UUID_KEYS]
    spellings = [orm.aliased(models.Property) for _name in uuid_names]
    related = _related(names)
    query = sa.select(models.Image.image_id, models.Image.image_created_at,
                      *[prop.value for prop in spellings])
    for prop, name in zip(spellings, uuid_names, strict=True):
        query = query.join(prop, sa.and_(
            prop.image_ref == models.Image.id,
            prop.concern == models.INSTANCE, prop.name == name))
    query = query.where(
        models.Image.id.in_(related),
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.state == models.ACTIVE)
    return _scoped_and_ordered(query, scoped, descending)


@functools.lru_cache(maxsize=64)
def _relation_values_statement(names: tuple[str, ...], scoped: bool,
                               descending: bool
                               ) -> sa.Select[*tuple[Any, ...]]:
    """The relation-driven statement when the values are wanted too.

    One row per stored value of each candidate: id, creation time,
    concern, name, value, in the registry's order, so the rows of one
    image come together.  The exact spellings of the UUID keys are among
    the values, so no property is joined twice, and the answer and the
    keys it gives back come in one round trip.
    """
    related = _related(names)
    query = sa.select(
        models.Image.image_id, models.Image.image_created_at,
        models.Property.concern, models.Property.name,
        models.Property.value).join(
        models.Property, models.Property.image_ref == models.Image.id).where(
        models.Image.id.in_(related),
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.state == models.ACTIVE)
    return _scoped_and_ordered(query, scoped, descending)


def _scoped(query: SelectT, scoped: bool) -> SelectT:
    """``query`` limited to the bound ``projects``, if ``scoped``."""
    if not scoped:
        return query
    return query.where(models.Image.project_id.in_(
        sa.bindparam('projects', expanding=True)))


def _scoped_and_ordered(query: SelectT, scoped: bool,
                        descending: bool) -> SelectT:
    """``query`` limited to the bound ``projects`` (if ``scoped``) and in
    the registry's default order (``created_at``, then ``id``)."""
    query = _scoped(query, scoped)
    order = sa.desc if descending else sa.asc
    return query.order_by(order(models.Image.image_created_at),
                          order(models.Image.image_id))


#: Newest first, as the query API orders: the registry's creation time,
#: or the row's for an image the registry has not confirmed yet.
_NEWEST = sa.func.coalesce(models.Image.image_created_at,
                           models.Image.created_at)


def _instance_images(names: tuple[str, ...], scoped: bool
                     ) -> sa.Select[*tuple[Any, ...]]:
    """The images related to an instance (query API), driven by the
    instance index whatever the planner thinks of the project and state
    indexes (SQLite keeps no value statistics)."""
    return _scoped(sa.select(
        models.Image.id, models.Image.image_id, models.Image.project_id,
        models.Image.state, _NEWEST, models.Image.deleted_at).where(
        models.Image.id.in_(_related(names)),
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.state.in_(sa.bindparam('states', expanding=True))),
        scoped)


@functools.lru_cache(maxsize=64)
def _instance_anchor_statement(names: tuple[str, ...], scoped: bool
                               ) -> sa.Select[*tuple[Any, ...]]:
    """The query API's ``marker`` image, if it is among the answers."""
    return _instance_images(names, scoped).where(
        models.Image.image_id == sa.bindparam('marker'))


@functools.lru_cache(maxsize=64)
def _instance_page_statement(names: tuple[str, ...], scoped: bool,
                             after_marker: bool
                             ) -> sa.Select[*tuple[Any, ...]]:
    """One page of the query API; built once per shape, so a request
    binds values instead of building and compiling a statement."""
    query = _instance_images(names, scoped)
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


@functools.lru_cache(maxsize=128)
def _matching_statement(shape: tuple[bool, ...], scoped: bool,
                        descending: bool
                        ) -> sa.Select[str, datetime.datetime | None]:
    """The statement of :meth:`Records.matching` for one shape of query.

    ``shape`` says, filter by filter (most selective first), whether the
    value is longer than the indexed prefix.  Names and values are bound
    parameters, so a rotation listing reuses one statement (and
    SQLAlchemy's compiled form of it) instead of building a new one on
    every request.
    """
    query = sa.select(models.Image.image_id,
                      models.Image.image_created_at).where(
        models.Image.id.in_(
            sa.select(models.Property.image_ref).where(
                *_value_equals(models.Property, 0, shape[0]))),
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.state == models.ACTIVE)
    for index, long in enumerate(shape[1:], start=1):
        prop = orm.aliased(models.Property)
        query = query.where(sa.exists().where(
            prop.image_ref == models.Image.id,
            *_value_equals(prop, index, long)))
    return _scoped_and_ordered(query, scoped, descending)


class Records:
    """Captured properties of the images of one registry."""

    def __init__(self, db: Database, registry_id: str) -> None:
        self.db = db
        self.registry_id = registry_id

    def _select(self, image_ids: Collection[str]) -> sa.Select[Any]:
        return sa.select(models.Image).where(
            models.Image.registry_id == self.registry_id,
            models.Image.image_id.in_(list(image_ids)))

    def _get(self, session: orm.Session, image_id: str,
             lock: bool = False) -> models.Image | None:
        query = self._select([image_id])
        if lock:
            query = query.with_for_update()
        image: models.Image | None = session.scalars(query).one_or_none()
        return image

    def load(self, image_ids: Collection[str], concern: str,
             states: Collection[str] = (models.ACTIVE,)
             ) -> dict[str, Stored]:
        """Stored values of ``image_ids`` (one query, any batch size)."""
        if not image_ids:
            return {}
        found: dict[str, Stored] = {}
        ids = list(dict.fromkeys(image_ids))
        with self.db.session() as session:
            for start in range(0, len(ids), 500):
                # States are checked here, not in SQL: a planner without
                # statistics would pick the state index (most rows are
                # active) over the unique (registry, image id) one.
                query = self._select(ids[start:start + 500])
                for image in session.scalars(query):
                    if image.state in states:
                        found[image.image_id] = _stored(image, concern)
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

    def _one(self, image_id: str) -> tuple[sa.ColumnElement[bool], ...]:
        """Where-clauses of this registry's row of ``image_id``."""
        return (models.Image.registry_id == self.registry_id,
                models.Image.image_id == image_id)

    @retry.transaction
    def abort(self, image_id: str, concern: str) -> None:
        """The registry refused: remove what this concern began."""
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            if image is None or image.state != models.PENDING:
                return
            for prop in [p for p in image.properties
                         if p.concern == concern]:
                image.properties.remove(prop)
            if concern == models.INSTANCE:
                image.relation = None
            if not image.properties and image.relation is None and (
                    not image.encryption_keys):
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

    def matching(self, filters: Mapping[str, str],
                 projects: Collection[str] | None,
                 descending: bool = True,
                 values: dict[str, dict[str, dict[str, str]]] | None = None
                 ) -> list[tuple[str, datetime.datetime | None]]:
        """Active images whose stored values equal every filter.

        ``projects`` limits the owners (``None``: every project).  Ordered
        as the registry orders by default (``created_at``, then ``id``).
        ``values``, if given, receives :meth:`values_of` the matches when
        there are at most :data:`PREFETCH` of them, read right away (the
        answer gives them back without reading the store again).

        Nova's questions (the instance, its installation, image and backup
        types) are answered from ``ia_relations`` through
        ``ix_ia_relations_instance``: one row per image holds all four, so
        one index lookup finds the candidates whatever the number of
        filters.  The
        relation keeps UUIDs in canonical form, so the stored spelling of
        each UUID key is fetched too and compared exactly, as Glance
        compares strings.  Other filters: the most selective one (by
        :data:`SELECTIVITY`) drives the query through
        ``ix_ia_properties_name_value``, the others are checked per
        candidate.  Left to itself, a planner without value statistics
        (SQLite) may start from ``image_type=backup``, which matches most
        of a cloud's images.
        """
        if _by_relation(filters):
            return self._matching_relations(filters, projects, descending,
                                            values)
        ordered = sorted(filters.items(), key=lambda item: _rank(item[0]))
        shape = tuple(len(value) > models.INDEXED_VALUE_LENGTH
                      for _name, value in ordered)
        params: dict[str, Any] = {'registry_id': self.registry_id}
        for index, (name, value) in enumerate(ordered):
            params[f'name_{index}'] = name
            params[f'value_index_{index}'] = value[
                :models.INDEXED_VALUE_LENGTH]
            params[f'value_{index}'] = value
        if projects is not None:
            params['projects'] = list(projects)
        statement = _matching_statement(shape, projects is not None,
                                        descending)
        with self.db.reader() as connection:
            found = [(row[0], row[1])
                     for row in connection.execute(statement, params)]
        self._prefetch(found, values)
        return found

    def _prefetch(self, found: list[tuple[str, datetime.datetime | None]],
                  values: dict[str, dict[str, dict[str, str]]] | None
                  ) -> None:
        if values is not None and 0 < len(found) <= PREFETCH:
            values.update(self.values_of(
                [image_id for image_id, _ in found]))

    def _matching_relations(self, filters: Mapping[str, str],
                            projects: Collection[str] | None,
                            descending: bool,
                            values: dict[str, dict[str, dict[str, str]]]
                            | None
                            ) -> list[tuple[str, datetime.datetime | None]]:
        names = tuple(sorted(filters))
        params: dict[str, Any] = {'registry_id': self.registry_id}
        params.update({f'relation_{name}': filters[name] for name in names})
        if projects is not None:
            params['projects'] = list(projects)
        uuid_names = [name for name in names if name in UUID_KEYS]
        spelled = [filters[name] for name in uuid_names]
        # MySQL/MariaDB compare strings case-insensitively (their default
        # collation), the general way included: so does this check there.
        fold = self.db.engine.dialect.name in ('mysql', 'mariadb')
        if fold:
            spelled = [value.lower() for value in spelled]

        def exact(stored: list[str | None]) -> bool:
            return [value.lower() if fold and value else value
                    for value in stored] == spelled

        if values is not None:
            return self._matching_relations_with_values(
                _relation_values_statement(names, projects is not None,
                                           descending),
                params, uuid_names, exact, values)
        statement = _relation_statement(names, projects is not None,
                                        descending)
        with self.db.reader() as connection:
            return [(row[0], row[1])
                    for row in connection.execute(statement, params)
                    if exact(list(row[2:]))]

    def _matching_relations_with_values(
            self, statement: sa.Select[*tuple[Any, ...]],
            params: dict[str, Any], uuid_names: list[str],
            exact: Callable[[list[str | None]], bool],
            values: dict[str, dict[str, dict[str, str]]]
            ) -> list[tuple[str, datetime.datetime | None]]:
        """Matches and their values from one statement; ``values``
        receives them when there are at most :data:`PREFETCH`."""
        candidates: list[tuple[str, datetime.datetime | None]] = []
        fetched: dict[str, dict[str, dict[str, str]]] = {}
        with self.db.reader() as connection:
            for image_id, created, concern, name, value in (
                    connection.execute(statement, params)):
                stored = fetched.get(image_id)
                if stored is None:
                    stored = fetched[image_id] = {}
                    candidates.append((image_id, created))
                stored.setdefault(concern, {})[name] = value
        found = []
        for image_id, created in candidates:
            instance = fetched[image_id].get(models.INSTANCE, {})
            if exact([instance.get(name) for name in uuid_names]):
                found.append((image_id, created))
        if 0 < len(found) <= PREFETCH:
            values.update((image_id, fetched[image_id])
                          for image_id, _created in found)
        return found

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
        scoped = projects is not None
        # Plain statements built once per shape, no ORM session: the page,
        # then the relations and keys of its images in one more (this is
        # the query API's whole cost).
        with self.db.reader() as connection:
            if marker is not None:
                anchor = connection.execute(
                    _instance_anchor_statement(names, scoped),
                    {**params, 'marker': marker}).first()
                if anchor is None:
                    raise LookupError(marker)
                params.update(anchor_ref=anchor[0], anchor_created=anchor[4])
            page = connection.execute(
                _instance_page_statement(names, scoped, marker is not None),
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

    # -- reconcile ---------------------------------------------------------

    def pending(self, older_than: datetime.datetime) -> list[str]:
        """Ids of rows left pending since before ``older_than``."""
        query = sa.select(models.Image.image_id).where(
            models.Image.registry_id == self.registry_id,
            models.Image.state == models.PENDING,
            models.Image.updated_at < older_than).order_by(
            models.Image.id)
        with self.db.session() as session:
            return list(session.scalars(query))

    def active_batches(self, size: int) -> Iterator[dict[str, str | None]]:
        """Active rows in batches (image id -> the project the row names),
        by keyset paging."""
        after = 0
        while True:
            query = sa.select(models.Image.id, models.Image.image_id,
                              models.Image.project_id).where(
                models.Image.registry_id == self.registry_id,
                models.Image.state == models.ACTIVE,
                models.Image.id > after).order_by(models.Image.id).limit(
                size)
            with self.db.session() as session:
                rows = list(session.execute(query))
            if not rows:
                return
            after = rows[-1][0]
            yield {row[1]: row[2] for row in rows}

    def count(self, state: str) -> int:
        query = sa.select(sa.func.count()).select_from(models.Image).where(
            models.Image.registry_id == self.registry_id,
            models.Image.state == state)
        with self.db.session() as session:
            return int(session.scalar(query) or 0)

    @retry.transaction
    def settle_pending(self, image_id: str, exists: bool,
                       project_id: str | None,
                       image_created_at: datetime.datetime | None) -> None:
        """Finish a create a crash interrupted: activate or discard."""
        with self.db.session(write=True) as session:
            image = self._get(session, image_id, lock=True)
            if image is None or image.state != models.PENDING:
                return
            if exists:
                image.state = models.ACTIVE
                image.project_id = project_id or image.project_id
                image.image_created_at = image_created_at
            else:
                session.delete(image)


@dataclasses.dataclass(frozen=True)
class Related:
    """One entry of the query API."""

    image_id: str
    registry_id: str
    project_id: str | None
    state: str
    properties: dict[str, str]
    relation: RelationFields
    created_at: datetime.datetime
    deleted_at: datetime.datetime | None

    @classmethod
    def of(cls, image: models.Image, registry_id: str) -> Related:
        stored = _stored(image, models.INSTANCE)
        assert stored.relation is not None
        return cls(image_id=image.image_id, registry_id=registry_id,
                   project_id=image.project_id, state=image.state,
                   properties=stored.values, relation=stored.relation,
                   created_at=image.image_created_at or image.created_at,
                   deleted_at=image.deleted_at)
