"""membership authz version, invitation revocation, pending sign-ups

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:00:00

A membership's `authz_version` is stamped into every access token (`ver` claim) and bumped when
the member's role changes or the membership is removed, so subgraphs can refuse older tokens at
once (shared/authz.py). `revoked_at` lets an administrator withdraw a pending invitation.
`sign_ups` holds sign-ups until their e-mail is confirmed (the account is created then).
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
    op.create_table('sign_ups',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('organization_name', sa.String(length=200), nullable=False),
    sa.Column('locale', sa.String(length=10), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sign_ups')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_sign_ups_token_hash')),
    schema='auth'
    )
    op.create_index(op.f('ix_auth_sign_ups_email'), 'sign_ups', ['email'], unique=False, schema='auth')


def downgrade() -> None:
    op.drop_index(op.f('ix_auth_sign_ups_email'), table_name='sign_ups', schema='auth')
    op.drop_table('sign_ups', schema='auth')
    op.drop_column('invitations', 'revoked_at', schema='auth')
    op.drop_column('memberships', 'authz_version', schema='auth')
