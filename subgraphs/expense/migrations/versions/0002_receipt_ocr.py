"""receipt OCR status and suggestions

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('receipts', sa.Column('ocr_status', sa.String(length=20), nullable=True), schema='expense')
    op.add_column('receipts', sa.Column('ocr_suggestions', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
                  schema='expense')


def downgrade() -> None:
    op.drop_column('receipts', 'ocr_suggestions', schema='expense')
    op.drop_column('receipts', 'ocr_status', schema='expense')
