"""Initial schema: images, properties, relations, encryption keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

TABLE_ARGS = {'mysql_engine': 'InnoDB', 'mysql_charset': 'utf8mb4'}
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql')
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'ia_images',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('registry_id', sa.String(64), nullable=False),
        sa.Column('image_id', sa.String(36), nullable=False),
        sa.Column('project_id', sa.String(255), nullable=True),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('image_created_at', Timestamp, nullable=True),
        sa.Column('created_at', Timestamp, nullable=False),
        sa.Column('updated_at', Timestamp, nullable=False),
        sa.Column('deleted_at', Timestamp, nullable=True),
        sa.UniqueConstraint('registry_id', 'image_id',
                            name='uq_ia_images_registry_image'),
        **TABLE_ARGS)
    op.create_index('ix_ia_images_project', 'ia_images',
                    ['registry_id', 'project_id', 'state'])
    op.create_index('ix_ia_images_state_updated', 'ia_images',
                    ['state', 'updated_at'])

    op.create_table(
        'ia_properties',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('image_ref', BigId,
                  sa.ForeignKey('ia_images.id', ondelete='CASCADE',
                                name='fk_ia_properties_image'),
                  nullable=False),
        sa.Column('concern', sa.String(16), nullable=False),
        sa.Column('name', sa.String(255), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('value_index', sa.String(255), nullable=False),
        sa.UniqueConstraint('image_ref', 'name',
                            name='uq_ia_properties_image_name'),
        **TABLE_ARGS)
    op.create_index('ix_ia_properties_name_value', 'ia_properties',
                    ['name', 'value_index', 'image_ref'])

    op.create_table(
        'ia_relations',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('image_ref', BigId,
                  sa.ForeignKey('ia_images.id', ondelete='CASCADE',
                                name='fk_ia_relations_image'),
                  nullable=False),
        sa.Column('installation_uuid', sa.String(36), nullable=True),
        sa.Column('instance_uuid', sa.String(36), nullable=True),
        sa.Column('image_type', sa.String(255), nullable=True),
        sa.Column('backup_type', sa.String(255), nullable=True),
        sa.Column('trusted', sa.Boolean(), nullable=False),
        sa.Column('asserted_by', sa.String(255), nullable=True),
        sa.UniqueConstraint('image_ref', name='uq_ia_relations_image'),
        **TABLE_ARGS)
    op.create_index('ix_ia_relations_instance', 'ia_relations',
                    ['instance_uuid', 'installation_uuid', 'image_type',
                     'backup_type'])

    op.create_table(
        'ia_encryption_keys',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('image_ref', BigId,
                  sa.ForeignKey('ia_images.id', ondelete='CASCADE',
                                name='fk_ia_encryption_keys_image'),
                  nullable=False),
        sa.Column('key_id', sa.String(36), nullable=False),
        sa.Column('deletion_policy', sa.String(32), nullable=True),
        sa.Column('lifecycle_state', sa.String(32), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('updated_at', Timestamp, nullable=False),
        sa.UniqueConstraint('image_ref', name='uq_ia_encryption_keys_image'),
        **TABLE_ARGS)
    op.create_index('ix_ia_encryption_keys_key', 'ia_encryption_keys',
                    ['key_id'])
    op.create_index('ix_ia_encryption_keys_state', 'ia_encryption_keys',
                    ['lifecycle_state'])
