"""BLAKE3 fingerprints of image data, cheap enough to check every download.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: records made before this revision learn their fingerprint
    # at their next verified download.
    op.add_column('ia_image_data',
                  sa.Column('fingerprint', sa.String(64), nullable=True))
