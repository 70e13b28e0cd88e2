"""operational events: a trigger's run of failures is reported once (issue 14)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("poll_state") as batch_op:
        batch_op.add_column(
            sa.Column("failing_notified", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("poll_state") as batch_op:
        batch_op.drop_column("failing_notified")
