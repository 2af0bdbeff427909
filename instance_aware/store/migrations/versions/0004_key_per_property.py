"""One key lifecycle per key property: an image may name two secrets.

An image may carry both ``os_encrypt_key_id`` and the legacy
``cinder_encryption_key_id``, each with its own deletion policy; each
secret gets its own consumer and its own deletion.  Rows made before this
revision tracked the first pair present: the standard one, unless the
image had only the legacy one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

STANDARD = 'os_encrypt_key_id'
LEGACY = 'cinder_encryption_key_id'


def upgrade() -> None:
    with op.batch_alter_table('ia_encryption_keys') as batch:
        batch.add_column(sa.Column('key_property', sa.String(64),
                                   nullable=False,
                                   server_default=STANDARD))
    keys = sa.table('ia_encryption_keys',
                    sa.column('image_ref', sa.BigInteger()),
                    sa.column('key_property', sa.String(64)))
    properties = sa.table('ia_properties',
                          sa.column('image_ref', sa.BigInteger()),
                          sa.column('name', sa.String(255)))
    standard = sa.select(sa.literal(1)).where(
        properties.c.image_ref == keys.c.image_ref,
        properties.c.name == STANDARD)
    op.execute(keys.update().where(~standard.exists())
               .values(key_property=LEGACY))
    # The new constraint first: MySQL needs an index on the foreign key
    # column at every moment, and the old constraint is that index.
    with op.batch_alter_table('ia_encryption_keys') as batch:
        batch.create_unique_constraint(
            'uq_ia_encryption_keys_image_property',
            ['image_ref', 'key_property'])
    with op.batch_alter_table('ia_encryption_keys') as batch:
        batch.drop_constraint('uq_ia_encryption_keys_image', type_='unique')
