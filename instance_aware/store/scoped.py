"""The rows of one deployment (``registry_id``): what every store class
starts from.

One mapping database may serve several registries (Glance deployments);
each store object reads and writes the ``ia_images`` rows of one, found
by the unique (registry, image id) index.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from instance_aware.store import models
from instance_aware.store.engine import Database


class ScopedRows:
    """Base of the store classes: the database and the registry id."""

    def __init__(self, db: Database, registry_id: str) -> None:
        self.db = db
        self.registry_id = registry_id

    def _select(self, image_ids: Collection[str]) -> sa.Select[Any]:
        """The image rows of ``image_ids`` (ORM)."""
        return sa.select(models.Image).where(
            models.Image.registry_id == self.registry_id,
            models.Image.image_id.in_(list(image_ids)))

    def _get(self, session: orm.Session, image_id: str,
             lock: bool = False) -> models.Image | None:
        """One image row, locked for the transaction if ``lock``."""
        query = self._select([image_id])
        if lock:
            query = query.with_for_update()
        image: models.Image | None = session.scalars(query).one_or_none()
        return image

    def _one(self, image_id: str) -> tuple[sa.ColumnElement[bool], ...]:
        """Where-clauses of this registry's row of ``image_id``."""
        return (models.Image.registry_id == self.registry_id,
                models.Image.image_id == image_id)
