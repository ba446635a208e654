"""supplier CFDI status at SAT

Revision ID: 0003
Revises: 0002
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('expenses', sa.Column('cfdi_sat_status', sa.String(length=20), nullable=True), schema='expense')
    op.add_column('expenses', sa.Column('cfdi_sat_checked_at', sa.DateTime(timezone=True), nullable=True),
                  schema='expense')


def downgrade() -> None:
    op.drop_column('expenses', 'cfdi_sat_checked_at', schema='expense')
    op.drop_column('expenses', 'cfdi_sat_status', schema='expense')
