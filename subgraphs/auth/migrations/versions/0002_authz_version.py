"""membership authz version, invitation revocation

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:00:00

A membership's `authz_version` is stamped into every access token (`ver` claim) and bumped when
the member's role changes or the membership is removed, so subgraphs can refuse older tokens at
once (shared/authz.py). `revoked_at` lets an administrator withdraw a pending invitation.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('memberships', sa.Column('authz_version', sa.Integer(), server_default=sa.text('1'), nullable=False), schema='auth')
    op.add_column('invitations', sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True), schema='auth')


def downgrade() -> None:
    op.drop_column('invitations', 'revoked_at', schema='auth')
    op.drop_column('memberships', 'authz_version', schema='auth')
