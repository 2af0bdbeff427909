"""Tables of the mapping store.

``ia_images``
    One row per image the stack has captured keys for, per registry (Glance
    deployment).  ``state`` is ``pending`` while the registry has not yet
    accepted the request, ``active`` after, ``deleted`` once the image is
    gone (the row is kept as history).
``ia_properties``
    Every captured key and value (instance and encryption keys), indexed by
    ``(name, value_index)`` so list filters on stripped keys need no scan.
    ``value_index`` is the first 255 characters of ``value``.
``ia_relations``
    The instance relation of an image: which Nova installation and instance
    it came from, its ``image_type`` / ``backup_type``, and whether a trusted
    service asserted it.  Indexed for "images of instance X, newest first".
``ia_encryption_keys``
    The key lifecycle of each secret an encrypted image names (one row per
    key property): the secret, its deletion policy and where the
    consumer/deletion steps stand, for retries by reconcile.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import mysql

INDEXED_VALUE_LENGTH = 255

#: Microsecond timestamps everywhere (MySQL's DATETIME defaults to seconds,
#: which would make "newest first" ambiguous).
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql')
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

TABLE_ARGS = {'mysql_engine': 'InnoDB', 'mysql_charset': 'utf8mb4'}

# States of ia_images rows.
PENDING = 'pending'
ACTIVE = 'active'
DELETED = 'deleted'

# Concerns of ia_properties rows.
INSTANCE = 'instance'
ENCRYPTION = 'encryption'

# States of ia_encryption_keys rows (``lifecycle_state``).
KEY_NONE = 'none'
CONSUMER_REGISTERED = 'consumer_registered'
CONSUMER_REMOVED = 'consumer_removed'
KEY_DELETED = 'key_deleted'
KEY_FAILED = 'failed'


def utcnow() -> datetime.datetime:
    """Naive UTC, as Glance stores its own timestamps."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class Base(orm.DeclarativeBase):
    pass


class Image(Base):
    __tablename__ = 'ia_images'
    __table_args__ = (
        sa.UniqueConstraint('registry_id', 'image_id',
                            name='uq_ia_images_registry_image'),
        sa.Index('ix_ia_images_project', 'registry_id', 'project_id',
                 'state'),
        sa.Index('ix_ia_images_state_updated', 'state', 'updated_at'),
        TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(BigId, primary_key=True,
                                            autoincrement=True)
    registry_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    image_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    project_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16),
                                               default=PENDING)
    #: The registry's own ``created_at`` of the image, once seen.
    image_created_at: orm.Mapped[datetime.datetime | None] = (
        orm.mapped_column(Timestamp))
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        Timestamp, default=utcnow)
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        Timestamp, default=utcnow, onupdate=utcnow)
    deleted_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        Timestamp)

    properties: orm.Mapped[list[Property]] = orm.relationship(
        back_populates='image', cascade='all, delete-orphan',
        lazy='selectin')
    relation: orm.Mapped[Relation | None] = orm.relationship(
        back_populates='image', cascade='all, delete-orphan',
        uselist=False, lazy='selectin')
    encryption_keys: orm.Mapped[list[EncryptionKey]] = orm.relationship(
        back_populates='image', cascade='all, delete-orphan',
        lazy='selectin')

    def holds_nothing(self) -> bool:
        """Whether no captured value, relation or key hangs on the row
        (an aborted create may then drop it)."""
        return (not self.properties and self.relation is None
                and not self.encryption_keys)


class Property(Base):
    __tablename__ = 'ia_properties'
    __table_args__ = (
        sa.UniqueConstraint('image_ref', 'name',
                            name='uq_ia_properties_image_name'),
        sa.Index('ix_ia_properties_name_value', 'name', 'value_index',
                 'image_ref'),
        TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(BigId, primary_key=True,
                                            autoincrement=True)
    image_ref: orm.Mapped[int] = orm.mapped_column(
        BigId, sa.ForeignKey('ia_images.id', ondelete='CASCADE',
                             name='fk_ia_properties_image'))
    concern: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    value: orm.Mapped[str] = orm.mapped_column(sa.Text())
    value_index: orm.Mapped[str] = orm.mapped_column(
        sa.String(INDEXED_VALUE_LENGTH))

    image: orm.Mapped[Image] = orm.relationship(back_populates='properties')


class Relation(Base):
    __tablename__ = 'ia_relations'
    __table_args__ = (
        sa.UniqueConstraint('image_ref', name='uq_ia_relations_image'),
        sa.Index('ix_ia_relations_instance', 'instance_uuid',
                 'installation_uuid', 'image_type', 'backup_type'),
        TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(BigId, primary_key=True,
                                            autoincrement=True)
    image_ref: orm.Mapped[int] = orm.mapped_column(
        BigId, sa.ForeignKey('ia_images.id', ondelete='CASCADE',
                             name='fk_ia_relations_image'))
    installation_uuid: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(36))
    instance_uuid: orm.Mapped[str | None] = orm.mapped_column(sa.String(36))
    image_type: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    backup_type: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    trusted: orm.Mapped[bool] = orm.mapped_column(sa.Boolean(),
                                                  default=False)
    asserted_by: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))

    image: orm.Mapped[Image] = orm.relationship(back_populates='relation')


