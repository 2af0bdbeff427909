"""Image data digests: what the stack saw going in, checked going out.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

TABLE_ARGS = {'mysql_engine': 'InnoDB', 'mysql_charset': 'utf8mb4'}
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql')
BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'ia_image_data',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('registry_id', sa.String(64), nullable=False),
        sa.Column('image_id', sa.String(36), nullable=False),
        sa.Column('source', sa.String(16), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('algo', sa.String(64), nullable=False),
        sa.Column('digest', sa.String(128), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('recorded_at', Timestamp, nullable=False),
        sa.Column('verified_at', Timestamp, nullable=True),
        sa.Column('tampered_at', Timestamp, nullable=True),
        sa.UniqueConstraint('registry_id', 'image_id',
                            name='uq_ia_image_data_registry_image'),
        **TABLE_ARGS)
    op.create_index('ix_ia_image_data_state', 'ia_image_data',
                    ['registry_id', 'state'])
