"""outbox traceparent: the W3C trace context of the request that wrote an event

Revision ID: 0003
Revises: 0002

Nullable and written only while tracing is on (OTEL_EXPORTER_OTLP_ENDPOINT, shared/telemetry.py):
the relay gives it to the job the event queues, so the worker's spans join the request's trace.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('outbox', sa.Column('traceparent', sa.Text(), nullable=True), schema='auth')


def downgrade() -> None:
    op.drop_column('outbox', 'traceparent', schema='auth')
