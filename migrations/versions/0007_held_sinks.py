"""held, not dead: paused sinks, why a delivery is held, probes of a sink that is down (issue 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Deliveries held before this migration were all held by the flood guard. Deliveries that
an earlier version made dead because their sink was disabled (``last_error`` "sink
disabled...") are held instead while that sink is still disabled: enabling it sends them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sink_state") as batch_op:
        batch_op.add_column(
            sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("paused_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.add_column(
            sa.Column("probes", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(sa.Column("held_by", sa.String(length=12), nullable=True))
    op.execute("UPDATE deliveries SET held_by = 'flood_guard' WHERE status = 'held'")
    op.execute(
        "UPDATE deliveries SET status = 'held', held_by = 'sink', next_attempt_at = NULL "
        "WHERE status = 'dead' AND last_error LIKE 'sink disabled%' "
        "AND sink IN (SELECT name FROM sink_state WHERE disabled)"
    )


def downgrade() -> None:
    # what the older version did with them: deliveries held for their sink are dead
    op.execute(
        "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL "
        "WHERE status = 'held' AND held_by = 'sink'"
    )
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_column("held_by")
        batch_op.drop_column("probes")
    with op.batch_alter_table("sink_state") as batch_op:
        batch_op.drop_column("paused_at")
        batch_op.drop_column("paused_reason")
        batch_op.drop_column("paused")
