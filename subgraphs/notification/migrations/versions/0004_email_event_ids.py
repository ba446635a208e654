"""email_messages.event_ids: every event a message tells about

Revision ID: 0004
Revises: 0003

A digest (several invoice status mails of one consumer batch to one recipient) covers several
events; `event_id` stays the first of them. Existing rows cover their own event.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('email_messages', sa.Column('event_ids', postgresql.ARRAY(postgresql.UUID(as_uuid=True)),
                                              server_default=sa.text("'{}'::uuid[]"), nullable=False),
                  schema='notification')
    op.execute("UPDATE notification.email_messages SET event_ids = ARRAY[event_id]")


def downgrade() -> None:
    op.drop_column('email_messages', 'event_ids', schema='notification')
