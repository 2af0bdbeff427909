"""Whole-registry passes of ``instance-aware-manage reconcile``.

Reconcile walks the store against the registry: rows a crash left
pending, and every active row in batches, each batch one short read.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import sqlalchemy as sa

from instance_aware.store import models, retry
from instance_aware.store.scoped import ScopedRows


class Sweeps(ScopedRows):
    """Pending and active rows of one registry, for reconcile."""

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
        """How many rows are in ``state``."""
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
