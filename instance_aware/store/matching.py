"""The statements of filtered lists (:class:`~.search.Search`).

Two ways to find the active images whose stored values equal every
filter, each statement built once per shape (names and values are bound
parameters, so a rotation listing reuses one statement and SQLAlchemy's
compiled form of it):

* Nova's questions (the instance, its installation, image and backup
  types) through the relation index (:func:`relation_statement`,
  :func:`relation_values_statement`);
* any other filters through ``ix_ia_properties_name_value``, the most
  selective filter driving (:func:`matching_statement`).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from instance_aware import uuids
from instance_aware.store import models
from instance_aware.store.relations import (
    RELATION_COLUMNS,
    UUID_KEYS,
    SelectT,
    related_refs,
    scoped,
)

#: Keys whose values identify few images, most selective first; any other
#: key ranks after these, and the keys with a handful of distinct values
#: (``image_type``, ``backup_type``, ...) last.
SELECTIVITY = ('instance_uuid', 'nova_installation_uuid', 'base_image_ref',
               'user_id', 'owner_id', 'owner_user_name')
_LEAST_SELECTIVE = ('image_state', 'backup_type', 'image_type')


def rank(name: str) -> tuple[int, int]:
    """Sort key of a filter name: most selective first."""
    if name in SELECTIVITY:
        return (0, SELECTIVITY.index(name))
    if name in _LEAST_SELECTIVE:
        return (2, _LEAST_SELECTIVE.index(name))
    return (1, 0)


def by_relation(filters: Mapping[str, str]) -> bool:
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


def _scoped_and_ordered(query: SelectT, is_scoped: bool,
                        descending: bool) -> SelectT:
    """``query`` limited to the bound ``projects`` (if ``is_scoped``) and
    in the registry's default order (``created_at``, then ``id``)."""
    query = scoped(query, is_scoped)
    order = sa.desc if descending else sa.asc
    return query.order_by(order(models.Image.image_created_at),
                          order(models.Image.image_id))


@functools.lru_cache(maxsize=64)
def relation_statement(names: tuple[str, ...], is_scoped: bool,
                       descending: bool) -> sa.Select[*tuple[Any, ...]]:
    """The relation-driven statement of :meth:`Search.matching`.

    Selects, after id and creation time, the stored value of each UUID key
    among ``names`` (in ``names`` order) for the exact comparison.
    """
    uuid_names = [name for name in names if name in UUID_KEYS]
    spellings = [orm.aliased(models.Property) for _name in uuid_names]
    related = related_refs(names)
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
    return _scoped_and_ordered(query, is_scoped, descending)


@functools.lru_cache(maxsize=64)
def relation_values_statement(names: tuple[str, ...], is_scoped: bool,
                              descending: bool
                              ) -> sa.Select[*tuple[Any, ...]]:
    """The relation-driven statement when the values are wanted too.

    One row per stored value of each candidate: id, creation time,
    concern, name, value, in the registry's order, so the rows of one
    image come together.  The exact spellings of the UUID keys are among
    the values, so no property is joined twice, and the answer and the
    keys it gives back come in one round trip.
    """
    related = related_refs(names)
    query = sa.select(
        models.Image.image_id, models.Image.image_created_at,
        models.Property.concern, models.Property.name,
        models.Property.value).join(
        models.Property, models.Property.image_ref == models.Image.id).where(
        models.Image.id.in_(related),
        models.Image.registry_id == sa.bindparam('registry_id'),
        models.Image.state == models.ACTIVE)
    return _scoped_and_ordered(query, is_scoped, descending)


def _value_equals(prop: Any, index: int, long: bool) -> list[Any]:
    """Conditions for filter ``index`` that use the value index."""
    conditions = [prop.name == sa.bindparam(f'name_{index}'),
                  prop.value_index == sa.bindparam(f'value_index_{index}')]
    if long:  # beyond the indexed prefix: compare the whole value too
        conditions.append(prop.value == sa.bindparam(f'value_{index}'))
    return conditions


@functools.lru_cache(maxsize=128)
def matching_statement(shape: tuple[bool, ...], is_scoped: bool,
                       descending: bool
                       ) -> sa.Select[str, datetime.datetime | None]:
    """The general statement of :meth:`Search.matching` for one shape.

    ``shape`` says, filter by filter (most selective first), whether the
    value is longer than the indexed prefix.
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
    return _scoped_and_ordered(query, is_scoped, descending)
