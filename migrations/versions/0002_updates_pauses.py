"""updated-item versions, automatic pauses

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("poll_state") as batch_op:
        batch_op.add_column(
            sa.Column("paused_auto", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("seen_keys") as batch_op:
        batch_op.add_column(sa.Column("version", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("seen_keys") as batch_op:
        batch_op.drop_column("version")
    with op.batch_alter_table("poll_state") as batch_op:
        batch_op.drop_column("failing_since")
        batch_op.drop_column("paused_auto")
