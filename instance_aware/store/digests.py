"""Digests of image data in ``ia_image_data``, one short transaction each.

:class:`Digests` is what :mod:`instance_aware.filters.data_integrity`
reads and writes: the digest recorded after the registry accepted an
upload (or a stage), and the outcome of every full download checked
against it.  Updates that follow a download name the digest they checked,
so a download that finishes after the image got new data never marks the
new record.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from instance_aware.store import errors, models, retry
from instance_aware.store.engine import Database


@dataclasses.dataclass(frozen=True)
class Digest:
    """What the store holds for the data of one image."""

    image_id: str
    source: str
    state: str
    algo: str
    digest: str
    size: int
    recorded_at: datetime.datetime
    verified_at: datetime.datetime | None
    tampered_at: datetime.datetime | None
    #: BLAKE3 hex digest of the same bytes, when known.
    fingerprint: str | None = None


def _digest(row: models.ImageData) -> Digest:
    return Digest(image_id=row.image_id, source=row.source, state=row.state,
                  algo=row.algo, digest=row.digest, size=row.size,
                  recorded_at=row.recorded_at, verified_at=row.verified_at,
                  tampered_at=row.tampered_at, fingerprint=row.fingerprint)


class Digests:
    """Data digests of one registry's images."""

    def __init__(self, db: Database, registry_id: str) -> None:
        self.db = db
        self.registry_id = registry_id

    def _where(self, image_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(models.ImageData.registry_id == self.registry_id,
                       models.ImageData.image_id == image_id)

    def get(self, image_id: str) -> Digest | None:
        """The digest recorded for ``image_id``, if any."""
        with self.db.session() as session:
            row = session.scalars(sa.select(models.ImageData).where(
                self._where(image_id))).one_or_none()
            return None if row is None else _digest(row)

    def listing(self, *, unverified: bool = False, tampered: bool = False,
                image_ids: Sequence[str] = ()) -> list[Digest]:
        """Records, oldest first: only those never verified by a full
        download since recorded (``unverified``), only ``tampered`` ones,
        only those of ``image_ids``; the filters combine."""
        query = sa.select(models.ImageData).where(
            models.ImageData.registry_id == self.registry_id)
        if unverified:
            query = query.where(models.ImageData.verified_at.is_(None))
        if tampered:
            query = query.where(models.ImageData.state == models.TAMPERED)
        if image_ids:
            query = query.where(models.ImageData.image_id.in_(image_ids))
        query = query.order_by(models.ImageData.recorded_at,
                               models.ImageData.image_id)
        with self.db.session() as session:
            return [_digest(row) for row in session.scalars(query)]

    def record(self, image_id: str, *, algo: str, digest: str, size: int,
               source: str, state: str = models.RECORDED,
               fingerprint: str | None = None) -> Digest:
        """Record (or replace) the digest of the data ``image_id`` has now.

        New data forgets the outcome of earlier checks.  Two processes
        recording the same image at once: the later one wins.
        """
        args = (image_id, algo, digest, size, source, state, fingerprint)
        try:
            return self._record(*args)
        except errors.Conflict:
            return self._record(*args)

    @retry.transaction
    def _record(self, image_id: str, algo: str, digest: str, size: int,
                source: str, state: str,
                fingerprint: str | None) -> Digest:
        with self.db.session(write=True) as session:
            row = session.scalars(sa.select(models.ImageData).where(
                self._where(image_id)).with_for_update()).one_or_none()
            if row is None:
                row = models.ImageData(registry_id=self.registry_id,
                                       image_id=image_id)
                session.add(row)
            row.algo, row.digest, row.size = algo, digest, size
            row.fingerprint = fingerprint
            row.source, row.state = source, state
            row.recorded_at = models.utcnow()
            row.verified_at = row.tampered_at = None
            session.flush()
            return _digest(row)

    @retry.transaction
    def _expect_import(self, image_id: str) -> bool:
        with self.db.session(write=True) as session:
            row = session.scalars(sa.select(models.ImageData).where(
                self._where(image_id)).with_for_update()).one_or_none()
            if row is not None:
                return False
            session.add(models.ImageData(
                registry_id=self.registry_id, image_id=image_id,
                source=models.IMPORT, state=models.PENDING, algo='',
                digest='', size=0, recorded_at=models.utcnow()))
            return True

    def expect_import(self, image_id: str) -> bool:
        """An import the stack cannot see the bytes of was accepted:
        ``pending`` until the registry's digest is adopted.

        A record the image already has (a staged digest for glance-direct,
        the digest of the data copy-image copies) is kept; ``False`` then.
        """
        try:
            return self._expect_import(image_id)
        except errors.Conflict:  # another process recorded it first
            return False

    def _update(self, image_id: str, digest: str, session: orm.Session,
                **values: object) -> bool:
        result = session.execute(
            sa.update(models.ImageData)
            .where(self._where(image_id), models.ImageData.digest == digest)
            .values(**values))
        return bool(getattr(result, 'rowcount', 0))

    @retry.transaction
    def confirm(self, image_id: str, digest: str) -> bool:
        """A staged digest matches what the import stored: ``recorded``."""
        with self.db.session(write=True) as session:
            return self._update(image_id, digest, session,
                                state=models.RECORDED)

    @retry.transaction
    def mark_verified(self, image_id: str, digest: str,
                      fingerprint: str | None = None) -> bool:
        """A full download matched ``digest``: stamp ``verified_at``.

        A record marked tampered whose data matches again (the operator
        restored the file) is ``recorded`` again; ``tampered_at`` stays as
        history.  ``fingerprint``, computed over the same verified bytes,
        is kept for later downloads.
        """
        values: dict[str, object] = {'state': models.RECORDED,
                                     'verified_at': models.utcnow()}
        if fingerprint is not None:
            values['fingerprint'] = fingerprint
        with self.db.session(write=True) as session:
            return self._update(image_id, digest, session, **values)

    @retry.transaction
    def mark_tampered(self, image_id: str, digest: str) -> bool:
        """A full download did not match ``digest``: ``tampered``."""
        with self.db.session(write=True) as session:
            return self._update(image_id, digest, session,
                                state=models.TAMPERED,
                                tampered_at=models.utcnow())
