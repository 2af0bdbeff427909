"""Filtered lists: the active images whose stored values equal filters.

A list filtered on captured keys cannot be answered by the registry (it
no longer holds them); :meth:`Search.matching` answers it from the store
with the statements of :mod:`instance_aware.store.matching`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Mapping
from typing import Any

import sqlalchemy as sa

from instance_aware.store import models
from instance_aware.store.matching import (
    by_relation,
    matching_statement,
    rank,
    relation_statement,
    relation_values_statement,
)
from instance_aware.store.reads import Reads
from instance_aware.store.relations import UUID_KEYS

#: Most matches whose values :meth:`Search.matching` reads along.
PREFETCH = 200

#: Values of images read along: image id -> concern -> values.
Values = dict[str, dict[str, dict[str, str]]]
#: A match: image id and the registry's creation time.
Match = tuple[str, datetime.datetime | None]


class Search(Reads):
    """Active images of one registry by their captured values."""

    def matching(self, filters: Mapping[str, str],
                 projects: Collection[str] | None,
                 descending: bool = True,
                 values: Values | None = None) -> list[Match]:
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
        filters.  The relation keeps UUIDs in canonical form, so the
        stored spelling of each UUID key is fetched too and compared
        exactly, as Glance compares strings.  Other filters: the most
        selective one (by :data:`~.matching.SELECTIVITY`) drives the
        query through ``ix_ia_properties_name_value``, the others are
        checked per candidate.  Left to itself, a planner without value
        statistics (SQLite) may start from ``image_type=backup``, which
        matches most of a cloud's images.
        """
        if by_relation(filters):
            return self._matching_relations(filters, projects, descending,
                                            values)
        ordered = sorted(filters.items(), key=lambda item: rank(item[0]))
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
        statement = matching_statement(shape, projects is not None,
                                       descending)
        with self.db.reader() as connection:
            found = [(row[0], row[1])
                     for row in connection.execute(statement, params)]
        self._prefetch(found, values)
        return found

    def _prefetch(self, found: list[Match], values: Values | None) -> None:
        if values is not None and 0 < len(found) <= PREFETCH:
            values.update(self.values_of(
                [image_id for image_id, _ in found]))

    def _matching_relations(self, filters: Mapping[str, str],
                            projects: Collection[str] | None,
                            descending: bool, values: Values | None
                            ) -> list[Match]:
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
                relation_values_statement(names, projects is not None,
                                          descending),
                params, uuid_names, exact, values)
        statement = relation_statement(names, projects is not None,
                                       descending)
        with self.db.reader() as connection:
            return [(row[0], row[1])
                    for row in connection.execute(statement, params)
                    if exact(list(row[2:]))]

    def _matching_relations_with_values(
            self, statement: sa.Select[*tuple[Any, ...]],
            params: dict[str, Any], uuid_names: list[str],
            exact: Callable[[list[str | None]], bool],
            values: Values) -> list[Match]:
        """Matches and their values from one statement; ``values``
        receives them when there are at most :data:`PREFETCH`."""
        candidates: list[Match] = []
        fetched: Values = {}
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
