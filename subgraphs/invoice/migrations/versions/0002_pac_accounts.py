"""pac accounts: an organization's PAC credentials (sealed), in order of preference

Revision ID: 0002_pac_accounts
Revises: 0001
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0002_pac_accounts'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'pac_accounts',
        sa.Column('id', sa.UUID(), nullable=False),
        sa.Column('organization_id', sa.UUID(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('provider', sa.String(length=20), nullable=False),
        sa.Column('username_hint', sa.String(length=40), nullable=False),
        sa.Column('account_sealed', sa.Text(), nullable=False),
        sa.Column('kek_id', sa.String(length=40), nullable=False),
        sa.Column('created_by', sa.UUID(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pac_accounts')),
        sa.UniqueConstraint('organization_id', 'provider', name='uq_pac_accounts_org_provider'),
        sa.UniqueConstraint('organization_id', 'position', name='uq_pac_accounts_org_position'),
        schema='invoice',
    )
    op.create_index(op.f('ix_invoice_pac_accounts_organization_id'), 'pac_accounts', ['organization_id'],
                    unique=False, schema='invoice')


def downgrade() -> None:
    op.drop_index(op.f('ix_invoice_pac_accounts_organization_id'), table_name='pac_accounts', schema='invoice')
    op.drop_table('pac_accounts', schema='invoice')