class EncryptionKey(Base):
    __tablename__ = 'ia_encryption_keys'
    __table_args__ = (
        sa.UniqueConstraint('image_ref', 'key_property',
                            name='uq_ia_encryption_keys_image_property'),
        sa.Index('ix_ia_encryption_keys_key', 'key_id'),
        sa.Index('ix_ia_encryption_keys_state', 'lifecycle_state'),
        TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(BigId, primary_key=True,
                                            autoincrement=True)
    image_ref: orm.Mapped[int] = orm.mapped_column(
        BigId, sa.ForeignKey('ia_images.id', ondelete='CASCADE',
                             name='fk_ia_encryption_keys_image'))
    #: The property naming the secret: ``os_encrypt_key_id`` or the
    #: legacy ``cinder_encryption_key_id`` (each has its own lifecycle).
    key_property: orm.Mapped[str] = orm.mapped_column(
        sa.String(64), server_default='os_encrypt_key_id')
    key_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    deletion_policy: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(32))
    #: ``none``, ``consumer_registered``, ``consumer_removed``,
    #: ``key_deleted``, or ``failed`` (see ``last_error``).
    lifecycle_state: orm.Mapped[str] = orm.mapped_column(sa.String(32),
                                                         default='none')
    attempts: orm.Mapped[int] = orm.mapped_column(sa.Integer(), default=0)
    last_error: orm.Mapped[str | None] = orm.mapped_column(sa.Text())
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        Timestamp, default=utcnow, onupdate=utcnow)

    image: orm.Mapped[Image] = orm.relationship(
        back_populates='encryption_keys')


# Sources and states of ia_image_data rows.
UPLOAD = 'upload'
STAGE = 'stage'
IMPORT = 'import'
STAGED = 'staged'
RECORDED = 'recorded'
TAMPERED = 'tampered'
#: An import the stack saw accepted but whose bytes it did not see
#: (web-download, glance-download): no digest yet.
PENDING = 'pending'


class ImageData(Base):
    """``ia_image_data``: the digest of an image's data, as the stack saw it.

    ``source`` says where the digest comes from: ``upload`` (computed over
    ``PUT /file``), ``stage`` (computed over ``PUT /stage``) or ``import``
    (the registry's own digest, adopted when an import plugin rewrote
    staged data, or for an import whose bytes the stack did not see).
    ``state`` is ``pending`` for such an import until the registry's digest
    is adopted, ``staged`` until a staged digest has been compared with
    what the import stored, then ``recorded``, or ``tampered`` after a
    download that did not match or a staged file changed before its
    import (``tampered_at``).  ``verified_at`` is the
    last full download that matched.  ``fingerprint`` is the BLAKE3 digest
    of the same bytes, which downloads are checked against once known: it
    costs a sixth of sha512's time, so a verified download keeps up with
    the registry.
    """

    __tablename__ = 'ia_image_data'
    __table_args__ = (
        sa.UniqueConstraint('registry_id', 'image_id',
                            name='uq_ia_image_data_registry_image'),
        sa.Index('ix_ia_image_data_state', 'registry_id', 'state'),
        TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(BigId, primary_key=True,
                                            autoincrement=True)
    registry_id: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    image_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    source: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    #: A :mod:`hashlib` name, as Glance's ``os_hash_algo``.
    algo: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    #: Hex digest, as Glance's ``os_hash_value``.
    digest: orm.Mapped[str] = orm.mapped_column(sa.String(128))
    size: orm.Mapped[int] = orm.mapped_column(sa.BigInteger())
    #: BLAKE3 hex digest of the same bytes (``None`` until known).
    fingerprint: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    recorded_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        Timestamp, default=utcnow)
    verified_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        Timestamp)
    tampered_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        Timestamp)
