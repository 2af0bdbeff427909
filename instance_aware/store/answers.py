"""What reads of the store answer: plain frozen values.

No ORM object leaves the store: the filters, the query API and the
operator tools get these, built from rows or from a loaded
:class:`~instance_aware.store.models.Image`.
"""

from __future__ import annotations

import dataclasses
import datetime

from instance_aware.store import models


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


def snapshot(image: models.Image) -> Snapshot:
    """The record of a loaded image row."""
    values: dict[str, dict[str, str]] = {}
    for prop in image.properties:
        values.setdefault(prop.concern, {})[prop.name] = prop.value
    return Snapshot(
        image_id=image.image_id, project_id=image.project_id,
        state=image.state, values=values, relation=_relation_fields(image),
        image_created_at=image.image_created_at,
        deleted_at=image.deleted_at)


def stored(image: models.Image, concern: str) -> Stored:
    """One concern's record of a loaded image row."""
    return snapshot(image).of(concern)


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
        found = stored(image, models.INSTANCE)
        assert found.relation is not None
        return cls(image_id=image.image_id, registry_id=registry_id,
                   project_id=image.project_id, state=image.state,
                   properties=found.values, relation=found.relation,
                   created_at=image.image_created_at or image.created_at,
                   deleted_at=image.deleted_at)
